//! Instruction counts of the embedded plan on qemu (`measure.sh` runs it with
//! `shared/tools/insncount`): each op of one inference runs between `perch_bench_begin` and
//! `perch_bench_end`, then the whole `run()` does. For each window, in order, one line on
//! semihosting stderr: `window: <what> macs <N>`. The input is the first test vector (or the
//! input's zero point), so the data is the model's own.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::heprintln;
use perch_app::{model, platform};
use perch_micro::Plan;

#[repr(C, align(4))]
struct Arena([u8; model::ARENA_SIZE]);

static mut ARENA: Arena = Arena([0; model::ARENA_SIZE]);

static mut MARK: u32 = 0;

/// Start of a measured window: insncount's `begin=` (distinct volatile stores keep the two
/// markers from being merged).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn perch_bench_begin() {
    // SAFETY: single-threaded firmware; a plain store to a private static.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(MARK), 0xBE61) }
}

/// End of a measured window: insncount's `end=`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn perch_bench_end() {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(MARK), 0xE4D) }
}

#[entry]
fn main() -> ! {
    let plan = Plan::parse(&model::PLAN.0).expect("plan");
    let mut input = [plan.input().zero_point as i8; model::INPUT_LEN];
    if let Ok(v) = perch_app::vectors::TestVectors::parse(
        &model::VECTORS.0,
        model::INPUT_LEN,
        model::OUTPUT_LEN,
    ) && !v.is_empty()
    {
        for (q, &b) in input.iter_mut().zip(v.input(0)) {
            *q = b as i8;
        }
    }
    // SAFETY: the only reference to ARENA, taken once.
    let arena = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };
    let x = plan.input();
    for (a, &q) in arena[x.range()].iter_mut().zip(&input) {
        *a = q as u8;
    }
    {
        // run_op works on the arena as int8; the plan's ops read what the previous ones wrote.
        // SAFETY: u8 and i8 have the same layout; the u8 borrow is not used meanwhile.
        let arena = unsafe {
            core::slice::from_raw_parts_mut(arena.as_mut_ptr().cast::<i8>(), arena.len())
        };
        for (i, (&name, &macs)) in model::OP_NAMES.iter().zip(&model::OP_MACS).enumerate() {
            heprintln!("window: op {} {} macs {}", i, name, macs);
            perch_bench_begin();
            let r = perch_micro::interpreter::run_op(&plan, i, arena);
            perch_bench_end();
            r.expect("op");
        }
    }
    let total: u32 = model::OP_MACS.iter().sum();
    heprintln!("window: network {}, run() macs {}", model::NAME, total);
    perch_bench_begin();
    let r = perch_micro::run(&plan, arena, &input).map(|_| ());
    perch_bench_end();
    r.expect("run");
    platform::exit(true)
}
