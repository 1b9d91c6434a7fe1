//! Shared by the test firmware binaries: a verdict on panic or HardFault (qemu exits, never
//! hangs), a deterministic random generator, and kernel cases built from it.
#![no_std]

// Links cortex-m for its critical-section implementation (semihosting output needs one).
use cortex_m as _;

use core::panic::PanicInfo;
use cortex_m_rt::{ExceptionFrame, exception};
use cortex_m_semihosting::{debug, hprintln};
use perch_micro::kernels::{
    ChannelQuant, Clamp, ConvParams, DepthwiseParams, FullyConnectedParams, I32Le, Padding, Shape,
    Window, conv_weights_len, pack_conv_weights,
};
use perch_micro::requantize::quantize_multiplier;

pub fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    exit(false)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    hprintln!("HardFault at pc {:#010x}", frame.pc());
    exit(false)
}

/// xorshift32: the same sequence on every run.
pub struct Rng(pub u32);

impl Rng {
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next_u32() % (hi - lo + 1) as u32) as i32
    }
    pub fn fill(&mut self, v: &mut [i8]) {
        for x in v {
            *x = self.next_u32() as i8;
        }
    }
}

pub const MAX_ACT: usize = 32 * 32 * 16;
pub const MAX_OHWI: usize = 64 * 9 * 64;
pub const MAX_CH: usize = 64;

/// Buffers for one layer, reused between cases. Aligned like plan constants (the DSP fully
/// connected kernel loads weights with LDRD).
#[repr(C, align(4))]
pub struct Layer {
    pub input: [i8; MAX_ACT],
    pub ohwi: [i8; MAX_OHWI],
    pub weights: [i8; MAX_OHWI + 4 * MAX_CH],
    pub bias: [u8; 4 * MAX_CH],
    pub multiplier: [u8; 4 * MAX_CH],
    pub shift: [u8; 4 * MAX_CH],
}

impl Layer {
    pub const fn new() -> Self {
        Layer {
            input: [0; MAX_ACT],
            ohwi: [0; MAX_OHWI],
            weights: [0; MAX_OHWI + 4 * MAX_CH],
            bias: [0; 4 * MAX_CH],
            multiplier: [0; 4 * MAX_CH],
            shift: [0; 4 * MAX_CH],
        }
    }

    /// Random data, biases and per-channel requantization for `channels` outputs.
    pub fn randomize(
        &mut self,
        rng: &mut Rng,
        input_len: usize,
        channels: usize,
        depth: usize,
        packed: bool,
    ) {
        rng.fill(&mut self.input[..input_len]);
        for o in 0..channels {
            let b = rng.range(-3000, 3000);
            // Real multiplier 2^-14 .. 2^-4 (typical int8 layers) most of the time; sometimes the
            // edges: up to 2^3 (left shifts), down to 2^-34 (zero multiplier), or exactly 0.
            let (m, s) = match rng.range(0, 9) {
                0 => quantize_multiplier(pow2(rng.range(-34_000, 3_000) as f64 / 1000.0)),
                1 => (0, 0),
                _ => quantize_multiplier(pow2(rng.range(-14_000, -4_000) as f64 / 1000.0)),
            };
            self.bias[4 * o..4 * o + 4].copy_from_slice(&b.to_le_bytes());
            self.multiplier[4 * o..4 * o + 4].copy_from_slice(&m.to_le_bytes());
            self.shift[4 * o..4 * o + 4].copy_from_slice(&s.to_le_bytes());
        }
        let n = channels * depth;
        rng.fill(&mut self.ohwi[..n]);
        if packed {
            let len = conv_weights_len(channels, depth);
            assert!(pack_conv_weights(
                &self.ohwi[..n],
                channels,
                depth,
                &mut self.weights[..len]
            ));
        } else {
            self.weights[..n].copy_from_slice(&self.ohwi[..n]);
        }
    }

    pub fn quant(&self, channels: usize) -> ChannelQuant<'_> {
        fn a(b: &[u8], channels: usize) -> I32Le<'_> {
            I32Le::new(&b[..4 * channels]).unwrap()
        }
        ChannelQuant {
            bias: a(&self.bias, channels),
            multiplier: a(&self.multiplier, channels),
            shift: a(&self.shift, channels),
        }
    }
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

