//! Builds `.pmc` plans on the host (feature `std`): host-tools' compiler and the tests use it.

use std::vec::Vec;

use super::format::*;
use super::{Error, Plan};
use crate::kernels::{
    AddParams, Clamp, GlobalPoolParams, Shape, Window, conv_weights_len, pack_conv_weights,
};
use crate::requantize::quantize_multiplier;

/// A tensor id returned by [`PlanBuilder::tensor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId(pub u16);

/// An activation tensor to put in the plan.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorDesc {
    pub shape: Shape,
    pub scale: f32,
    pub zero_point: i32,
    /// Byte offset in the arena from the host's memory planner; `None` places the tensor after
    /// every tensor added before it (no reuse, for tests and simple tools).
    pub offset: Option<u32>,
}

struct OpRecord([u8; OP_RECORD_LEN]);

impl OpRecord {
    fn new(kind: OpKind, inputs: &[TensorId], output: TensorId) -> Self {
        let mut r = OpRecord([0; OP_RECORD_LEN]);
        r.u16(O_KIND, kind as u16);
        r.u16(O_INPUT0, inputs[0].0);
        r.u16(O_INPUT1, inputs.get(1).map_or(NO_TENSOR, |t| t.0));
        r.u16(O_OUTPUT, output.0);
        r
    }
    fn u16(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn window(&mut self, w: &Window) {
        let p = &w.padding;
        for (i, v) in [
            w.kernel_h, w.kernel_w, w.stride_h, w.stride_w, p.top, p.left, p.bottom, p.right,
        ]
        .into_iter()
        .enumerate()
        {
            self.u16(O_WINDOW + 2 * i, u16::try_from(v).unwrap_or(u16::MAX));
        }
    }
    fn clamp(&mut self, c: Clamp) {
        self.0[O_CLAMP_MIN] = c.min as u8;
        self.0[O_CLAMP_MAX] = c.max as u8;
    }
    fn constant(&mut self, slot: usize, (offset, len): (u32, u32)) {
        self.u32(O_CONST0 + 8 * slot, offset);
        self.u32(O_CONST0 + 8 * slot + 4, len);
    }
    fn ints(&mut self, values: &[i32]) {
        for (i, v) in values.iter().enumerate() {
            self.u32(O_INTS + 4 * i, *v as u32);
        }
    }
}

/// Assembles a plan: tensors, ops in execution order, constants. [`PlanBuilder::build`] lays out
/// the arena's scratch area, writes the bytes and parses them back, so a plan it returns is one
/// the firmware accepts.
///
/// Requantization constants are derived here from the scales, the way TFLite derives them:
/// conv / depthwise / fully connected `multiplier[o], shift[o] = quantize_multiplier(input_scale *
/// weight_scale[o] / output_scale)` (computed in f64 from the f32 scales).
#[derive(Default)]
pub struct PlanBuilder {
    tensors: Vec<TensorDesc>,
    ops: Vec<OpRecord>,
    consts: Vec<u8>,
    labels: u32,
    input: Option<TensorId>,
    output: Option<TensorId>,
}

fn i32_bytes(v: impl IntoIterator<Item = i32>) -> Vec<u8> {
    v.into_iter().flat_map(i32::to_le_bytes).collect()
}

impl PlanBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an activation tensor.
    pub fn tensor(&mut self, desc: TensorDesc) -> TensorId {
        self.tensors.push(desc);
        TensorId((self.tensors.len() - 1) as u16)
    }

    pub fn tensor_desc(&self, id: TensorId) -> &TensorDesc {
        &self.tensors[id.0 as usize]
    }

    pub fn set_input(&mut self, id: TensorId) -> &mut Self {
        self.input = Some(id);
        self
    }

    pub fn set_output(&mut self, id: TensorId) -> &mut Self {
        self.output = Some(id);
        self
    }

    pub fn set_label_count(&mut self, labels: u32) -> &mut Self {
        self.labels = labels;
        self
    }

    /// Appends constant bytes, 4-byte aligned; returns (offset, length) in the constant section.
    fn constant(&mut self, bytes: &[u8]) -> (u32, u32) {
        let offset = self.consts.len() as u32;
        self.consts.extend_from_slice(bytes);
        while !self.consts.len().is_multiple_of(ALIGN) {
            self.consts.push(0);
        }
        (offset, bytes.len() as u32)
    }

    fn scale(&self, id: TensorId) -> f64 {
        self.tensors[id.0 as usize].scale as f64
    }

