//! Every `asm!` of the crate: Armv7E-M / Armv8-M DSP-extension instructions (SXTB16, SXTAB16,
//! SMLAD, SMLABB, SMLATT) and the multiply-accumulate loops built from them, behind safe
//! functions that check their slices. Compiled only for cores that have the extension
//! (`cfg(perch_dsp)`, set by build.rs from the target name).
//!
//! Lane conventions: a word of 4 int8 `[b0, b1, b2, b3]` (little-endian) widens to an "even" word
//! of int16 lanes `(b0, b2)` (SXTB16) and an "odd" word `(b1, b3)` (SXTB16 ROR #8). Activations
//! and weights widen the same way, so SMLAD of even with even plus odd with odd is the 4-element
//! dot product, whatever the order inside each word.

use core::arch::asm;

use crate::Problem;

/// One channel's requantization inside an asm block: `lr` points at the channel's (multiplier,
/// shifts, mask) and advances past them, `r2` holds the output zero point; the accumulator
/// register becomes the int8-saturated result. Uses r0, r3, r4, r5, r8.
macro_rules! requant {
    ($acc:literal) => {
        concat!(
            "ldm lr!, {{r3, r4, r5}}\n",
            "lsl ",
            $acc,
            ", ",
            $acc,
            ", r4\n",
            "mov r0, #0x40000000\n",
            "mov r8, #0\n",
            "smlal r0, r8, ",
            $acc,
            ", r3\n",
            "lsr r0, r0, #31\n",
            "orr ",
            $acc,
            ", r0, r8, lsl #1\n",
            "and r0, ",
            $acc,
            ", r5\n",
            "lsr r8, r5, #1\n",
            "add r8, r8, ",
            $acc,
            ", lsr #31\n",
            "lsr r4, r4, #16\n",
            "asr ",
            $acc,
            ", ",
            $acc,
            ", r4\n",
            "cmp r0, r8\n",
            "it gt\n",
            "addgt ",
            $acc,
            ", ",
            $acc,
            ", #1\n",
            "add ",
            $acc,
            ", ",
            $acc,
            ", r2\n",
            "ssat ",
            $acc,
            ", #8, ",
            $acc,
        )
    };
}

/// One channel's requantization inside an asm block, constants read at `ptr` (multiplier,
/// shifts, mask); `r2` holds the output zero point; the accumulator register becomes the
/// int8-saturated result. Uses r0, r3, r4, r5, r8.
macro_rules! requant_at {
    ($acc:literal, $ptr:literal) => {
        concat!(
            "ldm ",
            $ptr,
            ", {{r3, r4, r5}}\n",
            "lsl ",
            $acc,
            ", ",
            $acc,
            ", r4\n",
            "mov r0, #0x40000000\n",
            "mov r8, #0\n",
            "smlal r0, r8, ",
            $acc,
            ", r3\n",
            "lsr r0, r0, #31\n",
            "orr ",
            $acc,
            ", r0, r8, lsl #1\n",
            "and r0, ",
            $acc,
            ", r5\n",
            "lsr r8, r5, #1\n",
            "add r8, r8, ",
            $acc,
            ", lsr #31\n",
            "lsr r4, r4, #16\n",
            "asr ",
            $acc,
            ", ",
            $acc,
            ", r4\n",
            "cmp r0, r8\n",
            "it gt\n",
            "addgt ",
            $acc,
            ", ",
            $acc,
            ", #1\n",
            "add ",
            $acc,
            ", ",
            $acc,
            ", r2\n",
            "ssat ",
            $acc,
            ", #8, ",
            $acc,
        )
    };
}

/// One channel's requantization inside an asm block, straight from the plan's arrays: the
/// multiplier and shift are loaded from `mptr` and `sptr` (both advance by 4); `r2` holds the
/// output zero point; the accumulator register becomes the int8-saturated result. Uses r0, r3,
/// r4, r5, r8.
macro_rules! requant_ms {
    ($acc:literal, $mptr:literal, $sptr:literal) => {
        concat!(
            "ldr r3, [",
            $mptr,
            "], #4\n",
            "ldr r4, [",
            $sptr,
            "], #4\n",
            "bic r5, r4, r4, asr #31\n",
            "lsl ",
            $acc,
            ", ",
            $acc,
            ", r5\n",
            "rsb r4, r4, #0\n",
            "bic r4, r4, r4, asr #31\n",
            "mov r0, #0x40000000\n",
            "mov r8, #0\n",
            "smlal r0, r8, ",
            $acc,
            ", r3\n",
            "lsr r0, r0, #31\n",
            "orr ",
            $acc,
            ", r0, r8, lsl #1\n",
            "mov r5, #1\n",
            "lsl r5, r5, r4\n",
            "sub r5, r5, #1\n",
            "and r0, ",
            $acc,
            ", r5\n",
            "lsr r8, r5, #1\n",
            "add r8, r8, ",
            $acc,
            ", lsr #31\n",
            "asr ",
            $acc,
            ", ",
            $acc,
            ", r4\n",
            "cmp r0, r8\n",
            "it gt\n",
            "addgt ",
            $acc,
            ", ",
            $acc,
            ", #1\n",
            "add ",
            $acc,
            ", ",
            $acc,
            ", r2\n",
            "ssat ",
            $acc,
            ", #8, ",
            $acc,
        )
    };
}

