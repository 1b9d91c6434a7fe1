//! The model built into the firmware: the `.pmc` plan and its test vectors, chosen at build time
//! (`PERCH_PMC`, see build.rs), and constants build.rs read from the plan.

include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// Bytes on a 4-byte boundary, as [`perch_micro::Plan::parse`] requires.
#[repr(C, align(4))]
pub struct Aligned<T: ?Sized>(pub T);

/// The plan, read in place from flash.
pub static PLAN: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/plan.pmc")));

/// The host simulation's test vectors for the plan (`.vectors`; no vectors: a header with count 0).
/// Aligned only to be a symbol of its own in the ELF, whose size `sizes.sh` reports.
pub static VECTORS: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/plan.vectors")));
