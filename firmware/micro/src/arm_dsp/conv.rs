//! Conv2d and fully connected loops: im2col columns or the widened input against the packed
//! weights, requantized and stored inside the asm.

use core::arch::asm;

use super::ChannelRq;
use crate::Problem;

/// Two output pixels x one output channel (the odd last channel: `weights` is its plain row of
/// 4 bytes per group). `cols`: per group, 4 words: pixel 0 even, pixel 0 odd, pixel 1 even,
/// pixel 1 odd (widened activations, zero point already removed). Returns `[p0, p1]`, or
/// `Err(BadLength)` when the slices are shorter than `groups`.
#[inline(never)]
pub(crate) fn dot_2x1(
    cols: &[u32],
    weights: &[i8],
    groups: usize,
    acc: [i32; 2],
) -> Result<[i32; 2], Problem> {
    // Divisions, not products: no overflow.
    if !(cols.len() / 4 >= groups && weights.len() / 4 >= groups) {
        return Err(Problem::BadLength);
    }
    let [mut p0, mut p1] = acc;
    if groups == 0 {
        return Ok(acc);
    }
    // One past the last group read (inside `cols` by the check).
    let end = cols.as_ptr().wrapping_add(groups * 4);
    // SAFETY: reads groups * 16 bytes of `cols` and groups * 4 of `weights`, checked above.
    unsafe {
        asm!(
            "2:",
            "ldm r0!, {{r2, r3, r4, r5}}",
            "ldr {t}, [r1], #4",
            "sxtb16 {u}, {t}",
            "sxtb16 {t}, {t}, ror #8",
            "smlad {p0}, r2, {u}, {p0}",
            "smlad {p0}, r3, {t}, {p0}",
            "smlad {p1}, r4, {u}, {p1}",
            "smlad {p1}, r5, {t}, {p1}",
            "cmp r0, {end}",
            "bne 2b",
            inout("r0") cols.as_ptr() => _,
            inout("r1") weights.as_ptr() => _,
            out("r2") _, out("r3") _, out("r4") _, out("r5") _,
            t = out(reg) _,
            u = out(reg) _,
            end = in(reg) end,
            p0 = inout(reg) p0,
            p1 = inout(reg) p1,
            options(readonly, nostack),
        );
    }
    Ok([p0, p1])
}

/// One input vector x two output channels (fully connected). `x`: per group 2 words, even then
/// odd; `weights`: the packed pair layout. Returns `[c0, c1]`, or `Err(BadLength)` when the
/// slices are shorter than `groups`.
#[inline(never)]
pub(crate) fn dot_1x2(
    x: &[u32],
    weights: &[i8],
    groups: usize,
    acc: [i32; 2],
) -> Result<[i32; 2], Problem> {
    if !(x.len() / 2 >= groups && weights.len() / 8 >= groups) {
        return Err(Problem::BadLength);
    }
    let [mut c0, mut c1] = acc;
    if groups == 0 {
        return Ok(acc);
    }
    let end = x.as_ptr().wrapping_add(groups * 2);
    // SAFETY: reads groups * 8 bytes of `x` (u32-aligned, for LDRD) and groups * 8 of `weights`
    // (LDR, any alignment), checked above.
    unsafe {
        asm!(
            "cmp {odd}, #0",
            "bne 3f",
            "2:",
            "ldrd {xe}, {xo}, [{x}], #8",
            "ldr {t}, [{w}], #4",
            "ldr {v}, [{w}], #4",
            "sxtb16 {u}, {t}",
            "sxtb16 {t}, {t}, ror #8",
            "smlad {c0}, {xe}, {u}, {c0}",
            "smlad {c0}, {xo}, {t}, {c0}",
            "sxtb16 {u}, {v}",
            "sxtb16 {v}, {v}, ror #8",
            "smlad {c1}, {xe}, {u}, {c1}",
            "smlad {c1}, {xo}, {v}, {c1}",
            "3:",
            "ldrd {xe}, {xo}, [{x}], #8",
            "ldr {t}, [{w}], #4",
            "ldr {v}, [{w}], #4",
            "sxtb16 {u}, {t}",
            "sxtb16 {t}, {t}, ror #8",
            "smlad {c0}, {xe}, {u}, {c0}",
            "smlad {c0}, {xo}, {t}, {c0}",
            "sxtb16 {u}, {v}",
            "sxtb16 {v}, {v}, ror #8",
            "smlad {c1}, {xe}, {u}, {c1}",
            "smlad {c1}, {xo}, {v}, {c1}",
            "cmp {x}, {end}",
            "bne 2b",
            x = inout(reg) x.as_ptr() => _,
            w = inout(reg) weights.as_ptr() => _,
            xe = out(reg) _,
            xo = out(reg) _,
            t = out(reg) _,
            u = out(reg) _,
            v = out(reg) _,
            end = in(reg) end,
            odd = in(reg) groups & 1,
            c0 = inout(reg) c0,
            c1 = inout(reg) c1,
            options(readonly, nostack),
        );
    }
    Ok([c0, c1])
}