mod conv;
mod depthwise;

pub(crate) use conv::{conv_pairs, conv_table, dot_1x1, dot_1x2, dot_2x1, fc_quads};
pub(crate) use depthwise::DwRow;

/// `(lo16(a) + sext(b0), hi16(a) + sext(b2))`: widens the even bytes of `b` and adds `a`'s lanes.
#[inline(always)]
pub(crate) fn sxtab16(a: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only arithmetic.
    unsafe {
        asm!("sxtab16 {r}, {a}, {b}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// As [`sxtab16`] for the odd bytes `(b1, b3)`.
#[inline(always)]
pub(crate) fn sxtab16_ror8(a: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only arithmetic.
    unsafe {
        asm!("sxtab16 {r}, {a}, {b}, ror #8", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `(sext(b0), sext(b2))`.
#[inline(always)]
pub(crate) fn sxtb16(b: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only arithmetic.
    unsafe {
        asm!("sxtb16 {r}, {b}", r = lateout(reg) r, b = in(reg) b, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `(sext(b1), sext(b3))`.
#[inline(always)]
pub(crate) fn sxtb16_ror8(b: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only arithmetic.
    unsafe {
        asm!("sxtb16 {r}, {b}, ror #8", r = lateout(reg) r, b = in(reg) b, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// One channel's requantization constants in the form [`requantize`] takes.
#[derive(Clone, Copy)]
pub(crate) struct ChannelRq {
    multiplier: i32,
    /// Left shift in bits 0..8, right shift in bits 16..24.
    shifts: u32,
    /// `2^right - 1`.
    mask: u32,
}

impl ChannelRq {
    /// `multiplier >= 0` and `shift` in `-31..=30` (checked by every kernel before it gets here).
    #[inline(always)]
    pub(crate) fn new(multiplier: i32, shift: i32) -> Self {
        let (left, right) = (shift.max(0) as u32, (-shift).max(0) as u32);
        ChannelRq {
            multiplier,
            shifts: left | (right << 16),
            mask: (1u32 << right).wrapping_sub(1),
        }
    }
}

/// [`crate::requantize::requantize`] for a non-negative multiplier, in 21 instructions: the
/// doubling high multiply rounded half up, the power-of-two division rounded half away from zero,
/// the zero point, saturation to int8 and the clamp.
#[inline(always)]
pub(crate) fn requantize(acc: i32, rq: ChannelRq, zp: i32, min: i32, max: i32) -> i8 {
    let mut x = acc;
    // SAFETY: register-only arithmetic.
    unsafe {
        asm!(
            "lsl {x}, {x}, {sh}",
            "mov {lo}, #0x40000000",
            "mov {hi}, #0",
            "smlal {lo}, {hi}, {x}, {m}",
            "lsr {lo}, {lo}, #31",
            "orr {x}, {lo}, {hi}, lsl #1",
            "and {lo}, {x}, {mask}",
            "lsr {hi}, {mask}, #1",
            "add {hi}, {hi}, {x}, lsr #31",
            "lsr {t}, {sh}, #16",
            "asr {x}, {x}, {t}",
            "cmp {lo}, {hi}",
            "it gt",
            "addgt {x}, {x}, #1",
            "add {x}, {x}, {zp}",
            "ssat {x}, #8, {x}",
            "cmp {x}, {min}",
            "it lt",
            "movlt {x}, {min}",
            "cmp {x}, {max}",
            "it gt",
            "movgt {x}, {max}",
            x = inout(reg) x,
            sh = in(reg) rq.shifts,
            m = in(reg) rq.multiplier,
            mask = in(reg) rq.mask,
            zp = in(reg) zp,
            min = in(reg) min,
            max = in(reg) max,
            lo = out(reg) _,
            hi = out(reg) _,
            t = out(reg) _,
            options(pure, nomem, nostack),
        );
    }
    x as i8
}

/// Widens `src` (a multiple of 4 bytes) into even/odd int16 pair words with `offset` added to
/// each lane: `dst[2g], dst[2g + 1]` for group `g`. `Err(BadLength)` (and nothing written) when
/// the lengths do not fit.
#[inline(never)]
pub(crate) fn widen(src: &[i8], offset: u32, dst: &mut [u32]) -> Result<(), Problem> {
    let groups = src.len() / 4;
    if !(src.len().is_multiple_of(4) && dst.len() / 2 >= groups) {
        return Err(Problem::BadLength);
    }
    if groups == 0 {
        return Ok(());
    }
    // SAFETY: reads groups * 4 bytes of `src` (LDR, any alignment), writes groups * 8 bytes of
    // the u32-aligned `dst` (STRD), both checked above.
    unsafe {
        asm!(
            "2:",
            "ldr {w}, [{s}], #4",
            "sxtab16 {e}, {off}, {w}",
            "sxtab16 {o}, {off}, {w}, ror #8",
            "strd {e}, {o}, [{d}], #8",
            "subs {n}, {n}, #1",
            "bne 2b",
            s = inout(reg) src.as_ptr() => _,
            d = inout(reg) dst.as_mut_ptr() => _,
            n = inout(reg) groups => _,
            off = in(reg) offset,
            w = out(reg) _,
            e = out(reg) _,
            o = out(reg) _,
            options(nostack),
        );
    }
    Ok(())
}

/// Widens `src` (a multiple of 4 bytes) into `dst` as im2col does: group `g` goes to
/// `dst[4g]` (even lanes) and `dst[4g + 1]` (odd lanes), `offset` added to each lane. Returns
/// the number of groups written; `Err(BadLength)` (and nothing written) when the lengths do not
/// fit.
pub(crate) fn widen_strided(src: &[i8], offset: u32, dst: &mut [u32]) -> Result<usize, Problem> {
    let groups = src.len() / 4;
    // groups * 4 <= src.len(): no overflow.
    if !(src.len().is_multiple_of(4) && dst.len() + 2 >= groups * 4) {
        return Err(Problem::BadLength);
    }
    if groups == 0 {
        return Ok(0);
    }
    // SAFETY: reads groups * 4 bytes of `src` (LDR, any alignment); writes words 4g and 4g + 1
    // of the u32-aligned `dst` for g < groups (STRD), both checked above.
    unsafe {
        asm!(
            "2:",
            "ldr {w}, [{s}], #4",
            "sxtab16 {e}, {off}, {w}",
            "sxtab16 {o}, {off}, {w}, ror #8",
            "strd {e}, {o}, [{d}], #16",
            "subs {n}, {n}, #1",
            "bne 2b",
            s = inout(reg) src.as_ptr() => _,
            d = inout(reg) dst.as_mut_ptr() => _,
            n = inout(reg) groups => _,
            off = in(reg) offset,
            w = out(reg) _,
            e = out(reg) _,
            o = out(reg) _,
            options(nostack),
        );
    }
    Ok(groups)
}

/// Copies `count` words from `src`, one every `stride` bytes, into `dst` (a channel group's 4
/// bytes of each pixel of an input row into a depthwise strip). `Err(BadLength)` (and nothing
/// written) when the lengths do not fit.
#[inline(never)]
pub(crate) fn gather_words(
    src: &[i8],
    stride: usize,
    count: usize,
    dst: &mut [u32],
) -> Result<(), Problem> {
    if count == 0 {
        return Ok(());
    }
    // (count - 1) * stride + 4 <= src.len(), without overflow.
    if !(stride >= 4
        && src.len() >= 4
        && (src.len() - 4) / stride >= count - 1
        && dst.len() >= count)
    {
        return Err(Problem::BadLength);
    }
    // SAFETY: reads 4 bytes at src + i * stride for i < count (LDR, any alignment) and writes
    // dst[..count], both checked above.
    unsafe {
        asm!(
            "2:",
            "ldr {w}, [{s}]",
            "add {s}, {s}, {stride}",
            "str {w}, [{d}], #4",
            "subs {n}, {n}, #1",
            "bne 2b",
            s = inout(reg) src.as_ptr() => _,
            d = inout(reg) dst.as_mut_ptr() => _,
            n = inout(reg) count => _,
            stride = in(reg) stride,
            w = out(reg) _,
            options(nostack),
        );
    }
    Ok(())
}
