//! Times Perch's float convolution kernel on each convolution of the two example models, alone:
//! microseconds per image and GMAC/s, per layer, on the best instruction set here (a benchmark, not
//! a test: run it in release, on an otherwise idle machine, and compare figures within one run).
//!
//! ```sh
//! cargo run --release -p perch-runtime --example fconv_layers [ROUNDS [NAME-FILTER]]
//! ```

use std::time::Instant;

use perch_runtime::kernels::fconv::{Activation, FConvKernel};
use perch_runtime::kernels::{Geometry, Isa};
use tract_nnef::tract_core::tract_linalg::Func;

/// `(name, in channels, out channels, input side, kernel side, stride, activation)`; padding is
/// kernel / 2, as in both models.
const LAYERS: &[(&str, usize, usize, usize, usize, usize, Activation)] = &[
    ("cnn-s conv0 1->16 28x28", 1, 16, 28, 3, 1, Activation::Swish { beta: 1.0 }),
    ("cnn-s conv1 16->32 14x14", 16, 32, 14, 3, 1, Activation::Swish { beta: 1.0 }),
    ("cnn-s conv2 32->64 7x7", 32, 64, 7, 3, 1, Activation::Swish { beta: 1.0 }),
    ("resnet stem 1->32 28x28", 1, 32, 28, 3, 1, Activation::Relu),
    ("resnet s0.conv1 32->32 /2 28x28", 32, 32, 28, 3, 2, Activation::Relu),
    ("resnet s0.conv2 32->32 14x14", 32, 32, 14, 3, 1, Activation::None),
    ("resnet s0.shortcut 1x1 /2 28x28", 32, 32, 28, 1, 2, Activation::None),
    ("resnet s1.conv1 32->64 /2 14x14", 32, 64, 14, 3, 2, Activation::Relu),
    ("resnet s1.conv2 64->64 7x7", 64, 64, 7, 3, 1, Activation::None),
    ("resnet s1.shortcut 1x1 /2 14x14", 32, 64, 14, 1, 2, Activation::None),
    ("resnet s2.conv1 64->128 /2 7x7", 64, 128, 7, 3, 2, Activation::Relu),
    ("resnet s2.conv2 128->128 4x4", 128, 128, 4, 3, 1, Activation::None),
    ("resnet s2.shortcut 1x1 /2 7x7", 64, 128, 7, 1, 2, Activation::None),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map(|r| r.parse()).transpose()?.unwrap_or(15);
    let filter = std::env::args().nth(2).unwrap_or_default();
    let isa = *Isa::available().last().expect("the portable kernels at least");
    println!("{isa:?}, {rounds} rounds of ~2 ms per layer; median of the rounds' mean time per image");
    let mut total = 0.0;
    for &(name, cin, cout, side, k, s, activation) in LAYERS.iter().filter(|layer| layer.0.contains(&filter)) {
        let pad = k / 2;
        let out = (side + 2 * pad - k) / s + 1;
        let geometry = Geometry { input: [side; 2], kernel: [k; 2], stride: [s; 2], dilation: [1; 2], pad_before: [pad; 2], pad_after: [pad; 2], output: [out; 2] };
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 1000.0;
        let weights: Vec<f32> = (0..cout * cin * k * k).map(value).collect();
        let bias: Vec<f32> = (0..cout).map(value).collect();
        let kernel = FConvKernel::new(geometry, cin, &weights, &bias, isa)?.with_activation(activation);
        let x: Vec<f32> = (0..cin * side * side).map(|i| value(i + 1)).collect();
        let mut y = vec![0f32; cout * out * out];
        let mut buffer = kernel.scratch();
        // tract-linalg's sigmoid, as the plans' `PerchConv#f32` runs it.
        let sigmoid = Func::Sigmoid.ew_f32()?;
        let mut run = || kernel.run_with(&x, 1, &mut y, &mut buffer, &mut |v| sigmoid.run(v).expect("tract's sigmoid on an aligned slice"));
        let start = Instant::now();
        let mut calibration = 0;
        while start.elapsed().as_micros() < 2000 {
            run()?;
            calibration += 1;
        }
        let mut means: Vec<f64> = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..calibration {
                    run()?;
                }
                Ok(start.elapsed().as_secs_f64() * 1e6 / calibration as f64)
            })
            .collect::<Result<_, Box<dyn std::error::Error>>>()?;
        means.sort_by(f64::total_cmp);
        let us = means[means.len() / 2];
        total += us;
        println!("{name:34} {us:8.2} us  {:6.1} GMAC/s", kernel.macs() as f64 / us / 1e3);
    }
    println!("{:34} {total:8.2} us", "all");
    Ok(())
}
