//! Reinterpretations between byte types: the only `unsafe` outside the DSP module.

/// Plan bytes as int8 weights or tables.
pub(crate) fn bytes_as_i8(b: &[u8]) -> &[i8] {
    // SAFETY: u8 and i8 have the same size, alignment and validity (every bit pattern is valid).
    unsafe { core::slice::from_raw_parts(b.as_ptr().cast::<i8>(), b.len()) }
}

/// The caller's arena as int8 activations.
pub(crate) fn bytes_as_i8_mut(b: &mut [u8]) -> &mut [i8] {
    // SAFETY: as above; the exclusive borrow moves into the result.
    unsafe { core::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<i8>(), b.len()) }
}

/// The aligned words inside a byte region (a scratch area carries 3 bytes of slack for this).
pub(crate) fn aligned_words_mut(b: &mut [i8]) -> &mut [u32] {
    // SAFETY: every bit pattern is a valid u32; align_to_mut only returns the correctly aligned
    // middle part.
    unsafe { b.align_to_mut::<u32>().1 }
}

/// Words as their bytes in memory order (host-side aligned buffers).
#[cfg(feature = "std")]
pub(crate) fn words_as_bytes(w: &[u32]) -> &[u8] {
    // SAFETY: u8 has alignment 1 and every bit pattern is valid; the length covers the same memory.
    unsafe { core::slice::from_raw_parts(w.as_ptr().cast::<u8>(), w.len() * 4) }
}

#[cfg(feature = "std")]
pub(crate) fn words_as_bytes_mut(w: &mut [u32]) -> &mut [u8] {
    // SAFETY: as above; the exclusive borrow moves into the result.
    unsafe { core::slice::from_raw_parts_mut(w.as_mut_ptr().cast::<u8>(), w.len() * 4) }
}
