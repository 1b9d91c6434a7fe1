//! Channels-first to channels-last: the copy that lets the dense convolution read each pixel's
//! channels as one run. Eight pixels by sixteen channels (then eight) at a time with NEON on aarch64;
//! on x86-64, 32 or 16 pixels by sixteen channels with AVX2, eight by eight with SSE2 (byte
//! transposes in registers); three channels (an RGB input) by interleaving stores (NEON's ST3) or
//! byte shuffles (PSHUFB); element by element elsewhere.

/// Copies `src` into `dst` (at most 32 bytes, `src` at least as long) with two overlapping fixed-size
/// copies, where `copy_from_slice` would call the C library's `memcpy`: the kernels copy a block's
/// last few pixels of each channel this way (on MobileNetV2, tens of thousands of calls per image).
#[inline(always)]
pub fn copy_short(dst: &mut [i8], src: &[i8]) {
    let n = dst.len();
    assert!(n <= 32 && src.len() >= n, "copy_short: {n} bytes from {}", src.len());
    macro_rules! halves {
        ($k:literal) => {{
            dst[..$k].copy_from_slice(&src[..$k]);
            dst[n - $k..].copy_from_slice(&src[n - $k..n]);
        }};
    }
    match n {
        16.. => halves!(16),
        8..16 => halves!(8),
        4..8 => halves!(4),
        _ => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
        }
    }
}

/// Copies row `row` of every channel plane of `x` (`[c][h][w]`) into `out`, where pixel `col` of the
/// row starts at `out[at + col * c]` (channels contiguous).
///
/// # Panics
/// When `x` does not hold `c` planes of `h` rows of `w`, or `out` is too short.
pub fn row_to_channels_last(x: &[i8], c: usize, h: usize, w: usize, row: usize, out: &mut [i8], at: usize) {
    assert!(x.len() >= c * h * w && row < h && (w == 0 || out.len() >= at + w * c), "transpose out of bounds");
    // SAFETY: bounds asserted above; NEON is architectural on aarch64, SSE2 on x86-64.
    #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
    let done = match c {
        _ if c != 0 && c.is_multiple_of(8) => unsafe { simd_row(x, c, h, w, row, out, at) },
        3 => unsafe { rgb_row(x, h, w, row, out, at) },
        _ => 0,
    };
    // SAFETY: bounds asserted above; `Isa::Armv7Neon` is only chosen where the CPU has NEON.
    #[cfg(target_arch = "arm")]
    let done = if c != 0 && c.is_multiple_of(8) && super::Isa::best() == super::Isa::Armv7Neon { unsafe { simd_row(x, c, h, w, row, out, at) } } else { 0 };
    #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64", target_arch = "arm")))]
    let done = 0;
    let plane = h * w;
    if c == 0 || done == w {
        return;
    }
    // One channel at a time along the row, into every pixel's slot.
    for ci in 0..c {
        let src = &x[ci * plane + row * w + done..][..w - done];
        for (pixel, &v) in out[at + done * c..at + w * c].chunks_exact_mut(c).zip(src) {
            pixel[ci] = v;
        }
    }
}

