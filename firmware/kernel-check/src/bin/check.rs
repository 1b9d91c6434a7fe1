//! DSP kernels (what `perch_micro::kernels::*` dispatches to on this core) against the portable
//! kernels, byte for byte, on pseudo-random shapes, zero points, scales and clamps. Exits 0 when
//! every case matches. On thumbv6m both sides are the portable kernels: the run then checks that
//! they work on a core without DSP instructions.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use perch_kernel_check::*;
use perch_micro::kernels::{self, Clamp, Padding, Shape, Window, portable};

const CASES: usize = 500;

fn random_window(rng: &mut Rng, h: usize, w: usize) -> Window {
    loop {
        let (kh, kw) = (rng.range(1, 4) as usize, rng.range(1, 4) as usize);
        let win = Window {
            kernel_h: kh,
            kernel_w: kw,
            stride_h: rng.range(1, 2) as usize,
            stride_w: rng.range(1, 2) as usize,
            padding: Padding {
                top: rng.range(0, kh as i32 - 1) as usize,
                left: rng.range(0, kw as i32 - 1) as usize,
                bottom: rng.range(0, kh as i32 - 1) as usize,
                right: rng.range(0, kw as i32 - 1) as usize,
            },
        };
        if win.output_hw(h, w).is_some() {
            return win;
        }
    }
}

fn random_clamp(rng: &mut Rng) -> Clamp {
    if rng.next_u32().is_multiple_of(2) {
        return Clamp::NONE;
    }
    let (a, b) = (rng.range(-128, 127) as i8, rng.range(-128, 127) as i8);
    Clamp {
        min: a.min(b),
        max: a.max(b),
    }
}

static mut LAYER: Layer = Layer::new();

#[entry]
fn main() -> ! {
    // SAFETY: the only reference to LAYER, taken once at start.
    let layer = unsafe { &mut *core::ptr::addr_of_mut!(LAYER) };
    let mut rng = Rng(0x5EED_1234);
    let mut out_a = [0i8; 16 * 16 * 32];
    let mut out_b = [0i8; 16 * 16 * 32];
    let mut scratch = [0u32; 9 * 64 + 4 * 64];
    let mut failures = 0;
    let mut macs = 0u64;
    hprintln!("kernel-check: DSP kernels {}", kernels::DSP);

    for case in 0..CASES {
        let (h, w) = (rng.range(1, 12) as usize, rng.range(1, 12) as usize);
        let c = if rng.next_u32().is_multiple_of(2) {
            4 * rng.range(1, 8) as usize
        } else {
            rng.range(1, 20) as usize
        };
        let cout = rng.range(1, 24) as usize;
        let win = random_window(&mut rng, h, w);
        let (in_zp, out_zp) = (rng.range(-128, 127), rng.range(-128, 127));
        let clamp = random_clamp(&mut rng);
        let s = Shape::new(h, w, c);
        let depth = win.kernel_h * win.kernel_w * c;
        layer.randomize(&mut rng, h * w * c, cout, depth, true);
        let p = conv_params(layer, s, win, cout, in_zp, out_zp, clamp);
        let n = p.output.elements().unwrap();
        if n > out_a.len() || p.scratch_words() > scratch.len() {
            continue;
        }
        macs += (n * depth) as u64;
        let input = &layer.input[..h * w * c];
        portable::conv2d(&p, input, &mut out_a[..n], &mut scratch).unwrap();
        kernels::conv2d(&p, input, &mut out_b[..n], &mut scratch).unwrap();
        if out_a[..n] != out_b[..n] {
            hprintln!(
                "conv case {} differs: {:?} {:?} cout {}",
                case,
                s,
                win,
                cout
            );
            failures += 1;
        }

        // Depthwise: half the cases on the DSP-friendly shape (multiplier 1, channels % 4 == 0).
        let (c, mult) = if case % 2 == 0 {
            (4 * rng.range(1, 8) as usize, 1)
        } else {
            (rng.range(1, 9) as usize, rng.range(1, 3) as usize)
        };
        let s = Shape::new(h, w, c);
        layer.randomize(
            &mut rng,
            h * w * c,
            c * mult,
            win.kernel_h * win.kernel_w,
            false,
        );
        let p = depthwise_params(layer, s, win, mult, in_zp, out_zp, clamp);
        let n = p.output.elements().unwrap();
        if n <= out_a.len() {
            let input = &layer.input[..h * w * c];
            portable::depthwise_conv2d(&p, input, &mut out_a[..n], &mut scratch).unwrap();
            kernels::depthwise_conv2d(&p, input, &mut out_b[..n], &mut scratch).unwrap();
            if out_a[..n] != out_b[..n] {
                hprintln!(
                    "depthwise case {} differs: {:?} {:?} mult {}",
                    case,
                    s,
                    win,
                    mult
                );
                failures += 1;
            }
        }

        // Fully connected.
        let (k, n) = (rng.range(1, 400) as usize, rng.range(1, 20) as usize);
        layer.randomize(&mut rng, k, n, k, true);
        let p = fc_params(layer, k, n, in_zp, out_zp, clamp);
        let input = &layer.input[..k];
        portable::fully_connected(&p, input, &mut out_a[..n], &mut scratch).unwrap();
        kernels::fully_connected(&p, input, &mut out_b[..n], &mut scratch).unwrap();
        if out_a[..n] != out_b[..n] {
            hprintln!("fully connected case {} differs: k {} n {}", case, k, n);
            failures += 1;
        }
    }
    // The whole test network through the plan interpreter, against the host's output.
    static mut ARENA: [u8; net::NET_ARENA] = [0; net::NET_ARENA];
    // SAFETY: the only reference to ARENA.
    let arena = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    let result = perch_micro::Plan::parse(&net::PLAN.0).and_then(|plan| {
        let out = perch_micro::run(&plan, arena, net::input())?;
        Ok(out.len() == net::EXPECTED.len()
            && out.iter().zip(net::EXPECTED).all(|(&a, &b)| a as u8 == b))
    });
    match result {
        Ok(true) => hprintln!("network: {} MACs, output matches the host's", net::NET_MACS),
        Ok(false) => {
            hprintln!("network: output differs from the host's");
            failures += 1;
        }
        Err(e) => {
            hprintln!("network: {}", e);
            failures += 1;
        }
    }
    hprintln!(
        "kernel-check: {} cases x 3 kernels, {} conv MACs, {} failed",
        CASES,
        macs,
        failures
    );
    exit(failures == 0)
}
