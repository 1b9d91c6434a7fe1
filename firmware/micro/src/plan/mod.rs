//! The `.pmc` micro plan: parsed and validated in place, then read by the interpreter without
//! copies. Every check happens in [`Plan::parse`]; a plan that parses runs without a kernel error.

mod format;
#[cfg(feature = "std")]
mod writer;

pub use format::{
    ALIGN, FORMAT_VERSION, HEADER_LEN, MAGIC, NO_TENSOR, OP_RECORD_LEN, OpKind, TENSOR_RECORD_LEN,
};
#[cfg(feature = "std")]
pub use writer::{AlignedBytes, PlanBuilder, TensorDesc, TensorId};

use crate::cast::bytes_as_i8;
use crate::kernels::{
    AddParams, ChannelQuant, Clamp, ConvParams, DepthwiseParams, FullyConnectedParams,
    GlobalPoolParams, I32Le, Padding, PoolParams, Shape, Window,
};
use crate::{Error, Problem};
use format::*;

/// One activation tensor of the plan: int8, NHWC with batch 1, at a fixed place in the arena.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorInfo {
    pub shape: Shape,
    /// Real value = `scale * (q - zero_point)`.
    pub scale: f32,
    pub zero_point: i32,
    /// Byte offset in the arena.
    pub offset: usize,
    /// Bytes, `h * w * c`.
    pub size: usize,
}

impl TensorInfo {
    pub fn range(&self) -> core::ops::Range<usize> {
        self.offset..self.offset + self.size
    }
}

/// One decoded op: which tensors it reads and writes, and its kernel parameters.
#[derive(Clone, Copy, Debug)]
pub struct OpDesc<'a> {
    pub inputs: [u16; 2],
    pub output: u16,
    pub op: Op<'a>,
}

impl OpDesc<'_> {
    /// The op's inputs (one, or two for [`Op::Add`]).
    pub fn input_ids(&self) -> &[u16] {
        if self.inputs[1] == NO_TENSOR {
            &self.inputs[..1]
        } else {
            &self.inputs[..]
        }
    }
}

/// Kernel parameters of an op, borrowing constants from the plan.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Op<'a> {
    Conv2d(ConvParams<'a>),
    DepthwiseConv2d(DepthwiseParams<'a>),
    FullyConnected(FullyConnectedParams<'a>),
    MaxPool(PoolParams),
    AveragePool(PoolParams),
    GlobalAveragePool(GlobalPoolParams),
    Add(AddParams),
    Lookup(&'a [i8; 256]),
    Reshape,
    /// Softmax over rows of `depth` (the last axis), exponential table as in
    /// [`crate::kernels::portable::softmax`].
    Softmax {
        table: I32Le<'a>,
        depth: usize,
    },
}

impl Op<'_> {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Conv2d(_) => OpKind::Conv2d,
            Op::DepthwiseConv2d(_) => OpKind::DepthwiseConv2d,
            Op::FullyConnected(_) => OpKind::FullyConnected,
            Op::MaxPool(_) => OpKind::MaxPool,
            Op::AveragePool(_) => OpKind::AveragePool,
            Op::GlobalAveragePool(_) => OpKind::GlobalAveragePool,
            Op::Add(_) => OpKind::Add,
            Op::Lookup(_) => OpKind::Lookup,
            Op::Reshape => OpKind::Reshape,
            Op::Softmax { .. } => OpKind::Softmax,
        }
    }

    /// Multiply-accumulates the op performs (0 for ops without any).
    pub fn macs(&self, input_len: usize) -> usize {
        match self {
            Op::Conv2d(p) => p.output.h * p.output.w * p.output.c * p.depth(),
            Op::DepthwiseConv2d(p) => {
                p.output.h * p.output.w * p.output.c * p.window.kernel_h * p.window.kernel_w
            }
            Op::FullyConnected(p) => p.quant.bias.len() * input_len,
            _ => 0,
        }
    }

    /// Scratch words the op needs (the same on every build).
    pub fn scratch_words(&self, input_len: usize) -> usize {
        match self {
            Op::Conv2d(p) => p.scratch_words(),
            Op::DepthwiseConv2d(p) => p.scratch_words(),
            Op::FullyConnected(_) => FullyConnectedParams::scratch_words(input_len),
            _ => 0,
        }
    }
}

