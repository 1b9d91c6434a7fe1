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
    println!("{isa:?}, {rounds} rounds of ~2 ms; median of the rounds' mean time per image");
    // tract-linalg's sigmoid, as the plans' `PerchConv#f32` runs it.
    let sigmoid = Func::Sigmoid.ew_f32()?;
    let mut layers = Vec::new();
    for &(name, cin, cout, side, k, s, activation) in LAYERS.iter().filter(|layer| layer.0.contains(&filter)) {
        let pad = k / 2;
        let out = (side + 2 * pad - k) / s + 1;
        let geometry = Geometry { input: [side; 2], kernel: [k; 2], stride: [s; 2], dilation: [1; 2], pad_before: [pad; 2], pad_after: [pad; 2], output: [out; 2] };
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 1000.0;
        let weights: Vec<f32> = (0..cout * cin * k * k).map(value).collect();
        let bias: Vec<f32> = (0..cout).map(value).collect();
        let kernel = FConvKernel::new(geometry, cin, &weights, &bias, isa)?.with_activation(activation);
        let x: Vec<f32> = (0..cin * side * side).map(|i| value(i + 1)).collect();
        let y = vec![0f32; cout * out * out];
        let buffer = kernel.scratch();
        layers.push(Layer { name, kernel, x, y, buffer });
    }
    let mut run = |layer: &mut Layer| layer.kernel.run_with(&layer.x, 1, &mut layer.y, &mut layer.buffer, &mut |v| sigmoid.run(v).expect("tract's sigmoid on an aligned slice"));
    println!("alone: each layer run over and over (its weights and input stay in cache)");
    let mut total = 0.0;
    for layer in &mut layers {
        let us = median_us(rounds, || run(layer))?;
        total += us;
        println!("{:34} {us:8.2} us  {:6.1} GMAC/s", layer.name, layer.kernel.macs() as f64 / us / 1e3);
    }
    println!("{:34} {total:8.2} us", "all");
    // F(2x2, 3x3) against the direct kernel on the layers it serves, rounds interleaved (on a
    // shared machine the minimum is the steadier figure).
    for layer in layers.iter_mut().filter(|layer| layer.kernel.is_winograd()) {
        let direct = layer.kernel.clone().without_winograd();
        let mut buffer = direct.scratch();
        let (mut wino, mut plain) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            wino.push(median_us(1, || run(layer))?);
            plain.push(median_us(1, || direct.run_with(&layer.x, 1, &mut layer.y, &mut buffer, &mut |v| sigmoid.run(v).expect("tract's sigmoid on an aligned slice")))?);
        }
        let stats = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[0])
        };
        let ((w, wmin), (d, dmin)) = (stats(&mut wino), stats(&mut plain));
        println!("{:34} winograd {w:7.2} us (min {wmin:6.2}), direct {d:7.2} us (min {dmin:6.2}): {:.2}x", layer.name, w / d);
    }
    // Chained, as in a plan: every layer once per image, in order, so each finds its weights where
    // the other layers left the caches.
    let us = median_us(rounds, || layers.iter_mut().try_for_each(&mut run))?;
    println!("{:34} {us:8.2} us  (chained: all layers once per image, in order)", "all");
    // Each layer's share of the chain (timed call by call: the clock's cost is in these figures).
    let mut spent = vec![0.0; layers.len()];
    let runs = 2000;
    for _ in 0..runs {
        for (layer, spent) in layers.iter_mut().zip(&mut spent) {
            let start = Instant::now();
            run(layer)?;
            *spent += start.elapsed().as_secs_f64() * 1e6;
        }
    }
    for (layer, spent) in layers.iter().zip(spent) {
        println!("{:34} {:8.2} us  (in the chain, mean of {runs})", layer.name, spent / runs as f64);
    }
    Ok(())
}

struct Layer {
    name: &'static str,
    kernel: FConvKernel,
    x: Vec<f32>,
    y: Vec<f32>,
    buffer: Vec<f32>,
}

/// The median over `rounds` of the mean microseconds per call of `run`, each round ~2 ms.
fn median_us<E: Into<Box<dyn std::error::Error>>>(rounds: usize, mut run: impl FnMut() -> Result<(), E>) -> Result<f64, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut calibration = 0;
    while start.elapsed().as_micros() < 2000 {
        run().map_err(Into::into)?;
        calibration += 1;
    }
    let mut means = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..calibration {
            run().map_err(Into::into)?;
        }
        means.push(start.elapsed().as_secs_f64() * 1e6 / calibration as f64);
    }
    means.sort_by(f64::total_cmp);
    Ok(means[means.len() / 2])
}