/// One input vector x one output channel (the odd last channel of a fully connected layer), or
/// `Err(BadLength)` when the slices are shorter than `groups`.
#[inline(never)]
pub(crate) fn dot_1x1(x: &[u32], weights: &[i8], groups: usize, acc: i32) -> Result<i32, Problem> {
    if !(x.len() / 2 >= groups && weights.len() / 4 >= groups) {
        return Err(Problem::BadLength);
    }
    let mut c0 = acc;
    if groups == 0 {
        return Ok(acc);
    }
    let end = x.as_ptr().wrapping_add(groups * 2);
    // SAFETY: reads groups * 8 bytes of `x` and groups * 4 of `weights`, checked above.
    unsafe {
        asm!(
            "2:",
            "ldrd {xe}, {xo}, [{x}], #8",
            "ldr {t}, [{w}], #4",
            "sxtb16 {u}, {t}",
            "sxtb16 {t}, {t}, ror #8",
            "smlad {c0}, {xe}, {u}, {c0}",
            "smlad {c0}, {xo}, {t}, {c0}",
            "cmp {x}, {end}",
            "bne 2b",
            x = inout(reg) x.as_ptr() => _,
            w = inout(reg) weights.as_ptr() => _,
            xe = out(reg) _,
            xo = out(reg) _,
            t = out(reg) _,
            u = out(reg) _,
            end = in(reg) end,
            c0 = inout(reg) c0,
            options(readonly, nostack),
        );
    }
    Ok(c0)
}

/// Per output channel: bias, then [`ChannelRq`]'s multiplier, shifts and mask.
pub(crate) const CONV_TABLE_WORDS: usize = 4;

/// Fills the per-channel table of a conv or fully connected run (`CONV_TABLE_WORDS` words per
/// channel; `quant(o)` gives bias, multiplier >= 0 and shift).
pub(crate) fn conv_table(
    table: &mut [u32],
    channels: usize,
    quant: impl Fn(usize) -> (i32, i32, i32),
) {
    for (o, e) in table
        .chunks_exact_mut(CONV_TABLE_WORDS)
        .take(channels)
        .enumerate()
    {
        let (b, m, s) = quant(o);
        let r = ChannelRq::new(m, s);
        e.copy_from_slice(&[b as u32, r.multiplier as u32, r.shifts, r.mask]);
    }
}

/// The state of [`conv_pairs`], read and advanced by the asm.
#[repr(C)]
struct ConvRun {
    cols: *const u32,
    cols_end: *const u32,
    odd: u32,
    weights: *const i8,
    pairs: u32,
    table: *const u32,
    zp: i32,
    min4: u32,
    max4: u32,
    out0: *mut i8,
    /// Null when only one pixel is computed.
    out1: *mut i8,
}