/// 2^e for a fractional `e` without libm: integer part by exponent bits, fraction by a short
/// series (precision is irrelevant, only determinism).
pub fn pow2(e: f64) -> f64 {
    let i = if e < 0.0 { e as i32 - 1 } else { e as i32 };
    let f = e - i as f64; // [0, 1)
    let x = f * core::f64::consts::LN_2;
    let frac = 1.0 + x + x * x / 2.0 + x * x * x / 6.0 + x * x * x * x / 24.0;
    f64::from_bits(((1023 + i) as u64) << 52) * frac
}

pub fn same_3x3() -> Window {
    Window {
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        padding: Padding {
            top: 1,
            left: 1,
            bottom: 1,
            right: 1,
        },
    }
}

pub fn conv_params<'a>(
    l: &'a Layer,
    input: Shape,
    window: Window,
    cout: usize,
    in_zp: i32,
    out_zp: i32,
    clamp: Clamp,
) -> ConvParams<'a> {
    let (oh, ow) = window.output_hw(input.h, input.w).unwrap();
    let depth = window.kernel_h * window.kernel_w * input.c;
    ConvParams {
        input,
        output: Shape::new(oh, ow, cout),
        window,
        input_zp: in_zp,
        output_zp: out_zp,
        clamp,
        weights: &l.weights[..conv_weights_len(cout, depth)],
        quant: l.quant(cout),
    }
}

pub fn depthwise_params<'a>(
    l: &'a Layer,
    input: Shape,
    window: Window,
    mult: usize,
    in_zp: i32,
    out_zp: i32,
    clamp: Clamp,
) -> DepthwiseParams<'a> {
    let (oh, ow) = window.output_hw(input.h, input.w).unwrap();
    let oc = input.c * mult;
    DepthwiseParams {
        input,
        output: Shape::new(oh, ow, oc),
        window,
        multiplier: mult,
        input_zp: in_zp,
        output_zp: out_zp,
        clamp,
        weights: &l.weights[..window.kernel_h * window.kernel_w * oc],
        quant: l.quant(oc),
    }
}

pub fn fc_params(
    l: &Layer,
    k: usize,
    n: usize,
    in_zp: i32,
    out_zp: i32,
    clamp: Clamp,
) -> FullyConnectedParams<'_> {
    FullyConnectedParams {
        input_zp: in_zp,
        output_zp: out_zp,
        clamp,
        weights: &l.weights[..conv_weights_len(n, k)],
        quant: l.quant(n),
    }
}

static mut MARK: u32 = 0;

/// Start of a measured window: insncount's `begin=` points here (distinct volatile stores keep
/// the two markers from being merged).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn perch_bench_begin() {
    // SAFETY: single-threaded firmware; a plain store to a private static.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(MARK), 0xBE61) }
}

/// End of a measured window (insncount's `end=`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn perch_bench_end() {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(MARK), 0xE4D) }
}

/// The test network written by build.rs (fashion-cnn-s shapes, random weights).
pub mod net {
    include!(concat!(env!("OUT_DIR"), "/net.rs"));

    #[repr(C, align(4))]
    pub struct Aligned<T: ?Sized>(pub T);

    /// The plan, 4-byte aligned in flash as the parser requires.
    pub static PLAN: &Aligned<[u8]> =
        &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/net.pmc")));
    pub static INPUT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/net_input.bin"));
    /// The host's output for INPUT.
    pub static EXPECTED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/net_expected.bin"));

    pub fn input() -> &'static [i8] {
        // The input bytes as int8, one by one into a static buffer would need a copy; map instead.
        const N: usize = 28 * 28;
        static mut BUF: [i8; N] = [0; N];
        // SAFETY: called from the single-threaded main only, before any other use of BUF.
        let buf = unsafe { &mut *core::ptr::addr_of_mut!(BUF) };
        for (d, &s) in buf.iter_mut().zip(INPUT) {
            *d = s as i8;
        }
        buf
    }
}
