//! The board app: runs the embedded plan on frames from a `FrameSource` and shows the class on
//! pins. Built as is (qemu), the frames are the host simulation's test vectors and the run is the
//! test: every output byte must equal the host's; the exit status is the verdict. It also reports
//! RAM: the statics (the arena and a few bytes) and the stack's high-water mark (the stack is
//! painted at boot).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use perch_app::classify::top_k;
use perch_app::frames::VectorFrames;
use perch_app::indicator::{ClassPins, NoPin};
use perch_app::vectors::TestVectors;
use perch_app::{model, platform, ram, selftest};
use perch_micro::Plan;

/// The plan's arena: every activation and the kernels' scratch, placed by the host's planner.
#[repr(C, align(4))]
struct Arena([u8; model::ARENA_SIZE]);

static mut ARENA: Arena = Arena([0; model::ARENA_SIZE]);

#[entry]
fn main() -> ! {
    ram::paint_stack();
    platform::exit(app())
}

fn app() -> bool {
    let plan = match Plan::parse(&model::PLAN.0) {
        Ok(plan) => plan,
        Err(e) => {
            defmt::error!("plan {=str}: {}", model::NAME, defmt::Display2Format(&e));
            return false;
        }
    };
    defmt::info!(
        "perch-app: plan {=str}, {=usize} ops, arena {=usize} bytes, input {=usize} bytes, {=str} kernels",
        model::NAME,
        plan.op_count(),
        plan.arena_size(),
        plan.input().size,
        if perch_micro::kernels::DSP {
            "Cortex-M DSP"
        } else {
            "portable"
        }
    );
    let vectors = match TestVectors::parse(&model::VECTORS.0, model::INPUT_LEN, model::OUTPUT_LEN) {
        Ok(v) => v,
        Err(e) => {
            defmt::error!("test vectors: {}", e);
            return false;
        }
    };
    // SAFETY: the only reference to ARENA, taken once; main never returns.
    let arena = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };
    // On the stack, so the measured stack includes it.
    let mut frame = [0i8; model::INPUT_LEN];
    // One pin per class: a board passes its GPIOs here, and its camera as the source, e.g.
    // `SpiFrames::new(spi_device, READ_FRAME, PixelMap::new(scale, zero_point, 0.286, 0.353))`.
    let mut pins = ClassPins::new([NoPin; model::OUTPUT_LEN]);
    let cycles = cycle_counter();

    let ok = if vectors.is_empty() {
        blank_frame(&plan, arena, &mut frame)
    } else {
        let mut source = VectorFrames::new(vectors);
        let start = cycles.now();
        match selftest::run(&plan, arena, &mut frame, &vectors, &mut source, &mut pins) {
            Ok(s) => {
                let elapsed = cycles.now().wrapping_sub(start);
                for m in &s.mismatches {
                    defmt::error!("{}", m);
                }
                defmt::info!(
                    "{=u16}/{=u16} outputs byte-identical to the host simulation; top-1 {=u16}/{=u16} against the labels",
                    s.identical,
                    s.frames,
                    s.correct,
                    s.frames
                );
                if elapsed > 0 {
                    defmt::info!(
                        "{=u32} cycles per frame (with its log line)",
                        elapsed / s.frames as u32
                    );
                }
                s.passed()
            }
            Err(e) => {
                defmt::error!("{}", e);
                false
            }
        }
    };
    let (stack, statics) = (ram::stack_high_water(), ram::statics());
    defmt::info!(
        "RAM: {=usize} bytes = statics {=usize} (arena {=usize}, other {=usize}) + stack {=usize} (high-water mark; {=usize} free for it)",
        statics + stack,
        statics,
        model::ARENA_SIZE,
        statics - model::ARENA_SIZE,
        stack,
        ram::stack_size()
    );
    // The stack budget is what the link reserves and host-tools' RAM check assumes: a deeper stack
    // would overflow on a chip whose RAM the plan fills.
    let stack_ok = stack <= model::STACK_BUDGET;
    if !stack_ok {
        defmt::error!(
            "stack high-water mark {=usize} bytes is over the {=usize}-byte budget",
            stack,
            model::STACK_BUDGET
        );
    }
    defmt::info!(
        "stack: {=usize} of {=usize} bytes budgeted",
        stack,
        model::STACK_BUDGET
    );
    let ok = ok && stack_ok;
    defmt::info!("{=str}", if ok { "PASS" } else { "FAIL" });
    ok
}

/// Without test vectors: one inference on a frame at the input's zero point (a smoke test of the
/// plan on this chip).
fn blank_frame(plan: &Plan, arena: &mut [u8], frame: &mut [i8]) -> bool {
    frame.fill(plan.input().zero_point as i8);
    match perch_micro::run(plan, arena, frame) {
        Ok(scores) => {
            defmt::info!(
                "no test vectors; blank frame: top-3 {}",
                top_k::<3>(scores).as_slice()
            );
            true
        }
        Err(e) => {
            defmt::error!("inference: {}", defmt::Display2Format(&e));
            false
        }
    }
}

/// The DWT cycle counter where the core has one (0 under qemu, which does not count cycles).
struct Cycles;

impl Cycles {
    fn now(&self) -> u32 {
        #[cfg(perch_cycle_counter)]
        return cortex_m::peripheral::DWT::cycle_count();
        #[cfg(not(perch_cycle_counter))]
        0
    }
}

fn cycle_counter() -> Cycles {
    #[cfg(perch_cycle_counter)]
    if let Some(mut p) = cortex_m::Peripherals::take() {
        p.DCB.enable_trace();
        p.DWT.enable_cycle_counter();
    }
    Cycles
}
