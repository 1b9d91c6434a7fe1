//! The quantization debugger: how far each int8 tensor is from the float tensor it stands for.
//!
//! Both graphs run on the same samples; every int8 tensor is dequantized and compared with its float
//! counterpart: SQNR (signal power over error power, in dB: 6 dB per bit, so ~40 dB is a healthy
//! int8 layer and under ~20 dB a layer that hurts) and the largest absolute error.

use anyhow::Context;
use serde::Serialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cast::cast;

use super::calibrate::fix_batch;
use super::rewrite::Tap;

#[derive(Clone, Debug, Serialize)]
pub struct LayerError {
    /// The float graph's node whose output this is.
    pub layer: String,
    pub op: String,
    pub sqnr_db: f64,
    pub max_abs_error: f32,
    /// Largest float magnitude seen, for scale.
    pub max_abs_value: f32,
    /// The int8 step (scale) of the tensor.
    pub step: f32,
}

/// The float and int8 graphs set up to report the tapped tensors.
pub struct Pair {
    float: Arc<TypedSimplePlan>,
    int8: Arc<TypedSimplePlan>,
    rows: Vec<(String, String, f32)>,
    input_shape: Vec<usize>,
    batch: usize,
}

#[derive(Clone, Default)]
pub struct Accumulator {
    signal: f64,
    noise: f64,
    max_err: f32,
    max_val: f32,
}

impl Pair {
    pub fn new(float: &TypedModel, int8: &TypedModel, taps: &[Tap], batch: usize) -> TractResult<Pair> {
        let names: Vec<(String, usize)> = taps.iter().map(|t| (float.node(t.float.node).name.clone(), t.float.slot)).collect();
        let rows = taps
            .iter()
            .map(|t| {
                let node = float.node(t.float.node);
                let step = int8.node_by_name(&t.int8_node).map(|n| n.outputs[t.int8_slot].fact.datum_type.zp_scale().1).unwrap_or(0.0);
                (node.name.clone(), node.op.name().to_string(), step)
            })
            .collect();
        let mut f = fix_batch(float, batch)?;
        let outs = names.iter().map(|(n, s)| Ok(OutletId::new(f.node_by_name(n)?.id, *s))).collect::<TractResult<Vec<_>>>()?;
        f.select_output_outlets(&outs)?;
        let mut q = fix_batch(int8, batch)?;
        let mut outs = vec![];
        for (ix, t) in taps.iter().enumerate() {
            let wire = OutletId::new(q.node_by_name(&t.int8_node)?.id, t.int8_slot);
            outs.push(q.wire_node(format!("perch.debug.{ix}"), cast(f32::datum_type()), &[wire])?[0]);
        }
        q.select_output_outlets(&outs)?;
        let input_shape = f.input_fact(0)?.shape.as_concrete().context("input shape must be fixed")?.to_vec();
        Ok(Pair {
            float: f.into_optimized()?.into_runnable()?,
            int8: q.into_optimized()?.into_runnable()?,
            rows,
            input_shape,
            batch,
        })
    }

    pub fn accumulators(&self) -> Vec<Accumulator> {
        vec![Accumulator::default(); self.rows.len()]
    }

    pub fn observe(&self, values: &[f32], images: usize, acc: &mut [Accumulator]) -> TractResult<()> {
        let mut padded = values.to_vec();
        padded.resize(self.input_shape.iter().product(), 0.0);
        let input = Tensor::from_shape(&self.input_shape, &padded)?.into_tvalue();
        let f = self.float.run(tvec!(input.clone()))?;
        let q = self.int8.run(tvec!(input))?;
        for ((a, f), q) in acc.iter_mut().zip(f.iter()).zip(q.iter()) {
            let (fp, qp) = (f.try_as_plain_ram()?, q.try_as_plain_ram()?);
            let (fs, qs) = (fp.as_slice::<f32>()?, qp.as_slice::<f32>()?);
            let rows = if f.rank() > 0 && f.shape()[0] == self.batch { fs.len() / self.batch * images } else { fs.len() };
            for (x, y) in fs[..rows].iter().zip(&qs[..rows]) {
                let e = x - y;
                a.signal += (*x as f64) * (*x as f64);
                a.noise += (e as f64) * (e as f64);
                a.max_err = a.max_err.max(e.abs());
                a.max_val = a.max_val.max(x.abs());
            }
        }
        Ok(())
    }

    pub fn finish(&self, acc: Vec<Accumulator>) -> Vec<LayerError> {
        self.rows
            .iter()
            .zip(acc)
            .map(|((layer, op, step), a)| LayerError {
                layer: layer.clone(),
                op: op.clone(),
                sqnr_db: if a.noise == 0.0 { f64::INFINITY } else { 10.0 * (a.signal / a.noise).log10() },
                max_abs_error: a.max_err,
                max_abs_value: a.max_val,
                step: *step,
            })
            .collect()
    }
}
