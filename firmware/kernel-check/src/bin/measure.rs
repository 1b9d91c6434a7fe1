//! Instruction counts per MAC under qemu + insncount for the layer shapes of the CMSIS-NN table
//! (shared/notes/embedded.md): each kernel call sits between `perch_bench_begin` and
//! `perch_bench_end`; the firmware prints, in window order, what each window ran and its MACs.
//! Each shape runs the dispatched kernel (DSP on Cortex-M4), then the portable kernel. Parameters
//! pass through `black_box`, so the compiler cannot specialize a kernel for a constant shape (a
//! plan's shapes are only known at run time).
#![no_std]
#![no_main]

use core::hint::black_box;
use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use perch_kernel_check::*;
use perch_micro::Problem;
use perch_micro::kernels::{
    self, Clamp, ConvParams, DepthwiseParams, FullyConnectedParams, Shape, portable,
};

type Conv = fn(&ConvParams, &[i8], &mut [i8], &mut [u32]) -> Result<(), Problem>;
type Depthwise = fn(&DepthwiseParams, &[i8], &mut [i8], &mut [u32]) -> Result<(), Problem>;
type Fc = fn(&FullyConnectedParams, &[i8], &mut [i8], &mut [u32]) -> Result<(), Problem>;

/// `PERCH_MEASURE_ONLY=N` at build time keeps only window N (0-based, in the order below), to
/// profile one kernel with insncount's address ranges.
fn wanted(window: &mut usize) -> bool {
    let this = *window;
    *window += 1;
    option_env!("PERCH_MEASURE_ONLY").is_none_or(|only| only.parse() == Ok(this))
}

static mut LAYER: Layer = Layer::new();
static mut OUT: [i8; 32 * 32 * 16] = [0; 32 * 32 * 16];
static mut SCRATCH: [u32; 9 * 64 + 4 * 64] = [0; 9 * 64 + 4 * 64];

#[entry]
fn main() -> ! {
    // SAFETY: the only references to these statics, taken once at start.
    let (layer, out, scratch) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(LAYER),
            &mut *core::ptr::addr_of_mut!(OUT),
            &mut *core::ptr::addr_of_mut!(SCRATCH),
        )
    };
    let mut rng = Rng(0xC0FF_EE01);
    let mut window = 0;
    let relu = Clamp { min: -7, max: 127 };
    let convs: [(usize, usize, usize, usize); 6] = [
        (28, 28, 1, 16),
        (14, 14, 16, 32),
        (7, 7, 32, 32),
        (32, 32, 16, 16),
        (16, 16, 32, 32),
        (8, 8, 64, 64),
    ];
    for (h, w, c, cout) in convs {
        let s = Shape::new(h, w, c);
        layer.randomize(&mut rng, h * w * c, cout, 9 * c, true);
        let p = conv_params(layer, s, same_3x3(), cout, -3, -7, relu);
        let (n, macs) = (h * w * cout, h * w * cout * 9 * c);
        let input = &layer.input[..h * w * c];
        for (name, f) in [
            ("dsp", kernels::conv2d as Conv),
            ("portable", portable::conv2d),
        ] {
            if !wanted(&mut window) {
                continue;
            }
            hprintln!(
                "window: conv {}x{}x{} -> 3x3 {} ch {} macs {}",
                h,
                w,
                c,
                cout,
                name,
                macs
            );
            perch_bench_begin();
            let r = f(black_box(&p), input, &mut out[..n], &mut scratch[..]);
            perch_bench_end();
            r.unwrap();
        }
    }
    for (h, w, c) in [(32, 32, 16), (8, 8, 64)] {
        let s = Shape::new(h, w, c);
        layer.randomize(&mut rng, h * w * c, c, 9, false);
        let p = depthwise_params(layer, s, same_3x3(), 1, 5, -2, relu);
        let (n, macs) = (h * w * c, h * w * c * 9);
        let input = &layer.input[..n];
        for (name, f) in [
            ("dsp", kernels::depthwise_conv2d as Depthwise),
            ("portable", portable::depthwise_conv2d),
        ] {
            if !wanted(&mut window) {
                continue;
            }
            hprintln!(
                "window: depthwise 3x3 {}x{}x{} {} macs {}",
                h,
                w,
                c,
                name,
                macs
            );
            perch_bench_begin();
            let r = f(black_box(&p), input, &mut out[..n], &mut scratch[..]);
            perch_bench_end();
            r.unwrap();
        }
    }
    let (k, n) = (288, 10);
    layer.randomize(&mut rng, k, n, k, true);
    let p = fc_params(layer, k, n, 11, 3, Clamp::NONE);
    let input = &layer.input[..k];
    for (name, f) in [
        ("dsp", kernels::fully_connected as Fc),
        ("portable", portable::fully_connected),
    ] {
        if !wanted(&mut window) {
            continue;
        }
        hprintln!("window: fc {} -> {} {} macs {}", k, n, name, k * n);
        perch_bench_begin();
        let r = f(black_box(&p), input, &mut out[..n], &mut scratch[..]);
        perch_bench_end();
        r.unwrap();
    }
    static mut ARENA: [u8; net::NET_ARENA] = [0; net::NET_ARENA];
    // SAFETY: the only reference to ARENA.
    let arena = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    let plan = perch_micro::Plan::parse(&net::PLAN.0).unwrap();
    let input = net::input();
    if !wanted(&mut window) {
        exit(true);
    }
    hprintln!(
        "window: network (fashion-cnn-s shapes), run() {} macs {}",
        if kernels::DSP { "dsp" } else { "portable" },
        net::NET_MACS
    );
    perch_bench_begin();
    let r = perch_micro::run(&plan, arena, input).map(|_| ());
    perch_bench_end();
    r.unwrap();
    exit(true)
}
