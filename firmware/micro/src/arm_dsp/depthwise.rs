//! Depthwise conv: one group of 4 channels over one output row per call.

use core::arch::asm;

use super::{ChannelRq, sxtb16, sxtb16_ror8};
use crate::Problem;

/// Depthwise conv of one group of 4 channels over one output row, from a "strip": a ring of
/// `kh` rows holding the group's 4 channels of the kernel's input rows, one word per input pixel,
/// padded with the zero point to the full padded width. Built once per channel group: one tap
/// table per rotation of the ring (each tap's byte offset in the strip and the group's weights
/// widened to even/odd int16 words), plus the requantization constants.
#[repr(C)]
pub(crate) struct DwRow<'s> {
    bias: [i32; 4],
    /// Per channel: multiplier, shifts, mask (see [`ChannelRq`]).
    rq: [[u32; 3]; 4],
    zp: i32,
    /// Clamp bounds in each byte.
    min4: u32,
    max4: u32,
    offset: u32,
    table: *const u32,
    table_end: *const u32,
    /// Bytes between two output pixels in the strip (stride * 4).
    in_step: u32,
    /// Bytes between two output pixels in the output (channels).
    out_step: u32,
    /// Last tap's byte offset in the strip: bounds every load.
    reach: u32,
    /// Non-zero when the tap count is a multiple of 3 (the loop then runs 3 taps per turn).
    by3: u32,
    /// The `kh` tap tables, rotation after rotation.
    tables: *const u32,
    /// Words of one tap table.
    table_words: u32,
    rotations: u32,
    _table: core::marker::PhantomData<&'s [u32]>,
}