    fn channel_quant(
        &mut self,
        r: &mut OpRecord,
        input: TensorId,
        output: TensorId,
        bias: &[i32],
        weight_scales: &[f32],
    ) {
        let (si, so) = (self.scale(input), self.scale(output));
        let (m, s): (Vec<i32>, Vec<i32>) = weight_scales
            .iter()
            .map(|&sw| quantize_multiplier(si * sw as f64 / so))
            .unzip();
        r.constant(1, self.constant(&i32_bytes(bias.iter().copied())));
        r.constant(2, self.constant(&i32_bytes(m)));
        r.constant(3, self.constant(&i32_bytes(s)));
    }

    /// Conv2d with OHWI `weights` (`[out_c, kh, kw, in_c]`), int32 `bias` and one weight scale
    /// per output channel. Packs the weights (see [`crate::kernels::pack_conv_weights`]).
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &mut self,
        input: TensorId,
        output: TensorId,
        window: Window,
        clamp: Clamp,
        weights: &[i8],
        bias: &[i32],
        weight_scales: &[f32],
    ) -> &mut Self {
        let channels = bias.len();
        let depth = weights.len() / channels.max(1);
        let mut packed = std::vec![0i8; conv_weights_len(channels, depth)];
        if !pack_conv_weights(weights, channels, depth, &mut packed) {
            packed.clear(); // the parse in build() reports the length mismatch
        }
        let mut r = OpRecord::new(OpKind::Conv2d, &[input], output);
        r.window(&window);
        r.clamp(clamp);
        r.constant(
            0,
            self.constant(&packed.iter().map(|&w| w as u8).collect::<Vec<_>>()),
        );
        self.channel_quant(&mut r, input, output, bias, weight_scales);
        self.ops.push(r);
        self
    }

    /// Depthwise conv2d with TFLite weights `[kh, kw, in_c * multiplier]`.
    #[allow(clippy::too_many_arguments)]
    pub fn depthwise_conv2d(
        &mut self,
        input: TensorId,
        output: TensorId,
        window: Window,
        multiplier: usize,
        clamp: Clamp,
        weights: &[i8],
        bias: &[i32],
        weight_scales: &[f32],
    ) -> &mut Self {
        let mut r = OpRecord::new(OpKind::DepthwiseConv2d, &[input], output);
        r.window(&window);
        r.clamp(clamp);
        r.u16(O_DEPTH_MULTIPLIER, u16::try_from(multiplier).unwrap_or(0));
        r.constant(
            0,
            self.constant(&weights.iter().map(|&w| w as u8).collect::<Vec<_>>()),
        );
        self.channel_quant(&mut r, input, output, bias, weight_scales);
        self.ops.push(r);
        self
    }

    /// Fully connected with weights `[out, in]` (packed like conv weights here).
    pub fn fully_connected(
        &mut self,
        input: TensorId,
        output: TensorId,
        clamp: Clamp,
        weights: &[i8],
        bias: &[i32],
        weight_scales: &[f32],
    ) -> &mut Self {
        let channels = bias.len();
        let depth = weights.len() / channels.max(1);
        let mut packed = std::vec![0i8; conv_weights_len(channels, depth)];
        if !pack_conv_weights(weights, channels, depth, &mut packed) {
            packed.clear();
        }
        let mut r = OpRecord::new(OpKind::FullyConnected, &[input], output);
        r.clamp(clamp);
        r.constant(
            0,
            self.constant(&packed.iter().map(|&w| w as u8).collect::<Vec<_>>()),
        );
        self.channel_quant(&mut r, input, output, bias, weight_scales);
        self.ops.push(r);
        self
    }

    /// Max pooling (input and output must share scale and zero point).
    pub fn max_pool(
        &mut self,
        input: TensorId,
        output: TensorId,
        window: Window,
        clamp: Clamp,
    ) -> &mut Self {
        self.pool(OpKind::MaxPool, input, output, window, clamp)
    }

    /// Average pooling (input and output must share scale and zero point).
    pub fn average_pool(
        &mut self,
        input: TensorId,
        output: TensorId,
        window: Window,
        clamp: Clamp,
    ) -> &mut Self {
        self.pool(OpKind::AveragePool, input, output, window, clamp)
    }

    fn pool(
        &mut self,
        kind: OpKind,
        input: TensorId,
        output: TensorId,
        window: Window,
        clamp: Clamp,
    ) -> &mut Self {
        let mut r = OpRecord::new(kind, &[input], output);
        r.window(&window);
        r.clamp(clamp);
        self.ops.push(r);
        self
    }

    /// Global average pooling; the requantization comes from the two tensors' scales.
    pub fn global_average_pool(
        &mut self,
        input: TensorId,
        output: TensorId,
        clamp: Clamp,
    ) -> &mut Self {
        let (x, y) = (
            self.tensors[input.0 as usize],
            self.tensors[output.0 as usize],
        );
        let (m, s) = GlobalPoolParams::requant(x.scale, y.scale, x.shape.h, x.shape.w);
        let mut r = OpRecord::new(OpKind::GlobalAveragePool, &[input], output);
        r.clamp(clamp);
        r.ints(&[m, s]);
        self.ops.push(r);
        self
    }

    /// Residual add; the requantization comes from the three tensors' scales ([`AddParams::new`]).
    pub fn add(
        &mut self,
        input1: TensorId,
        input2: TensorId,
        output: TensorId,
        clamp: Clamp,
    ) -> &mut Self {
        let q = |id: TensorId| {
            (
                self.tensors[id.0 as usize].scale,
                self.tensors[id.0 as usize].zero_point,
            )
        };
        let p = AddParams::new(q(input1), q(input2), q(output), clamp);
        let mut r = OpRecord::new(OpKind::Add, &[input1, input2], output);
        r.clamp(clamp);
        r.ints(&[
            p.multiplier1,
            p.shift1,
            p.multiplier2,
            p.shift2,
            p.output_multiplier,
            p.output_shift,
        ]);
        self.ops.push(r);
        self
    }

    /// Element-wise lookup table (see [`crate::tables::lookup_table`]).
    pub fn lookup(&mut self, input: TensorId, output: TensorId, table: &[i8; 256]) -> &mut Self {
        let mut r = OpRecord::new(OpKind::Lookup, &[input], output);
        r.constant(0, self.constant(&table.map(|v| v as u8)));
        self.ops.push(r);
        self
    }

    /// Reshape / flatten (a no-op when both tensors have the same arena offset).
    pub fn reshape(&mut self, input: TensorId, output: TensorId) -> &mut Self {
        self.ops
            .push(OpRecord::new(OpKind::Reshape, &[input], output));
        self
    }

    /// Softmax over the last axis with `beta` (1.0 for a plain softmax); the output tensor must
    /// have scale 1/256 and zero point -128.
    pub fn softmax(&mut self, input: TensorId, output: TensorId, beta: f32) -> &mut Self {
        let table = crate::tables::softmax_table(self.tensors[input.0 as usize].scale, beta);
        let mut r = OpRecord::new(OpKind::Softmax, &[input], output);
        r.constant(0, self.constant(&i32_bytes(table.map(|v| v as i32))));
        self.ops.push(r);
        self
    }

    /// Lays out the arena (tensors without an offset, then the scratch area), writes the plan
    /// and checks it with [`Plan::parse`].
    pub fn build(&self) -> Result<AlignedBytes, Error> {
        let align = |v: u64| (v + ALIGN as u64 - 1) & !(ALIGN as u64 - 1);
        let mut end = 0u64;
        let mut records = Vec::new();
        for t in &self.tensors {
            let size = t.shape.h as u64 * t.shape.w as u64 * t.shape.c as u64;
            let offset = match t.offset {
                Some(o) => o as u64,
                None => align(end),
            };
            end = end.max(offset + size);
            let mut r = [0u8; TENSOR_RECORD_LEN];
            let dims = [1, t.shape.h, t.shape.w, t.shape.c].map(|d| u16::try_from(d).unwrap_or(0));
            for (i, d) in dims.iter().enumerate() {
                r[T_DIMS + 2 * i..][..2].copy_from_slice(&d.to_le_bytes());
            }
            r[T_SCALE..][..4].copy_from_slice(&t.scale.to_bits().to_le_bytes());
            r[T_ZERO_POINT..][..4].copy_from_slice(&t.zero_point.to_le_bytes());
            r[T_OFFSET..][..4].copy_from_slice(&(offset as u32).to_le_bytes());
            r[T_SIZE..][..4].copy_from_slice(&(size as u32).to_le_bytes());
            records.push(r);
        }
        // Scratch: the largest need of any op, plus 3 bytes of slack so that the words can be
        // aligned wherever the caller's arena starts.
        let words = self.scratch_words(&records);
        let scratch_offset = align(end);
        let scratch_size = if words == 0 {
            0
        } else {
            4 * words as u64 + ALIGN as u64
        };
        let arena_size = scratch_offset + scratch_size;

        let tensors_offset = HEADER_LEN;
        let ops_offset = tensors_offset + records.len() * TENSOR_RECORD_LEN;
        let const_offset = ops_offset + self.ops.len() * OP_RECORD_LEN;
        let total = const_offset + self.consts.len();
        let mut out = std::vec![0u8; total];
        let put =
            |out: &mut [u8], at: usize, v: u32| out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        out[H_MAGIC..H_MAGIC + 4].copy_from_slice(&MAGIC);
        out[H_VERSION..H_VERSION + 2].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[H_HEADER_LEN..H_HEADER_LEN + 2].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        put(&mut out, H_TOTAL_LEN, total as u32);
        put(&mut out, H_ARENA_SIZE, arena_size as u32);
        put(&mut out, H_SCRATCH_OFFSET, scratch_offset as u32);
        put(&mut out, H_SCRATCH_SIZE, scratch_size as u32);
        out[H_TENSOR_COUNT..][..2].copy_from_slice(&(records.len() as u16).to_le_bytes());
        out[H_OP_COUNT..][..2].copy_from_slice(&(self.ops.len() as u16).to_le_bytes());
        out[H_INPUT..][..2].copy_from_slice(&self.input.map_or(0, |t| t.0).to_le_bytes());
        let last = self.tensors.len().saturating_sub(1) as u16;
        out[H_OUTPUT..][..2].copy_from_slice(&self.output.map_or(last, |t| t.0).to_le_bytes());
        put(&mut out, H_LABEL_COUNT, self.labels);
        put(&mut out, H_TENSORS_OFFSET, tensors_offset as u32);
        put(&mut out, H_OPS_OFFSET, ops_offset as u32);
        put(&mut out, H_CONST_OFFSET, const_offset as u32);
        put(&mut out, H_CONST_LEN, self.consts.len() as u32);
        for (i, r) in records.iter().enumerate() {
            out[tensors_offset + i * TENSOR_RECORD_LEN..][..TENSOR_RECORD_LEN].copy_from_slice(r);
        }
        for (i, r) in self.ops.iter().enumerate() {
            out[ops_offset + i * OP_RECORD_LEN..][..OP_RECORD_LEN].copy_from_slice(&r.0);
        }
        out[const_offset..].copy_from_slice(&self.consts);
        let crc = crate::crc32(&out[CRC_START..]);
        put(&mut out, H_CRC, crc);
        let bytes = AlignedBytes::from(out.as_slice());
        Plan::parse(bytes.as_bytes())?;
        Ok(bytes)
    }

    fn scratch_words(&self, records: &[[u8; TENSOR_RECORD_LEN]]) -> usize {
        let size = |id: u16| {
            records
                .get(id as usize)
                .map_or(0, |r| u32_at(r, T_SIZE) as usize)
        };
        let c = |id: u16| {
            records
                .get(id as usize)
                .map_or(0, |r| u16_at(r, T_DIMS + 6) as usize)
        };
        self.ops
            .iter()
            .map(|r| {
                let input = u16_at(&r.0, O_INPUT0);
                match OpKind::from_u16(u16_at(&r.0, O_KIND)) {
                    Some(OpKind::Conv2d) => {
                        let (kh, kw) = (
                            u16_at(&r.0, O_WINDOW) as usize,
                            u16_at(&r.0, O_WINDOW + 2) as usize,
                        );
                        crate::kernels::ConvParams::scratch_words_for(
                            kh * kw * c(input),
                            c(u16_at(&r.0, O_OUTPUT)),
                        )
                    }
                    Some(OpKind::DepthwiseConv2d) => {
                        let w = |i: usize| u16_at(&r.0, O_WINDOW + 2 * i) as usize;
                        let width = records
                            .get(input as usize)
                            .map_or(0, |r| u16_at(r, T_DIMS + 4) as usize);
                        crate::kernels::DepthwiseParams::scratch_words_for(
                            w(0),
                            w(1),
                            width + w(5) + w(7),
                        )
                    }
                    Some(OpKind::FullyConnected) => {
                        crate::kernels::FullyConnectedParams::scratch_words(size(input))
                    }
                    _ => 0,
                }
            })
            .max()
            .unwrap_or(0)
    }
}

/// Bytes in 4-byte aligned memory, as [`Plan::parse`] requires: load a `.pmc` file with
/// `AlignedBytes::from(std::fs::read(path)?.as_slice())`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlignedBytes {
    words: Vec<u32>,
    len: usize,
}

impl AlignedBytes {
    pub fn as_bytes(&self) -> &[u8] {
        &crate::cast::words_as_bytes(&self.words)[..self.len]
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut crate::cast::words_as_bytes_mut(&mut self.words)[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl From<&[u8]> for AlignedBytes {
    fn from(bytes: &[u8]) -> Self {
        let mut a = AlignedBytes {
            words: std::vec![0; bytes.len().div_ceil(4)],
            len: bytes.len(),
        };
        a.as_bytes_mut().copy_from_slice(bytes);
        a
    }
}

impl core::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}
