//! Host-side builders for the tables a plan carries (feature `std`): element-wise lookup tables for
//! activation functions and the softmax exponential table. The host computes them in floating
//! point once; the MCU only indexes them, so results are identical everywhere.

/// A 256-entry int8 lookup table for `f`: entry `i` is the quantized `f` of the input
/// `q = i - 128`: `clamp(round(f(in_scale * (q - in_zp)) / out_scale) + out_zp)`, rounding half
/// away from zero.
pub fn lookup_table(
    f: impl Fn(f32) -> f32,
    (in_scale, in_zp): (f32, i32),
    (out_scale, out_zp): (f32, i32),
) -> [i8; 256] {
    core::array::from_fn(|i| {
        let x = in_scale * (i as i32 - 128 - in_zp) as f32;
        let q = (f(x) / out_scale).round() as i32 + out_zp;
        q.clamp(-128, 127) as i8
    })
}

/// The softmax exponential table: entry `d` is `round(2^16 * exp(-beta * input_scale * d))`.
pub fn softmax_table(input_scale: f32, beta: f32) -> [u32; 256] {
    core::array::from_fn(|d| {
        let e = (-(beta as f64) * input_scale as f64 * d as f64).exp();
        (e * 65536.0).round().clamp(0.0, 65536.0) as u32
    })
}

/// Common activation functions for [`lookup_table`].
pub mod activation {
    pub fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }
    pub fn tanh(x: f32) -> f32 {
        x.tanh()
    }
    /// Swish `x * sigmoid(beta * x)` (SiLU for beta = 1; the learnable Swish bakes its trained beta).
    pub fn swish(beta: f32) -> impl Fn(f32) -> f32 {
        move |x| x / (1.0 + (-beta * x).exp())
    }
    pub fn hard_swish(x: f32) -> f32 {
        x * (x + 3.0).clamp(0.0, 6.0) / 6.0
    }
    pub fn hard_sigmoid(x: f32) -> f32 {
        (x + 3.0).clamp(0.0, 6.0) / 6.0
    }
}
