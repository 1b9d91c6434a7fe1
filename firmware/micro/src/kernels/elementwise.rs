//! Element-wise kernels: residual add, 256-entry lookup table, reshape.

use super::AddParams;
use crate::Problem;
use crate::requantize::multiply_by_quantized_multiplier;

/// Residual add with requantization, TFLite's integer scheme (see [`AddParams`]).
pub fn add(p: &AddParams, input1: &[i8], input2: &[i8], output: &mut [i8]) -> Result<(), Problem> {
    p.check(input1.len(), input2.len(), output.len())?;
    for ((out, &a), &b) in output.iter_mut().zip(input1).zip(input2) {
        let a = (a as i32 - p.input1_zp) << AddParams::LEFT_SHIFT;
        let b = (b as i32 - p.input2_zp) << AddParams::LEFT_SHIFT;
        let a = multiply_by_quantized_multiplier(a, p.multiplier1, p.shift1);
        let b = multiply_by_quantized_multiplier(b, p.multiplier2, p.shift2);
        let sum = a.wrapping_add(b);
        let v = multiply_by_quantized_multiplier(sum, p.output_multiplier, p.output_shift)
            + p.output_zp;
        // max then min: clamp without a panic path (`AddParams::check` ordered the bounds).
        *out = v.max(p.clamp.min as i32).min(p.clamp.max as i32) as i8;
    }
    Ok(())
}

/// Element-wise table lookup: `out = table[in + 128]`. The host fills the table for sigmoid,
/// swish, hard-swish, tanh... with the input and output quantization folded in.
pub fn lookup(table: &[i8; 256], input: &[i8], output: &mut [i8]) -> Result<(), Problem> {
    if input.len() != output.len() {
        return Err(Problem::BadLength);
    }
    for (out, &x) in output.iter_mut().zip(input) {
        *out = table[(x as u8 ^ 0x80) as usize];
    }
    Ok(())
}

/// Reshape / flatten: NHWC bytes do not move, so this is a copy (the interpreter skips it when
/// input and output share their arena bytes).
pub fn reshape(input: &[i8], output: &mut [i8]) -> Result<(), Problem> {
    if input.len() != output.len() {
        return Err(Problem::BadLength);
    }
    output.copy_from_slice(input);
    Ok(())
}
