//! The crate's errors: small `Copy` enums, so firmware can log or match them without allocation.

use core::fmt;

/// What went wrong with a plan, a run or a kernel call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes end before the header or before the length the header states.
    Truncated,
    /// The plan does not start with the `.pmc` magic.
    BadMagic,
    /// A format version this runtime cannot read.
    UnsupportedVersion(u16),
    /// The header's own fields are inconsistent (header length, counts, section layout).
    BadHeader,
    /// The CRC-32 stored in the header does not match the bytes.
    Checksum { stored: u32, computed: u32 },
    /// The plan bytes do not start on a 4-byte boundary (embed them aligned).
    Misaligned,
    /// A section lies outside the plan or is not 4-byte aligned.
    SectionOutOfBounds,
    /// Tensor `index` of the tensor table is invalid.
    Tensor { index: u16, problem: Problem },
    /// Op `index` of the op list is invalid for the reason given.
    Op { index: u16, problem: Problem },
    /// The caller's arena is smaller than the plan's.
    ArenaTooSmall { needed: u32, given: u32 },
    /// The input slice does not have the input tensor's length.
    InputSize { expected: u32, given: u32 },
}

/// Why a tensor, an op or a kernel call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// An op kind this runtime does not know.
    UnknownOp(u16),
    /// A tensor id past the tensor table.
    BadTensorId,
    /// Shapes that do not fit together (zero dimension, output size, channel counts, batch != 1).
    BadShape,
    /// A slice, weight or parameter array of the wrong length.
    BadLength,
    /// A zero point outside int8, a negative multiplier, a shift outside `-31..=30`.
    BadQuantization,
    /// An invalid parameter (zero stride, padding not smaller than the kernel, clamp min > max,
    /// bad table, non-zero reserved field).
    BadParameter,
    /// Constant data outside the constant section or misaligned.
    ConstOutOfBounds,
    /// A tensor that does not lie inside the arena (or overlaps the scratch area).
    OutsideArena,
    /// An op whose output overlaps one of its inputs.
    Overlap,
    /// Less scratch than the op needs.
    ScratchTooSmall,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownOp(kind) => write!(f, "unknown op kind {kind}"),
            Problem::BadTensorId => f.write_str("tensor id out of range"),
            Problem::BadShape => f.write_str("shapes do not fit together"),
            Problem::BadLength => f.write_str("wrong length of data or parameters"),
            Problem::BadQuantization => f.write_str("invalid quantization parameters"),
            Problem::BadParameter => f.write_str("invalid parameter"),
            Problem::ConstOutOfBounds => f.write_str("constant data outside the constant section"),
            Problem::OutsideArena => {
                f.write_str("tensor outside the arena or over the scratch area")
            }
            Problem::Overlap => f.write_str("output overlaps an input"),
            Problem::ScratchTooSmall => f.write_str("scratch area too small"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("plan truncated"),
            Error::BadMagic => f.write_str("not a .pmc plan (bad magic)"),
            Error::UnsupportedVersion(v) => {
                write!(
                    f,
                    "plan format version {v}, this runtime reads version {}",
                    crate::plan::FORMAT_VERSION
                )
            }
            Error::BadHeader => f.write_str("inconsistent plan header"),
            Error::Checksum { stored, computed } => {
                write!(
                    f,
                    "plan checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): corrupted"
                )
            }
            Error::Misaligned => f.write_str("plan bytes not 4-byte aligned"),
            Error::SectionOutOfBounds => f.write_str("plan section out of bounds"),
            Error::Tensor { index, problem } => write!(f, "tensor {index}: {problem}"),
            Error::Op { index, problem } => write!(f, "op {index}: {problem}"),
            Error::ArenaTooSmall { needed, given } => {
                write!(f, "arena of {given} bytes, the plan needs {needed}")
            }
            Error::InputSize { expected, given } => {
                write!(f, "input of {given} bytes, the plan expects {expected}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
#[cfg(feature = "std")]
impl std::error::Error for Problem {}