/// Conv for two output pixels (one if `out1` is `None`) over `pairs` pairs of output channels:
/// accumulates the im2col `cols` (`groups` groups, see [`dot_2x1`]) against the packed weights
/// (pair after pair), requantizes with `table` (from [`conv_table`]), clamps, and writes 2 bytes
/// per pair to each output pixel. `Err(BadLength)` (and nothing written) when a slice is shorter
/// than that.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
pub(crate) fn conv_pairs(
    cols: &[u32],
    groups: usize,
    weights: &[i8],
    pairs: usize,
    table: &[u32],
    (zp, min, max): (i32, i8, i8),
    out0: &mut [i8],
    out1: Option<&mut [i8]>,
) -> Result<(), Problem> {
    if pairs == 0 {
        return Ok(());
    }
    // Divisions, not products: no overflow (pairs > 0).
    let fits = groups > 0
        && cols.len() / 4 >= groups
        && weights.len() / 8 / pairs >= groups
        && table.len() / (2 * CONV_TABLE_WORDS) >= pairs
        && out0.len() / 2 >= pairs
        && out1.as_ref().is_none_or(|o| o.len() / 2 >= pairs);
    if !fits {
        return Err(Problem::BadLength);
    }
    let out1 = match out1 {
        Some(o) => o.as_mut_ptr(),
        None => core::ptr::null_mut(),
    };
    let mut run = ConvRun {
        cols: cols.as_ptr(),
        cols_end: cols.as_ptr().wrapping_add(groups * 4),
        odd: (groups & 1) as u32,
        weights: weights.as_ptr(),
        pairs: pairs as u32,
        table: table.as_ptr(),
        zp,
        min4: (min as u8 as u32) * 0x0101_0101,
        max4: (max as u8 as u32) * 0x0101_0101,
        out0: out0.as_mut_ptr(),
        out1,
    };
    // SAFETY: per pair the loop reads groups * 16 bytes of `cols`, groups * 8 bytes of weights
    // (the pairs follow each other), 8 table words, and writes 2 bytes to each output: all inside
    // the slices by the checks above. `run` is a local the block reads and updates; the two
    // pushed words are popped before the end.
    unsafe {
        asm!(
            "ldr r1, [r0, #4]",
            "push {{r0}}",
            "push {{r1}}",
            "1:",
            "ldr r9, [sp, #4]",
            "ldr r1, [r9, #12]",
            "ldr r8, [r9, #20]",
            "ldr r10, [r8]",
            "ldr r11, [r8, #16]",
            "mov r12, r10",
            "mov lr, r11",
            "ldr r0, [r9]",
            "ldr r8, [r9, #8]",
            "cmp r8, #0",
            "bne 3f",
            "2:",
                "ldm r0!, {{r2, r3, r4, r5}}",
                "ldr r8, [r1], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r10, r2, r9, r10",
                "smlad r10, r3, r8, r10",
                "smlad r12, r4, r9, r12",
                "smlad r12, r5, r8, r12",
                "ldr r8, [r1], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r11, r2, r9, r11",
                "smlad r11, r3, r8, r11",
                "smlad lr, r4, r9, lr",
                "smlad lr, r5, r8, lr",
            "3:",
                "ldm r0!, {{r2, r3, r4, r5}}",
                "ldr r8, [r1], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r10, r2, r9, r10",
                "smlad r10, r3, r8, r10",
                "smlad r12, r4, r9, r12",
                "smlad r12, r5, r8, r12",
                "ldr r8, [r1], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r11, r2, r9, r11",
                "smlad r11, r3, r8, r11",
                "smlad lr, r4, r9, lr",
                "smlad lr, r5, r8, lr",
            "ldr r9, [sp]",
            "cmp r0, r9",
            "bne 2b",
            "ldr r9, [sp, #4]",
            "str r1, [r9, #12]",
            "ldr r2, [r9, #24]",
            "ldr r1, [r9, #20]",
            "add r9, r1, #4",
            requant_at!("r10", "r9"),
            requant_at!("r12", "r9"),
            "add r9, r1, #20",
            requant_at!("r11", "r9"),
            requant_at!("lr", "r9"),
            "add r1, r1, #32",
            "ldr r9, [sp, #4]",
            "str r1, [r9, #20]",
            "and r10, r10, #0xff",
            "orr r10, r10, r11, lsl #8",
            "and r12, r12, #0xff",
            "orr r12, r12, lr, lsl #8",
            "ldr r3, [r9, #28]",
            "ssub8 r0, r10, r3",
            "sel r10, r10, r3",
            "ssub8 r0, r12, r3",
            "sel r12, r12, r3",
            "ldr r3, [r9, #32]",
            "ssub8 r0, r10, r3",
            "sel r10, r3, r10",
            "ssub8 r0, r12, r3",
            "sel r12, r3, r12",
            "ldr r0, [r9, #36]",
            "strh r10, [r0], #2",
            "str r0, [r9, #36]",
            "ldr r0, [r9, #40]",
            "cmp r0, #0",
            "itt ne",
            "strhne r12, [r0], #2",
            "strne r0, [r9, #40]",
            "ldr r0, [r9, #16]",
            "subs r0, r0, #1",
            "str r0, [r9, #16]",
            "bne 1b",
            "add sp, #8",
            inout("r0") &mut run as *mut ConvRun => _,
            out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _, out("r12") _, out("lr") _,
        );
    }
    Ok(())
}

