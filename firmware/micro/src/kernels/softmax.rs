//! Integer softmax, identical on every build.
//!
//! For each row of `c` inputs (the last axis): `m = max(x)`; `e_i = table[m - x_i]` (an exponential
//! table of 256 u32 entries in Q16, `table[d] ~= 2^16 * exp(-beta * input_scale * d)`, made by the
//! host); `s = sum e_i`; `out_i = clamp((e_i * 256 + s / 2) / s - 128, -128, 127)` with unsigned
//! truncating division: the output is int8 with scale 1/256 and zero point -128, as TFLite's.

use core::num::NonZeroU32;

use crate::Problem;
use crate::kernels::I32Le;

/// Largest row length: keeps `sum e_i` inside u32 (entries are at most 2^16).
pub const MAX_SOFTMAX_DEPTH: usize = 1 << 15;

/// Checks an exponential table: 256 entries, `1 <= table[0] <= 2^16`, every entry `<= 2^16`.
pub(crate) fn check_table(table: &I32Le) -> Result<(), Problem> {
    if table.len() != 256 {
        return Err(Problem::BadLength);
    }
    if table.get(0) < 1 || table.iter().any(|e| !(0..=1 << 16).contains(&e)) {
        return Err(Problem::BadParameter);
    }
    Ok(())
}

/// Softmax over rows of `depth` elements.
pub fn softmax(
    table: &I32Le,
    depth: usize,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Problem> {
    check_table(table)?;
    if depth == 0 || depth > MAX_SOFTMAX_DEPTH || !input.len().is_multiple_of(depth) {
        return Err(Problem::BadShape);
    }
    if input.len() != output.len() {
        return Err(Problem::BadLength);
    }
    for (x, out) in input
        .chunks_exact(depth)
        .zip(output.chunks_exact_mut(depth))
    {
        let m = x.iter().copied().max().unwrap_or(0) as i32;
        let e = |v: i8| table.get((m - v as i32) as usize) as u32;
        // `s >= table[0] >= 1` (the row's maximum meets entry 0; `check_table`): the division
        // by a NonZero has no panic path.
        let Some(s) = NonZeroU32::new(x.iter().map(|&v| e(v)).sum()) else {
            return Err(Problem::BadParameter);
        };
        for (o, &v) in out.iter_mut().zip(x) {
            let q = (e(v) * 256 + s.get() / 2) / s;
            *o = (q as i32 - 128).clamp(-128, 127) as i8;
        }
    }
    Ok(())
}