/// A validated `.pmc` plan borrowed from flash or memory.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    tensors: &'a [u8],
    ops: &'a [u8],
    consts: &'a [u8],
    arena_size: usize,
    scratch_offset: usize,
    scratch_size: usize,
    input: u16,
    output: u16,
    label_count: u32,
}

fn section(bytes: &[u8], offset: u32, len: u64) -> Result<core::ops::Range<usize>, Error> {
    let start = offset as u64;
    let end = start.checked_add(len).ok_or(Error::SectionOutOfBounds)?;
    if !start.is_multiple_of(ALIGN as u64) || start < HEADER_LEN as u64 || end > bytes.len() as u64
    {
        return Err(Error::SectionOutOfBounds);
    }
    Ok(start as usize..end as usize)
}

impl<'a> Plan<'a> {
    /// Validates `bytes` as a plan. The bytes must start on a 4-byte boundary; bytes after the
    /// length the header states are ignored. Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.len() < MAGIC.len() {
            return Err(Error::Truncated);
        }
        if bytes[H_MAGIC..H_MAGIC + 4] != MAGIC {
            return Err(Error::BadMagic);
        }
        if bytes.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let version = u16_at(bytes, H_VERSION);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        if u16_at(bytes, H_HEADER_LEN) as usize != HEADER_LEN {
            return Err(Error::BadHeader);
        }
        if !(bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(Error::Misaligned);
        }
        let total = u32_at(bytes, H_TOTAL_LEN) as u64;
        if total < HEADER_LEN as u64 || !total.is_multiple_of(ALIGN as u64) {
            return Err(Error::BadHeader);
        }
        if total > bytes.len() as u64 {
            return Err(Error::Truncated);
        }
        let bytes = &bytes[..total as usize];
        let stored = u32_at(bytes, H_CRC);
        let computed = crate::crc32(&bytes[CRC_START..]);
        if stored != computed {
            return Err(Error::Checksum { stored, computed });
        }
        if bytes[H_RESERVED..HEADER_LEN].iter().any(|&b| b != 0) {
            return Err(Error::BadHeader);
        }
        let tensor_count = u16_at(bytes, H_TENSOR_COUNT);
        let op_count = u16_at(bytes, H_OP_COUNT);
        let tensors = section(
            bytes,
            u32_at(bytes, H_TENSORS_OFFSET),
            tensor_count as u64 * TENSOR_RECORD_LEN as u64,
        )?;
        let ops = section(
            bytes,
            u32_at(bytes, H_OPS_OFFSET),
            op_count as u64 * OP_RECORD_LEN as u64,
        )?;
        let consts = section(
            bytes,
            u32_at(bytes, H_CONST_OFFSET),
            u32_at(bytes, H_CONST_LEN) as u64,
        )?;
        let disjoint = |a: &core::ops::Range<usize>, b: &core::ops::Range<usize>| {
            a.end <= b.start || b.end <= a.start
        };
        if !disjoint(&tensors, &ops) || !disjoint(&tensors, &consts) || !disjoint(&ops, &consts) {
            return Err(Error::SectionOutOfBounds);
        }
        let arena_size = u32_at(bytes, H_ARENA_SIZE) as usize;
        let scratch_offset = u32_at(bytes, H_SCRATCH_OFFSET) as usize;
        let scratch_size = u32_at(bytes, H_SCRATCH_SIZE) as usize;
        if scratch_offset as u64 + scratch_size as u64 > arena_size as u64 {
            return Err(Error::BadHeader);
        }
        let input = u16_at(bytes, H_INPUT);
        let output = u16_at(bytes, H_OUTPUT);
        if input >= tensor_count || output >= tensor_count {
            return Err(Error::BadHeader);
        }
        let plan = Plan {
            tensors: &bytes[tensors],
            ops: &bytes[ops],
            consts: &bytes[consts],
            arena_size,
            scratch_offset,
            scratch_size,
            input,
            output,
            label_count: u32_at(bytes, H_LABEL_COUNT),
        };
        for index in 0..tensor_count {
            plan.check_tensor(index)
                .map_err(|problem| Error::Tensor { index, problem })?;
        }
        for index in 0..op_count {
            plan.check_op(index)
                .map_err(|problem| Error::Op { index, problem })?;
        }
        Ok(plan)
    }

    /// Arena bytes the caller must provide to [`crate::run`].
    pub fn arena_size(&self) -> usize {
        self.arena_size
    }

    /// The scratch area: `(offset in the arena, bytes)`.
    pub fn scratch(&self) -> (usize, usize) {
        (self.scratch_offset, self.scratch_size)
    }

    /// Scratch words usable whatever the arena's alignment (3 bytes are slack for aligning).
    pub(crate) fn scratch_words(&self) -> usize {
        self.scratch_size.saturating_sub(ALIGN - 1) / 4
    }

    pub fn tensor_count(&self) -> usize {
        self.tensors.len() / TENSOR_RECORD_LEN
    }

    pub fn op_count(&self) -> usize {
        self.ops.len() / OP_RECORD_LEN
    }

    pub fn label_count(&self) -> u32 {
        self.label_count
    }

    pub fn input_id(&self) -> u16 {
        self.input
    }

    pub fn output_id(&self) -> u16 {
        self.output
    }

    pub fn input(&self) -> TensorInfo {
        self.tensor_unchecked(self.input)
    }

    pub fn output(&self) -> TensorInfo {
        self.tensor_unchecked(self.output)
    }

    /// Tensor `id`, `None` when out of range.
    pub fn tensor(&self, id: u16) -> Option<TensorInfo> {
        ((id as usize) < self.tensor_count()).then(|| self.tensor_unchecked(id))
    }

    fn tensor_unchecked(&self, id: u16) -> TensorInfo {
        // Ids are checked against the table by callers (and the parser); an all-zero record for one
        // that is not keeps a panic path out of inference.
        let r = self
            .tensors
            .get(id as usize * TENSOR_RECORD_LEN..)
            .and_then(|t| t.get(..TENSOR_RECORD_LEN))
            .unwrap_or(&[0; TENSOR_RECORD_LEN]);
        TensorInfo {
            shape: Shape::new(
                u16_at(r, T_DIMS + 2) as usize,
                u16_at(r, T_DIMS + 4) as usize,
                u16_at(r, T_DIMS + 6) as usize,
            ),
            scale: f32::from_bits(u32_at(r, T_SCALE)),
            zero_point: i32_at(r, T_ZERO_POINT),
            offset: u32_at(r, T_OFFSET) as usize,
            size: u32_at(r, T_SIZE) as usize,
        }
    }

    fn check_tensor(&self, id: u16) -> Result<(), Problem> {
        // Ids are checked against the table by callers (and the parser); an all-zero record for one
        // that is not keeps a panic path out of inference.
        let r = self
            .tensors
            .get(id as usize * TENSOR_RECORD_LEN..)
            .and_then(|t| t.get(..TENSOR_RECORD_LEN))
            .unwrap_or(&[0; TENSOR_RECORD_LEN]);
        if u16_at(r, T_DIMS) != 1 {
            return Err(Problem::BadShape);
        }
        if r[T_RESERVED..].iter().any(|&b| b != 0) {
            return Err(Problem::BadParameter);
        }
        let t = self.tensor_unchecked(id);
        let elements = t.shape.h as u64 * t.shape.w as u64 * t.shape.c as u64;
        if elements == 0 || elements != t.size as u64 {
            return Err(Problem::BadShape);
        }
        if !((-128..=127).contains(&t.zero_point) && t.scale.is_finite() && t.scale > 0.0) {
            return Err(Problem::BadQuantization);
        }
        if t.offset as u64 + t.size as u64 > self.arena_size as u64 {
            return Err(Problem::OutsideArena);
        }
        let scratch = self.scratch_offset..self.scratch_offset + self.scratch_size;
        if !scratch.is_empty() && t.offset < scratch.end && scratch.start < t.offset + t.size {
            return Err(Problem::OutsideArena);
        }
        Ok(())
    }

    fn constant(&self, rec: &[u8; OP_RECORD_LEN], slot: usize) -> Result<&'a [u8], Problem> {
        let off = u32_at(rec, O_CONST0 + slot * 8) as u64;
        let len = u32_at(rec, O_CONST0 + slot * 8 + 4) as u64;
        if !off.is_multiple_of(ALIGN as u64) || off + len > self.consts.len() as u64 {
            return Err(Problem::ConstOutOfBounds);
        }
        self.consts
            .get(off as usize..(off + len) as usize)
            .ok_or(Problem::ConstOutOfBounds)
    }

    fn channel_quant(&self, rec: &[u8; OP_RECORD_LEN]) -> Result<ChannelQuant<'a>, Problem> {
        let array = |slot| I32Le::new(self.constant(rec, slot)?).ok_or(Problem::BadLength);
        Ok(ChannelQuant {
            bias: array(1)?,
            multiplier: array(2)?,
            shift: array(3)?,
        })
    }

    /// Decodes op `index` (for a parsed plan this cannot fail for `index < op_count()`).
    pub fn op(&self, index: usize) -> Result<OpDesc<'a>, Problem> {
        if index >= self.op_count() {
            return Err(Problem::BadParameter);
        }
        let rec: &'a [u8; OP_RECORD_LEN] = self
            .ops
            .get(index * OP_RECORD_LEN..)
            .and_then(|r| r.first_chunk())
            .ok_or(Problem::BadParameter)?;
        let kind = u16_at(rec, O_KIND);
        let kind = OpKind::from_u16(kind).ok_or(Problem::UnknownOp(kind))?;
        if u16_at(rec, O_RESERVED) != 0 || u16_at(rec, O_RESERVED2) != 0 {
            return Err(Problem::BadParameter);
        }
        let inputs = [u16_at(rec, O_INPUT0), u16_at(rec, O_INPUT1)];
        let output = u16_at(rec, O_OUTPUT);
        let tensor = |id: u16| self.tensor(id).ok_or(Problem::BadTensorId);
        let (x, y) = (tensor(inputs[0])?, tensor(output)?);
        let two_inputs = kind == OpKind::Add;
        if two_inputs != (inputs[1] != NO_TENSOR) {
            return Err(Problem::BadTensorId);
        }
        let w = |i: usize| u16_at(rec, O_WINDOW + 2 * i) as usize;
        let window = Window {
            kernel_h: w(0),
            kernel_w: w(1),
            stride_h: w(2),
            stride_w: w(3),
            padding: Padding {
                top: w(4),
                left: w(5),
                bottom: w(6),
                right: w(7),
            },
        };
        let clamp = Clamp {
            min: rec[O_CLAMP_MIN] as i8,
            max: rec[O_CLAMP_MAX] as i8,
        };
        let depth_multiplier = u16_at(rec, O_DEPTH_MULTIPLIER) as usize;
        let int = |i: usize| i32_at(rec, O_INTS + 4 * i);
        let op = match kind {
            OpKind::Conv2d => Op::Conv2d(ConvParams {
                input: x.shape,
                output: y.shape,
                window,
                input_zp: x.zero_point,
                output_zp: y.zero_point,
                clamp,
                weights: bytes_as_i8(self.constant(rec, 0)?),
                quant: self.channel_quant(rec)?,
            }),
            OpKind::DepthwiseConv2d => Op::DepthwiseConv2d(DepthwiseParams {
                input: x.shape,
                output: y.shape,
                window,
                multiplier: depth_multiplier,
                input_zp: x.zero_point,
                output_zp: y.zero_point,
                clamp,
                weights: bytes_as_i8(self.constant(rec, 0)?),
                quant: self.channel_quant(rec)?,
            }),
            OpKind::FullyConnected => Op::FullyConnected(FullyConnectedParams {
                input_zp: x.zero_point,
                output_zp: y.zero_point,
                clamp,
                weights: bytes_as_i8(self.constant(rec, 0)?),
                quant: self.channel_quant(rec)?,
            }),
            OpKind::MaxPool | OpKind::AveragePool => {
                if x.zero_point != y.zero_point || x.scale.to_bits() != y.scale.to_bits() {
                    return Err(Problem::BadQuantization);
                }
                let p = PoolParams {
                    input: x.shape,
                    output: y.shape,
                    window,
                    clamp,
                };
                if kind == OpKind::MaxPool {
                    Op::MaxPool(p)
                } else {
                    Op::AveragePool(p)
                }
            }
            OpKind::GlobalAveragePool => Op::GlobalAveragePool(GlobalPoolParams {
                input: x.shape,
                input_zp: x.zero_point,
                output_zp: y.zero_point,
                multiplier: int(0),
                shift: int(1),
                clamp,
            }),
            OpKind::Add => {
                let x2 = tensor(inputs[1])?;
                if x2.shape != x.shape || y.shape != x.shape {
                    return Err(Problem::BadShape);
                }
                Op::Add(AddParams {
                    input1_zp: x.zero_point,
                    input2_zp: x2.zero_point,
                    output_zp: y.zero_point,
                    multiplier1: int(0),
                    shift1: int(1),
                    multiplier2: int(2),
                    shift2: int(3),
                    output_multiplier: int(4),
                    output_shift: int(5),
                    clamp,
                })
            }
            OpKind::Lookup => {
                let table = <&[i8; 256]>::try_from(bytes_as_i8(self.constant(rec, 0)?))
                    .map_err(|_| Problem::BadLength)?;
                Op::Lookup(table)
            }
            OpKind::Reshape => Op::Reshape,
            OpKind::Softmax => {
                if y.shape != x.shape {
                    return Err(Problem::BadShape);
                }
                if y.zero_point != -128 || y.scale != 1.0 / 256.0 {
                    return Err(Problem::BadQuantization);
                }
                Op::Softmax {
                    table: I32Le::new(self.constant(rec, 0)?).ok_or(Problem::BadLength)?,
                    depth: x.shape.c,
                }
            }
        };
        Ok(OpDesc { inputs, output, op })
    }

    fn check_op(&self, index: u16) -> Result<(), Problem> {
        let d = self.op(index as usize)?;
        let y = self.tensor_unchecked(d.output);
        let x = self.tensor_unchecked(d.inputs[0]);
        for &id in d.input_ids() {
            let r = self.tensor_unchecked(id).range();
            let same = matches!(d.op, Op::Reshape) && r == y.range();
            if !same && r.start < y.range().end && y.range().start < r.end {
                return Err(Problem::Overlap);
            }
        }
        let scratch = self.scratch_words();
        let (xn, yn) = (x.size, y.size);
        match &d.op {
            Op::Conv2d(p) => p.check(xn, yn, scratch),
            Op::DepthwiseConv2d(p) => p.check(xn, yn, scratch),
            Op::FullyConnected(p) => p.check(xn, yn, scratch),
            Op::MaxPool(p) | Op::AveragePool(p) => p.check(xn, yn),
            Op::GlobalAveragePool(p) => p.check(xn, yn),
            Op::Add(p) => p.check(xn, self.tensor_unchecked(d.inputs[1]).size, yn),
            Op::Lookup(_) | Op::Reshape => {
                if xn == yn {
                    Ok(())
                } else {
                    Err(Problem::BadLength)
                }
            }
            Op::Softmax { table, depth } => {
                crate::kernels::softmax::check_table(table)?;
                if *depth > crate::kernels::softmax::MAX_SOFTMAX_DEPTH {
                    Err(Problem::BadShape)
                } else {
                    Ok(())
                }
            }
        }
    }
}