/// The state of [`fc_quads`], read and advanced by the asm.
#[repr(C)]
struct FcRun {
    x: *const u32,
    x_end: *const u32,
    odd: u32,
    weights: *const i8,
    pair_bytes: u32,
    quads: u32,
    bias: *const u8,
    multiplier: *const u8,
    shift: *const u8,
    zp: i32,
    min4: u32,
    max4: u32,
    out: *mut i8,
}

/// Fully connected over `quads` groups of 4 output channels: the widened input `x` (`groups`
/// groups of 2 words, even then odd lanes, see [`widen`]) against the packed weights (two channel
/// pairs of `groups * 8` bytes each per quad, quad after quad, 4-byte aligned: LDRD), requantized
/// with the plan's little-endian `bias`, `multiplier` (>= 0) and `shift` arrays, clamped, 4 bytes
/// written per quad. `Err(BadParameter)` (and nothing written) when `weights` is not 4-byte
/// aligned, `Err(BadLength)` when a slice is shorter than that.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fc_quads(
    x: &[u32],
    groups: usize,
    weights: &[i8],
    quads: usize,
    (bias, multiplier, shift): (&[u8], &[u8], &[u8]),
    (zp, min, max): (i32, i8, i8),
    out: &mut [i8],
) -> Result<(), Problem> {
    if !(weights.as_ptr() as usize).is_multiple_of(4) {
        return Err(Problem::BadParameter);
    }
    if quads == 0 {
        return Ok(());
    }
    // Divisions, not products: no overflow (quads > 0).
    let fits = groups > 0
        && x.len() / 2 >= groups
        && weights.len() / 16 / quads >= groups
        && bias.len() / 16 >= quads
        && multiplier.len() / 16 >= quads
        && shift.len() / 16 >= quads
        && out.len() / 4 >= quads;
    if !fits {
        return Err(Problem::BadLength);
    }
    let mut run = FcRun {
        x: x.as_ptr(),
        x_end: x.as_ptr().wrapping_add(groups * 2),
        odd: (groups & 1) as u32,
        weights: weights.as_ptr(),
        pair_bytes: (groups * 8) as u32,
        quads: quads as u32,
        bias: bias.as_ptr(),
        multiplier: multiplier.as_ptr(),
        shift: shift.as_ptr(),
        zp,
        min4: (min as u8 as u32) * 0x0101_0101,
        max4: (max as u8 as u32) * 0x0101_0101,
        out: out.as_mut_ptr(),
    };
    // SAFETY: per quad the loop reads groups * 8 bytes of `x`, 2 * groups * 8 bytes of weights
    // (4-byte aligned, checked, for LDRD; the quads follow each other), 16 bytes of each
    // requantization array, and writes 4 output bytes: all inside the slices by the checks above.
    // `run` is a local the block reads and updates; the two pushed words are popped before the end.
    unsafe {
        asm!(
            "ldr r1, [r0, #4]",
            "push {{r0}}",
            "push {{r1}}",
            "1:",
            "ldr r3, [sp, #4]",
            "ldr r1, [r3, #12]",
            "ldr r2, [r3, #16]",
            "add r2, r1, r2",
            "ldr r8, [r3, #24]",
            "ldr r9, [r8]",
            "ldr r10, [r8, #4]",
            "ldr r11, [r8, #8]",
            "ldr r12, [r8, #12]",
            "add r8, r8, #16",
            "str r8, [r3, #24]",
            "ldr r0, [r3]",
            "ldr r8, [r3, #8]",
            "cmp r8, #0",
            "bne 3f",
            "2:",
            "ldrd r3, r4, [r0], #8",
            "ldrd r5, r8, [r1], #8",
            "sxtb16 lr, r5",
            "sxtb16 r5, r5, ror #8",
            "smlad r9, r3, lr, r9",
            "smlad r9, r4, r5, r9",
            "sxtb16 lr, r8",
            "sxtb16 r8, r8, ror #8",
            "smlad r10, r3, lr, r10",
            "smlad r10, r4, r8, r10",
            "ldrd r5, r8, [r2], #8",
            "sxtb16 lr, r5",
            "sxtb16 r5, r5, ror #8",
            "smlad r11, r3, lr, r11",
            "smlad r11, r4, r5, r11",
            "sxtb16 lr, r8",
            "sxtb16 r8, r8, ror #8",
            "smlad r12, r3, lr, r12",
            "smlad r12, r4, r8, r12",
            "3:",
            "ldrd r3, r4, [r0], #8",
            "ldrd r5, r8, [r1], #8",
            "sxtb16 lr, r5",
            "sxtb16 r5, r5, ror #8",
            "smlad r9, r3, lr, r9",
            "smlad r9, r4, r5, r9",
            "sxtb16 lr, r8",
            "sxtb16 r8, r8, ror #8",
            "smlad r10, r3, lr, r10",
            "smlad r10, r4, r8, r10",
            "ldrd r5, r8, [r2], #8",
            "sxtb16 lr, r5",
            "sxtb16 r5, r5, ror #8",
            "smlad r11, r3, lr, r11",
            "smlad r11, r4, r5, r11",
            "sxtb16 lr, r8",
            "sxtb16 r8, r8, ror #8",
            "smlad r12, r3, lr, r12",
            "smlad r12, r4, r8, r12",
            "ldr r3, [sp]",
            "cmp r0, r3",
            "bne 2b",
            "ldr r3, [sp, #4]",
            "str r2, [r3, #12]",
            "ldr r2, [r3, #36]",
            "ldr r1, [r3, #28]",
            "ldr lr, [r3, #32]",
            requant_ms!("r9", "r1", "lr"),
            requant_ms!("r10", "r1", "lr"),
            requant_ms!("r11", "r1", "lr"),
            requant_ms!("r12", "r1", "lr"),
            "ldr r3, [sp, #4]",
            "str r1, [r3, #28]",
            "str lr, [r3, #32]",
            "and r9, r9, #0xff",
            "and r10, r10, #0xff",
            "orr r9, r9, r10, lsl #8",
            "and r11, r11, #0xff",
            "orr r9, r9, r11, lsl #16",
            "orr r9, r9, r12, lsl #24",
            "ldr r4, [r3, #40]",
            "ssub8 r0, r9, r4",
            "sel r9, r9, r4",
            "ldr r4, [r3, #44]",
            "ssub8 r0, r9, r4",
            "sel r9, r4, r9",
            "ldr r0, [r3, #48]",
            "str r9, [r0], #4",
            "str r0, [r3, #48]",
            "ldr r0, [r3, #20]",
            "subs r0, r0, #1",
            "str r0, [r3, #20]",
            "bne 1b",
            "add sp, #8",
            inout("r0") &mut run as *mut FcRun => _,
            out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _, out("r12") _, out("lr") _,
        );
    }
    Ok(())
}
