//! Puts the model and the memory layout into the firmware:
//!
//! - the `.pmc` plan (`PERCH_PMC`, default `plans/fashion-cnn-s.pmc`) and its test vectors (the
//!   `.vectors` file beside it, written by `perch compile`; none: the app runs one blank frame),
//!   checked here with the host side of the same crate, so a corrupted plan or vectors that do not
//!   match the plan fail the build with the reason, and copied to OUT_DIR for `include_bytes!`;
//! - `model.rs`: the arena size, tensor sizes and MACs per op, as constants;
//! - `memory.x` for the chip feature (none: qemu's mps2 boards), with a stack reserve the link
//!   asserts, so a model too big for the chip fails to link.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use perch_micro::Plan;
use perch_micro::plan::AlignedBytes;

/// RAM the link keeps free for the stack, and the stack budget the app's run enforces (its painted
/// high-water mark must stay within it): the measured mark (1,136 bytes on a Cortex-M4, 1,256 on
/// thumbv6m, with fashion-cnn-s; see README) with room to spare. host-tools' budget check assumes
/// the same (`perch_host::mcu::STACK_RAM_ESTIMATE`).
const STACK_RESERVE: u32 = 4 * 1024;

/// Flash origin, flash size, RAM origin, RAM size.
struct Layout(u32, u32, u32, u32);

const CHIPS: &[(&str, Layout)] = &[
    (
        "STM32F411",
        Layout(0x0800_0000, 512 * 1024, 0x2000_0000, 128 * 1024),
    ),
    (
        "STM32F405",
        Layout(0x0800_0000, 1024 * 1024, 0x2000_0000, 128 * 1024),
    ),
    (
        "NRF52840",
        Layout(0x0000_0000, 1024 * 1024, 0x2000_0000, 256 * 1024),
    ),
];
/// qemu mps2-an385 / mps2-an386 / mps2-an505 (the test bench).
const MPS2: (&str, Layout) = ("mps2", Layout(0, 4 << 20, 0x2000_0000, 4 << 20));

const VECTORS_MAGIC: &[u8; 4] = b"PMCV";
const VECTORS_VERSION: u32 = 1;
const VECTORS_HEADER: usize = 20;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PERCH_PMC");
    // The linker and its no-panic check: relink when they change.
    println!("cargo::rerun-if-changed=linker.sh");
    println!("cargo::rerun-if-changed=no-panic.sh");
    println!("cargo::rerun-if-env-changed=PERCH_NO_PANIC");

    // A relative PERCH_PMC is relative to firmware/, where `cargo run` is started.
    let pmc = match std::env::var_os("PERCH_PMC") {
        Some(p) => manifest.parent().unwrap().join(p),
        None => manifest.join("plans/fashion-cnn-s.pmc"),
    };
    let vectors = pmc.with_extension("vectors");
    println!("cargo::rerun-if-changed={}", pmc.display());
    println!("cargo::rerun-if-changed={}", vectors.display());

    let bytes = std::fs::read(&pmc)
        .unwrap_or_else(|e| fail(&format!("cannot read the plan {}: {e}", pmc.display())));
    let plan_bytes = AlignedBytes::from(bytes.as_slice());
    let plan = Plan::parse(&plan_bytes)
        .unwrap_or_else(|e| fail(&format!("{}: not a usable .pmc plan: {e}", pmc.display())));
    std::fs::write(out.join("plan.pmc"), &bytes).unwrap();

    let (input_len, output_len) = (plan.input().size, plan.output().size);
    let vector_bytes = if vectors.exists() {
        let v = std::fs::read(&vectors).unwrap_or_else(|e| {
            fail(&format!(
                "cannot read the test vectors {}: {e}",
                vectors.display()
            ))
        });
        check_vectors(&v, input_len, output_len)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", vectors.display())));
        v
    } else {
        println!(
            "cargo::warning=no test vectors beside {} (expected {}): the app runs one blank frame",
            pmc.display(),
            vectors.display()
        );
        vectors_header(0, input_len, output_len)
    };
    std::fs::write(out.join("plan.vectors"), &vector_bytes).unwrap();

    let (mut macs, mut names) = (Vec::new(), Vec::new());
    for i in 0..plan.op_count() {
        let d = plan.op(i).unwrap();
        let x = plan.tensor(d.inputs[0]).unwrap();
        let y = plan.tensor(d.output).unwrap();
        macs.push(d.op.macs(x.size));
        let shape = |s: perch_micro::kernels::Shape| format!("{}x{}x{}", s.h, s.w, s.c);
        let kernel = match &d.op {
            perch_micro::plan::Op::Conv2d(p) => {
                format!(" {}x{}", p.window.kernel_h, p.window.kernel_w)
            }
            perch_micro::plan::Op::DepthwiseConv2d(p) => {
                format!(" {}x{}", p.window.kernel_h, p.window.kernel_w)
            }
            _ => String::new(),
        };
        names.push(format!(
            "{:?}{kernel} {} -> {}",
            d.op.kind(),
            shape(x.shape),
            shape(y.shape)
        ));
    }
    let name = pmc.file_stem().unwrap().to_string_lossy();
    let mut model = String::new();
    writeln!(model, "/// The plan's file name, without `.pmc`.").unwrap();
    writeln!(model, "pub const NAME: &str = {name:?};").unwrap();
    writeln!(
        model,
        "/// Bytes of the plan's arena (activations and kernel scratch)."
    )
    .unwrap();
    writeln!(
        model,
        "pub const ARENA_SIZE: usize = {};",
        plan.arena_size()
    )
    .unwrap();
    writeln!(
        model,
        "/// Bytes of stack the run may use (its painted high-water mark): the link reserves as much."
    )
    .unwrap();
    writeln!(model, "pub const STACK_BUDGET: usize = {STACK_RESERVE};").unwrap();
    writeln!(model, "pub const INPUT_LEN: usize = {input_len};").unwrap();
    writeln!(model, "pub const OUTPUT_LEN: usize = {output_len};").unwrap();
    writeln!(
        model,
        "/// Multiply-accumulates of each op, in execution order."
    )
    .unwrap();
    writeln!(
        model,
        "pub const OP_MACS: [u32; {}] = {macs:?};",
        macs.len()
    )
    .unwrap();
    writeln!(model, "/// Each op's kind and shapes, in execution order.").unwrap();
    writeln!(
        model,
        "pub const OP_NAMES: [&str; {}] = {names:?};",
        names.len()
    )
    .unwrap();
    std::fs::write(out.join("model.rs"), model).unwrap();

    memory_layout(&out);
    // The DWT cycle counter exists on Armv7-M and Armv8-M mainline, not on Armv6-M.
    println!("cargo::rustc-check-cfg=cfg(perch_cycle_counter)");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7") || target.starts_with("thumbv8m.main") {
        println!("cargo::rustc-cfg=perch_cycle_counter");
    }
    println!("cargo::rustc-link-arg-bins=-Tlink.x");
    println!("cargo::rustc-link-arg-bins=-Tdefmt.x");
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

