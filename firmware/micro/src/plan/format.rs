//! Byte layout of a `.pmc` plan (see the crate README for the table): offsets, sizes, op kinds.

/// First 4 bytes of every plan.
pub const MAGIC: [u8; 4] = *b"PMC\0";
/// The format version this crate reads and writes.
pub const FORMAT_VERSION: u16 = 1;

pub const HEADER_LEN: usize = 64;
pub const TENSOR_RECORD_LEN: usize = 32;
pub const OP_RECORD_LEN: usize = 64;
/// Alignment of every section and of every constant blob, in bytes.
pub const ALIGN: usize = 4;
/// Marks an unused op input.
pub const NO_TENSOR: u16 = 0xFFFF;

// Header field offsets.
pub(crate) const H_MAGIC: usize = 0;
pub(crate) const H_VERSION: usize = 4;
pub(crate) const H_HEADER_LEN: usize = 6;
pub(crate) const H_TOTAL_LEN: usize = 8;
pub(crate) const H_CRC: usize = 12;
/// The CRC covers every byte from here to the end of the plan.
pub(crate) const CRC_START: usize = 16;
pub(crate) const H_ARENA_SIZE: usize = 16;
pub(crate) const H_SCRATCH_OFFSET: usize = 20;
pub(crate) const H_SCRATCH_SIZE: usize = 24;
pub(crate) const H_TENSOR_COUNT: usize = 28;
pub(crate) const H_OP_COUNT: usize = 30;
pub(crate) const H_INPUT: usize = 32;
pub(crate) const H_OUTPUT: usize = 34;
pub(crate) const H_LABEL_COUNT: usize = 36;
pub(crate) const H_TENSORS_OFFSET: usize = 40;
pub(crate) const H_OPS_OFFSET: usize = 44;
pub(crate) const H_CONST_OFFSET: usize = 48;
pub(crate) const H_CONST_LEN: usize = 52;
pub(crate) const H_RESERVED: usize = 56;

// Tensor record field offsets.
pub(crate) const T_DIMS: usize = 0; // 4 x u16: N, H, W, C
pub(crate) const T_SCALE: usize = 8; // f32 bits
pub(crate) const T_ZERO_POINT: usize = 12; // i32
pub(crate) const T_OFFSET: usize = 16; // u32, in the arena
pub(crate) const T_SIZE: usize = 20; // u32, bytes
pub(crate) const T_RESERVED: usize = 24; // 8 bytes of zeros

// Op record field offsets.
pub(crate) const O_KIND: usize = 0;
pub(crate) const O_RESERVED: usize = 2;
pub(crate) const O_INPUT0: usize = 4;
pub(crate) const O_INPUT1: usize = 6;
pub(crate) const O_OUTPUT: usize = 8;
pub(crate) const O_RESERVED2: usize = 10;
pub(crate) const O_WINDOW: usize = 12; // 8 x u16: kh, kw, sh, sw, pad top, left, bottom, right
pub(crate) const O_CLAMP_MIN: usize = 28; // i8
pub(crate) const O_CLAMP_MAX: usize = 29; // i8
pub(crate) const O_DEPTH_MULTIPLIER: usize = 30; // u16
pub(crate) const O_CONST0: usize = 32; // 4 x (u32 offset, u32 length) into the constant section
pub(crate) const O_INTS: usize = 32; // or 8 x i32 inline

/// Op kinds, the `u16` at the start of an op record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
#[non_exhaustive]
pub enum OpKind {
    Conv2d = 1,
    DepthwiseConv2d = 2,
    FullyConnected = 3,
    MaxPool = 4,
    AveragePool = 5,
    GlobalAveragePool = 6,
    Add = 7,
    Lookup = 8,
    Reshape = 9,
    Softmax = 10,
}

impl OpKind {
    pub fn from_u16(v: u16) -> Option<Self> {
        use OpKind::*;
        Some(match v {
            1 => Conv2d,
            2 => DepthwiseConv2d,
            3 => FullyConnected,
            4 => MaxPool,
            5 => AveragePool,
            6 => GlobalAveragePool,
            7 => Add,
            8 => Lookup,
            9 => Reshape,
            10 => Softmax,
            _ => return None,
        })
    }
}

#[inline]
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn i32_at(b: &[u8], at: usize) -> i32 {
    u32_at(b, at) as i32
}