impl<'s> DwRow<'s> {
    /// `table` receives `kh` tables of 3 words per tap; `weights` are `[kh, kw, c]`; `strip_w` is
    /// the padded input width; `quant` gives, per channel of the group, (bias, multiplier >= 0,
    /// shift). Rotation 0 is selected. `Err(ScratchTooSmall)` when `table` is shorter than that,
    /// `Err(BadParameter)` for an empty kernel.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn new(
        table: &'s mut [u32],
        weights: &[i8],
        (kh, kw, c, ch): (usize, usize, usize, usize),
        strip_w: usize,
        stride: usize,
        quant: [(i32, i32, i32); 4],
        (zp, min, max): (i32, i8, i8),
        offset: u32,
    ) -> Result<Self, Problem> {
        let Some(kw_nz) = core::num::NonZeroUsize::new(kw).filter(|_| kh != 0) else {
            return Err(Problem::BadParameter);
        };
        let taps = kh * kw;
        // Non-zero (a wrapped product would only fail the scratch check below).
        let words = (3 * taps).max(1);
        let table = table
            .get_mut(..kh * words)
            .ok_or(Problem::ScratchTooSmall)?;
        for (r, rotation) in table.chunks_exact_mut(words).enumerate() {
            for (t, e) in rotation.chunks_exact_mut(3).enumerate() {
                let (ky, kx) = (t / kw_nz, t % kw_nz);
                // Kernel row ky sits in ring row (r + ky) % kh (r, ky < kh: one subtraction).
                let ring = if r + ky >= kh { r + ky - kh } else { r + ky };
                // Weights past the end (never: `DepthwiseParams::check`) widen as zeros.
                let w = weights
                    .get(t * c + ch..)
                    .and_then(|w| w.first_chunk::<4>())
                    .map_or(0, |w| u32::from_le_bytes(w.map(|v| v as u8)));
                e[0] = ((ring * strip_w + kx) * 4) as u32;
                e[1] = sxtb16(w);
                e[2] = sxtb16_ror8(w);
            }
        }
        let rq = quant.map(|(_, m, s)| {
            let r = ChannelRq::new(m, s);
            [r.multiplier as u32, r.shifts, r.mask]
        });
        Ok(DwRow {
            bias: quant.map(|(b, _, _)| b),
            rq,
            zp,
            min4: (min as u8 as u32) * 0x0101_0101,
            max4: (max as u8 as u32) * 0x0101_0101,
            offset,
            table: table.as_ptr(),
            // Rotation 0's end: inside `table` (kh >= 1 rotations).
            table_end: table.as_ptr().wrapping_add(words),
            in_step: (stride * 4) as u32,
            out_step: c as u32,
            reach: (((kh - 1) * strip_w + kw - 1) * 4) as u32,
            by3: (taps % 3 == 0) as u32,
            tables: table.as_ptr(),
            table_words: words as u32,
            rotations: kh as u32,
            _table: core::marker::PhantomData,
        })
    }

    /// Selects the tap table for a ring whose row `first_row` holds kernel row 0.
    pub(crate) fn rotate(&mut self, first_row: usize) {
        // rotations = kh >= 1 (`new`); checked_rem has no panic path.
        let r = first_row.checked_rem(self.rotations as usize).unwrap_or(0);
        let words = self.table_words as usize;
        // Inside the tables built by `new` (r < rotations).
        self.table = self.tables.wrapping_add(r * words);
        self.table_end = self.tables.wrapping_add((r + 1) * words);
    }

    /// Computes `count` output pixels: pixel `i` reads the strip from word `first + i * stride`
    /// and writes 4 bytes at `out[i * channels..]`. `Err(BadLength)` (and nothing written) when
    /// `strip` or `out` is shorter than that.
    #[inline(never)]
    pub(crate) fn run(
        &self,
        strip: &[u32],
        first: usize,
        count: usize,
        out: &mut [i8],
    ) -> Result<(), Problem> {
        if count == 0 {
            return Ok(());
        }
        // A pixel's window starts one word past the previous one or more (in_step >= 4), so
        // count <= strip.len() < 2^30 (32-bit memory): the u64 sums below cannot overflow.
        if count > strip.len() {
            return Err(Problem::BadLength);
        }
        let span = |step: u32| (count - 1) as u64 * step as u64;
        let last_in = span(self.in_step) + first as u64 * 4 + self.reach as u64 + 4;
        let last_out = span(self.out_step) + 4;
        if !(last_in <= strip.len() as u64 * 4 && last_out <= out.len() as u64) {
            return Err(Problem::BadLength);
        }
        // Inside `strip` by the check.
        let base = strip.as_ptr().wrapping_add(first);
        // SAFETY: every strip load is at most `reach` bytes past a pixel's first word, inside
        // `strip` by the check above; every output store writes 4 bytes inside `out`; the table
        // and `self` are borrowed for the call; the stack frame is released before the end.
        unsafe {
            asm!(
                "sub sp, #16",
                "str r0, [sp, #0]",
                "str r4, [sp, #4]",
                "str r5, [sp, #8]",
                "1:",
                "ldr r3, [sp, #0]",
                "ldm r3, {{r9, r10, r11, r12}}",
                "ldr r2, [r3, #76]",
                "ldr r0, [r3, #80]",
                "ldr lr, [r3, #84]",
                "ldr r3, [r3, #100]",
                "cmp r3, #0",
                "beq 4f",
                "2:",
                "ldm r0!, {{r3, r4, r5}}",
                "ldr r3, [r1, r3]",
                "sxtab16 r8, r2, r3, ror #8",
                "sxtab16 r3, r2, r3",
                "smlabb r9, r3, r4, r9",
                "smlatt r11, r3, r4, r11",
                "smlabb r10, r8, r5, r10",
                "smlatt r12, r8, r5, r12",
                "ldm r0!, {{r3, r4, r5}}",
                "ldr r3, [r1, r3]",
                "sxtab16 r8, r2, r3, ror #8",
                "sxtab16 r3, r2, r3",
                "smlabb r9, r3, r4, r9",
                "smlatt r11, r3, r4, r11",
                "smlabb r10, r8, r5, r10",
                "smlatt r12, r8, r5, r12",
                "ldm r0!, {{r3, r4, r5}}",
                "ldr r3, [r1, r3]",
                "sxtab16 r8, r2, r3, ror #8",
                "sxtab16 r3, r2, r3",
                "smlabb r9, r3, r4, r9",
                "smlatt r11, r3, r4, r11",
                "smlabb r10, r8, r5, r10",
                "smlatt r12, r8, r5, r12",
                "cmp r0, lr",
                "bne 2b",
                "b 5f",
                "4:",
                "ldm r0!, {{r3, r4, r5}}",
                "ldr r3, [r1, r3]",
                "sxtab16 r8, r2, r3, ror #8",
                "sxtab16 r3, r2, r3",
                "smlabb r9, r3, r4, r9",
                "smlatt r11, r3, r4, r11",
                "smlabb r10, r8, r5, r10",
                "smlatt r12, r8, r5, r12",
                "cmp r0, lr",
                "bne 4b",
                "5:",
                "ldr lr, [sp, #0]",
                "ldr r2, [lr, #64]",
                "add lr, lr, #16",
                requant!("r9"),
                requant!("r10"),
                requant!("r11"),
                requant!("r12"),
                "and r9, r9, #0xff",
                "and r10, r10, #0xff",
                "orr r9, r9, r10, lsl #8",
                "and r11, r11, #0xff",
                "orr r9, r9, r11, lsl #16",
                "orr r9, r9, r12, lsl #24",
                "ldr r3, [lr, #4]",
                "ssub8 r0, r9, r3",
                "sel r9, r9, r3",
                "ldr r3, [lr, #8]",
                "ssub8 r0, r9, r3",
                "sel r9, r3, r9",
                "ldr r0, [sp, #4]",
                "str r9, [r0]",
                "ldr r3, [lr, #28]",
                "add r0, r0, r3",
                "str r0, [sp, #4]",
                "ldr r3, [lr, #24]",
                "add r1, r1, r3",
                "ldr r0, [sp, #8]",
                "subs r0, r0, #1",
                "str r0, [sp, #8]",
                "bne 1b",
                "add sp, #16",
                inout("r0") self as *const Self => _,
                inout("r1") base => _,
                out("r2") _, out("r3") _,
                inout("r4") out.as_mut_ptr() => _,
                inout("r5") count => _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _, out("r12") _, out("lr") _,
            );
        }
        Ok(())
    }
}