fn vectors_header(count: u32, input_len: usize, output_len: usize) -> Vec<u8> {
    let mut v = VECTORS_MAGIC.to_vec();
    for n in [VECTORS_VERSION, count, input_len as u32, output_len as u32] {
        v.extend(n.to_le_bytes());
    }
    v
}

/// The `.vectors` format (README): header, `count` inputs, `count` expected outputs, `count` labels.
fn check_vectors(v: &[u8], input_len: usize, output_len: usize) -> Result<(), String> {
    if v.len() < VECTORS_HEADER || &v[..4] != VECTORS_MAGIC {
        return Err("not a .vectors file (magic PMCV)".into());
    }
    let word = |i: usize| u32::from_le_bytes(v[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize;
    let (version, count, i, o) = (word(0), word(1), word(2), word(3));
    if version != VECTORS_VERSION as usize {
        return Err(format!(
            "format version {version}, this app reads {VECTORS_VERSION}"
        ));
    }
    if (i, o) != (input_len, output_len) {
        return Err(format!(
            "vectors of {i} input / {o} output bytes, the plan has {input_len} / {output_len}: \
             not this plan's vectors"
        ));
    }
    let expected = VECTORS_HEADER + count * (i + o + 1);
    if v.len() != expected {
        return Err(format!(
            "{} bytes, {count} vectors need {expected}",
            v.len()
        ));
    }
    Ok(())
}

/// Writes memory.x for the chip feature. The ASSERT keeps `STACK_RESERVE` bytes between the end of
/// the statics (the arena is one) and the top of RAM, where the stack grows down from.
fn memory_layout(out: &Path) {
    let chosen: Vec<&(&str, Layout)> = CHIPS
        .iter()
        .filter(|(name, _)| std::env::var_os(format!("CARGO_FEATURE_{name}")).is_some())
        .collect();
    let (name, Layout(flash, flash_len, ram, ram_len)) = match chosen.as_slice() {
        [] => &MPS2,
        [one] => *one,
        _ => fail("more than one chip feature: choose one memory layout"),
    };
    let memory = format!(
        "/* {name} (written by perch-app's build.rs) */
MEMORY
{{
  FLASH : ORIGIN = {flash:#010x}, LENGTH = {flash_len}
  RAM   : ORIGIN = {ram:#010x}, LENGTH = {ram_len}
}}

ASSERT(_stack_start - _stack_end >= {STACK_RESERVE}, \"perch: the statics (the model's arena is one) leave less than {STACK_RESERVE} bytes of stack in {name}'s {ram_len} bytes of RAM\");
"
    );
    std::fs::write(out.join("memory.x"), memory).unwrap();
    println!("cargo::rustc-link-search={}", out.display());
}