/// Three channels: 16 pixels at a time; returns how many pixels.
///
/// # Safety
/// [`row_to_channels_last`]'s bounds with `c == 3`.
#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
unsafe fn rgb_row(x: &[i8], h: usize, w: usize, row: usize, out: &mut [i8], at: usize) -> usize {
    let plane = h * w;
    let (src, dst) = (x.as_ptr().wrapping_add(row * w), out.as_mut_ptr().wrapping_add(at));
    let mut col = 0;
    #[cfg(target_arch = "aarch64")]
    // SAFETY: 16 bytes of each plane's row from `col` (col + 16 <= w), 48 bytes of `out` from pixel
    // `col`; NEON is architectural on aarch64.
    unsafe {
        use std::arch::aarch64::*;
        while col + 16 <= w {
            let rgb = int8x16x3_t(vld1q_s8(src.add(col)), vld1q_s8(src.add(plane + col)), vld1q_s8(src.add(2 * plane + col)));
            vst3q_s8(dst.add(3 * col), rgb);
            col += 16;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: as above; SSSE3 detected.
        col = unsafe { x86::rgb(src, plane, w, dst) };
    }
    col
}

/// The row's pixels (all of them, or none when a narrow row's 8-byte reads would leave `x`) by 8x8
/// blocks; returns how many.
///
/// # Safety
/// `c % 8 == 0` and [`row_to_channels_last`]'s bounds.
#[cfg(any(target_arch = "aarch64", target_arch = "x86_64", target_arch = "arm"))]
unsafe fn simd_row(x: &[i8], c: usize, h: usize, w: usize, row: usize, out: &mut [i8], at: usize) -> usize {
    #[cfg(target_arch = "aarch64")]
    use aarch64::block;
    #[cfg(target_arch = "x86_64")]
    use x86::block;
    #[cfg(target_arch = "arm")]
    use arm::block;
    unsafe {
        // x86-64 with AVX2: 32 pixels by 16 channels at a time first.
        #[cfg(target_arch = "x86_64")]
        let start = x86::wide(x, c, h, w, row, out, at);
        #[cfg(not(target_arch = "x86_64"))]
        let start = 0;
        if w >= 8 {
            let mut col = start;
            while col + 8 <= w {
                block(x, c, h, w, row, out, at, col, 8);
                col += 8;
            }
            if col < w {
                // The last 8 pixels again, overlapping the previous block: same bytes.
                block(x, c, h, w, row, out, at, w - 8, 8);
            }
            w
        } else if ((c - 1) * h + row) * w + 8 <= x.len() {
            // A narrow row: 8 bytes read (the rest of the plane, or the next), `w` written.
            block(x, c, h, w, row, out, at, 0, w);
            w
        } else {
            0
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(super) use aarch64::transpose_8x8;

#[cfg(target_arch = "aarch64")]
mod aarch64 {
    use std::arch::aarch64::*;

    /// Eight rows of eight bytes, transposed: bytes, then halves, then words (TRN1/TRN2 pairs).
    #[inline(always)]
    pub fn transpose_8x8(r: [int8x8_t; 8]) -> [int8x8_t; 8] {
        // SAFETY: NEON is architectural on aarch64.
        unsafe {
            let a01 = vtrn_s8(r[0], r[1]);
            let a23 = vtrn_s8(r[2], r[3]);
            let a45 = vtrn_s8(r[4], r[5]);
            let a67 = vtrn_s8(r[6], r[7]);
            let h = |v: int8x8_t| vreinterpret_s16_s8(v);
            let b02 = vtrn_s16(h(a01.0), h(a23.0));
            let b13 = vtrn_s16(h(a01.1), h(a23.1));
            let b46 = vtrn_s16(h(a45.0), h(a67.0));
            let b57 = vtrn_s16(h(a45.1), h(a67.1));
            let s = |v: int16x4_t| vreinterpret_s32_s16(v);
            let c04 = vtrn_s32(s(b02.0), s(b46.0));
            let c15 = vtrn_s32(s(b13.0), s(b57.0));
            let c26 = vtrn_s32(s(b02.1), s(b46.1));
            let c37 = vtrn_s32(s(b13.1), s(b57.1));
            [c04.0, c15.0, c26.0, c37.0, c04.1, c15.1, c26.1, c37.1].map(|v| vreinterpret_s8_s32(v))
        }
    }

    /// [`transpose_8x8`] on both halves of eight 16-byte rows at once.
    #[inline(always)]
    fn transpose_8x8_pairs(r: [int8x16_t; 8]) -> [int8x16_t; 8] {
        // SAFETY: NEON is architectural on aarch64.
        unsafe {
            let a01 = (vtrn1q_s8(r[0], r[1]), vtrn2q_s8(r[0], r[1]));
            let a23 = (vtrn1q_s8(r[2], r[3]), vtrn2q_s8(r[2], r[3]));
            let a45 = (vtrn1q_s8(r[4], r[5]), vtrn2q_s8(r[4], r[5]));
            let a67 = (vtrn1q_s8(r[6], r[7]), vtrn2q_s8(r[6], r[7]));
            let h = |v: int8x16_t| vreinterpretq_s16_s8(v);
            let t16 = |a: int8x16_t, b: int8x16_t| (vtrn1q_s16(h(a), h(b)), vtrn2q_s16(h(a), h(b)));
            let b02 = t16(a01.0, a23.0);
            let b13 = t16(a01.1, a23.1);
            let b46 = t16(a45.0, a67.0);
            let b57 = t16(a45.1, a67.1);
            let s = |v: int16x8_t| vreinterpretq_s32_s16(v);
            let t32 = |a: int16x8_t, b: int16x8_t| (vtrn1q_s32(s(a), s(b)), vtrn2q_s32(s(a), s(b)));
            let c04 = t32(b02.0, b46.0);
            let c15 = t32(b13.0, b57.0);
            let c26 = t32(b02.1, b46.1);
            let c37 = t32(b13.1, b57.1);
            [c04.0, c15.0, c26.0, c37.0, c04.1, c15.1, c26.1, c37.1].map(|v| vreinterpretq_s8_s32(v))
        }
    }

    /// Pixels `col..col + count` (`count <= 8`) of the row, 8 channels at a time, reading 8 bytes
    /// from each channel's row at `col`.
    ///
    /// # Safety
    /// `c % 8 == 0`; every channel's 8 bytes from `col` lie in `x`; pixels up to `col + count` in `out`.
    /// (NEON is architectural on aarch64: no `target_feature`, so that it inlines into the row's loop
    /// and the channels' addresses are computed once per row.)
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub unsafe fn block(x: &[i8], c: usize, h: usize, w: usize, row: usize, out: &mut [i8], at: usize, col: usize, count: usize) {
        unsafe {
            let (src, dst) = (x.as_ptr(), out.as_mut_ptr().add(at));
            let plane = h * w;
            let mut c0 = 0;
            // Sixteen channels at a time: channel i + 8's bytes in the high half of channel i's
            // register, both 8x8 transposes in one pass of 128-bit TRNs, 16-byte stores.
            while c0 + 16 <= c {
                let from = src.add((c0 * h + row) * w + col);
                let r: [int8x16_t; 8] = std::array::from_fn(|i| {
                    let low = vld1_s8(from.add(i * plane));
                    let high = std::ptr::read_unaligned(from.add((i + 8) * plane) as *const i64);
                    vreinterpretq_s8_s64(vsetq_lane_s64::<1>(high, vreinterpretq_s64_s8(vcombine_s8(low, low))))
                });
                for (m, p) in transpose_8x8_pairs(r).iter().enumerate().take(count) {
                    vst1q_s8(dst.add((col + m) * c + c0), *p);
                }
                c0 += 16;
            }
            for c0 in (c0..c).step_by(8) {
                let r: [int8x8_t; 8] = std::array::from_fn(|i| vld1_s8(src.add(((c0 + i) * h + row) * w + col)));
                let pixels = transpose_8x8(r);
                for (m, p) in pixels.iter().enumerate().take(count) {
                    vst1_s8(dst.add((col + m) * c + c0), *p);
                }
            }
        }
    }
}

#[cfg(target_arch = "arm")]
mod arm {
    /// Pixels `col..col + count` (`count <= 8`) of the row, 8 channels at a time: eight 8-byte
    /// loads (one per channel, `plane` apart), the 8x8 byte transpose in registers (VTRN of bytes,
    /// halves, then words: pixel `m` ends in d`m`), eight 8-byte stores `c` apart. Inline
    /// assembly, as [`super::super::micro`]'s 32-bit kernels (no stable NEON intrinsics there); a
    /// short block is stored into a buffer first and its pixels copied from there.
    ///
    /// # Safety
    /// `c % 8 == 0`; every channel's 8 bytes from `col` lie in `x`; pixels up to `col + count` in
    /// `out`; the CPU has NEON.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub unsafe fn block(x: &[i8], c: usize, h: usize, w: usize, row: usize, out: &mut [i8], at: usize, col: usize, count: usize) {
        let plane = h * w;
        let mut buf = [[0i8; 8]; 8];
        for c0 in (0..c).step_by(8) {
            // SAFETY: the caller's contract: 8 bytes of each of the 8 channels' rows from `col`; 8
            // bytes at each of the 8 pixels' channel `c0`, or `buf`'s 8 rows of 8.
            unsafe {
                let from = x.as_ptr().add((c0 * h + row) * w + col);
                let (to, stride) = if count == 8 { (out.as_mut_ptr().add(at + col * c + c0), c) } else { (buf.as_mut_ptr().cast::<i8>(), 8) };
                std::arch::asm!(
                    ".fpu neon",
                    "vld1.8 {{d0}}, [{from}], {plane}",
                    "vld1.8 {{d1}}, [{from}], {plane}",
                    "vld1.8 {{d2}}, [{from}], {plane}",
                    "vld1.8 {{d3}}, [{from}], {plane}",
                    "vld1.8 {{d4}}, [{from}], {plane}",
                    "vld1.8 {{d5}}, [{from}], {plane}",
                    "vld1.8 {{d6}}, [{from}], {plane}",
                    "vld1.8 {{d7}}, [{from}]",
                    "vtrn.8 d0, d1",
                    "vtrn.8 d2, d3",
                    "vtrn.8 d4, d5",
                    "vtrn.8 d6, d7",
                    "vtrn.16 d0, d2",
                    "vtrn.16 d1, d3",
                    "vtrn.16 d4, d6",
                    "vtrn.16 d5, d7",
                    "vtrn.32 d0, d4",
                    "vtrn.32 d1, d5",
                    "vtrn.32 d2, d6",
                    "vtrn.32 d3, d7",
                    "vst1.8 {{d0}}, [{to}], {stride}",
                    "vst1.8 {{d1}}, [{to}], {stride}",
                    "vst1.8 {{d2}}, [{to}], {stride}",
                    "vst1.8 {{d3}}, [{to}], {stride}",
                    "vst1.8 {{d4}}, [{to}], {stride}",
                    "vst1.8 {{d5}}, [{to}], {stride}",
                    "vst1.8 {{d6}}, [{to}], {stride}",
                    "vst1.8 {{d7}}, [{to}]",
                    from = inout(reg) from => _,
                    plane = in(reg) plane,
                    to = inout(reg) to => _,
                    stride = in(reg) stride,
                    out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                    options(nostack),
                );
                if count < 8 {
                    for (m, px) in buf.iter().enumerate().take(count) {
                        std::ptr::copy_nonoverlapping(px.as_ptr(), out.as_mut_ptr().add(at + (col + m) * c + c0), 8);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// PSHUFB masks: output vector `k` (bytes `16k..16k + 16` of 16 interleaved pixels) takes from
    /// channel `ch` the bytes of the pixels whose channel `ch` falls there (-128: zero).
    const RGB: [[[i8; 16]; 3]; 3] = {
        let mut masks = [[[-128i8; 16]; 3]; 3];
        let mut g = 0;
        while g < 48 {
            masks[g / 16][g % 3][g % 16] = (g / 3) as i8;
            g += 1;
        }
        masks
    };

    /// Three planes' rows (`plane` bytes apart from `src`) interleaved into pixels at `dst`, 16
    /// pixels at a time (9 PSHUFB); returns how many pixels.
    ///
    /// # Safety
    /// `src + ch * plane` readable for `w` bytes for ch < 3, `dst` writable for `3 * w`; the CPU has
    /// SSSE3.
    #[target_feature(enable = "ssse3")]
    pub unsafe fn rgb(src: *const i8, plane: usize, w: usize, dst: *mut i8) -> usize {
        unsafe {
            let masks = RGB.map(|k| k.map(|m| _mm_loadu_si128(m.as_ptr() as *const __m128i)));
            let mut col = 0;
            while col + 16 <= w {
                let v = [0, 1, 2].map(|ch| _mm_loadu_si128(src.add(ch * plane + col) as *const __m128i));
                for (k, m) in masks.iter().enumerate() {
                    let o = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(v[0], m[0]), _mm_shuffle_epi8(v[1], m[1])), _mm_shuffle_epi8(v[2], m[2]));
                    _mm_storeu_si128(dst.add(3 * col + 16 * k) as *mut __m128i, o);
                }
                col += 16;
            }
            col
        }
    }

    /// As the NEON block: bytes, then 16-bit pairs, then 32-bit quads interleaved (SSE2, which every
    /// x86-64 CPU has), two pixels per register.
    ///
    /// # Safety
    /// As the NEON block's.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub unsafe fn block(x: &[i8], c: usize, h: usize, w: usize, row: usize, out: &mut [i8], at: usize, col: usize, count: usize) {
        unsafe { block_from(x, c, h, w, row, out, at, col, count, 0) }
    }

    /// [`block`] from channel `from` (a multiple of 8).
    ///
    /// # Safety
    /// As [`block`]'s.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn block_from(x: &[i8], c: usize, h: usize, w: usize, row: usize, out: &mut [i8], at: usize, col: usize, count: usize, from: usize) {
        unsafe {
            let (src, dst) = (x.as_ptr(), out.as_mut_ptr().add(at));
            for c0 in (from..c).step_by(8) {
                let r: [__m128i; 8] = std::array::from_fn(|i| _mm_loadl_epi64(src.add(((c0 + i) * h + row) * w + col) as *const __m128i));
                let a = [0, 2, 4, 6].map(|i| _mm_unpacklo_epi8(r[i], r[i + 1]));
                let b = [_mm_unpacklo_epi16(a[0], a[1]), _mm_unpackhi_epi16(a[0], a[1]), _mm_unpacklo_epi16(a[2], a[3]), _mm_unpackhi_epi16(a[2], a[3])];
                // Pixels (0, 1), (2, 3), (4, 5), (6, 7).
                let pairs = [_mm_unpacklo_epi32(b[0], b[2]), _mm_unpackhi_epi32(b[0], b[2]), _mm_unpacklo_epi32(b[1], b[3]), _mm_unpackhi_epi32(b[1], b[3])];
                for m in 0..count {
                    let p = pairs[m / 2];
                    let p = if m % 2 == 0 { p } else { _mm_srli_si128::<8>(p) };
                    _mm_storel_epi64(dst.add((col + m) * c + c0) as *mut __m128i, p);
                }
            }
        }
    }

    /// The whole row, where the CPU has AVX2 and the row has 16 pixels or more, sixteen channels at
    /// a time: 32 pixels as two 16x16 byte transposes side by side in the 128-bit halves (four
    /// rounds of VPUNPCKLBW/VPUNPCKHBW pairing rows `i` and `i + 8` into `2i` and `2i + 1`), the rest
    /// by 16 pixels (the same in one half; the last block overlapping the previous one, writing the
    /// same bytes); a last 8 channels by [`block_from`]. Returns how many pixels it did: `w`, or 0.
    ///
    /// # Safety
    /// `c % 8 == 0` and [`super::row_to_channels_last`]'s bounds.
    pub unsafe fn wide(x: &[i8], c: usize, h: usize, w: usize, row: usize, out: &mut [i8], at: usize) -> usize {
        if c < 16 || w < 16 || !std::arch::is_x86_feature_detected!("avx2") {
            return 0;
        }
        // SAFETY: the caller's bounds; AVX2 detected above.
        unsafe { wide_avx2(x, c, h, w, row, out, at) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn wide_avx2(x: &[i8], c: usize, h: usize, w: usize, row: usize, out: &mut [i8], at: usize) -> usize {
        unsafe {
            let (src, dst, plane) = (x.as_ptr(), out.as_mut_ptr().add(at), h * w);
            let wide = w / 32 * 32;
            // Written out: with `array::from_fn` LLVM keeps a loop over the array in memory.
            macro_rules! transpose {
                ($r:ident, $lo:ident, $hi:ident) => {
                    for _ in 0..4 {
                        $r = [
                            $lo($r[0], $r[8]), $hi($r[0], $r[8]), $lo($r[1], $r[9]), $hi($r[1], $r[9]),
                            $lo($r[2], $r[10]), $hi($r[2], $r[10]), $lo($r[3], $r[11]), $hi($r[3], $r[11]),
                            $lo($r[4], $r[12]), $hi($r[4], $r[12]), $lo($r[5], $r[13]), $hi($r[5], $r[13]),
                            $lo($r[6], $r[14]), $hi($r[6], $r[14]), $lo($r[7], $r[15]), $hi($r[7], $r[15]),
                        ];
                    }
                };
            }
            // Channel groups outside, pixels inside: 16 planes read as 16 sequential streams (with
            // the pixels outside, a row of 96 channels was 96 streams, beyond what the hardware
            // prefetches); the row's output is small enough to stay in cache across the groups.
            let mut c0 = 0;
            while c0 + 16 <= c {
                let from = src.add((c0 * h + row) * w);
                for col in (0..wide).step_by(32) {
                    let mut r: [__m256i; 16] = std::array::from_fn(|i| _mm256_loadu_si256(from.add(i * plane + col) as *const __m256i));
                    transpose!(r, _mm256_unpacklo_epi8, _mm256_unpackhi_epi8);
                    for (m, v) in r.iter().enumerate() {
                        _mm_storeu_si128(dst.add((col + m) * c + c0) as *mut __m128i, _mm256_castsi256_si128(*v));
                        _mm_storeu_si128(dst.add((col + 16 + m) * c + c0) as *mut __m128i, _mm256_extracti128_si256::<1>(*v));
                    }
                }
                let mut col = wide;
                while col < w {
                    // The last block ends at the row's end.
                    let at = col.min(w - 16);
                    let mut r: [__m128i; 16] = std::array::from_fn(|i| _mm_loadu_si128(from.add(i * plane + at) as *const __m128i));
                    transpose!(r, _mm_unpacklo_epi8, _mm_unpackhi_epi8);
                    for (m, v) in r.iter().enumerate() {
                        _mm_storeu_si128(dst.add((at + m) * c + c0) as *mut __m128i, *v);
                    }
                    col += 16;
                }
                c0 += 16;
            }
            if c0 < c {
                let mut col = 0;
                while col < w {
                    block_from(x, c, h, w, row, out, at, col.min(w - 8), 8, c0);
                    col += 8;
                }
            }
            w
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_layout_matches_element_by_element(c in 1usize..50, h in 1usize..5, w in 0usize..80, seed in any::<u8>()) {
            let x: Vec<i8> = (0..c * h * w).map(|i| (i as u8).wrapping_mul(seed | 1) as i8).collect();
            for row in 0..h {
                let mut out = vec![0i8; 3 + w * c];
                row_to_channels_last(&x, c, h, w, row, &mut out, 3);
                for ci in 0..c {
                    for col in 0..w {
                        prop_assert_eq!(out[3 + col * c + ci], x[(ci * h + row) * w + col]);
                    }
                }
            }
        }
    }
}
