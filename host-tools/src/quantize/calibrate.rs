//! Calibration: run the float model on sample inputs and keep, for every activation, streaming
//! statistics (min, max and a histogram) from which a quantization range is chosen.
//!
//! Memory is bounded by the number of activations times the histogram size, whatever the number of
//! samples: activations are folded into the statistics batch by batch and dropped.

use std::collections::HashMap;

pub use perch_runtime::ops::qconv::Engine;

use tract_onnx::prelude::*;
use anyhow::{Context, ensure};

/// Histogram bins per activation. 2048 is what TensorRT's entropy calibrator uses.
pub const BINS: usize = 2048;

/// How an activation's float range is chosen from its statistics.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Method {
    /// The observed minimum and maximum.
    #[default]
    MinMax,
    /// The given percentile of the observed values at each end (e.g. 99.99): outliers are clipped.
    Percentile(f64),
    /// The clipping threshold that minimizes the KL divergence between the histogram and its int8
    /// quantization (TensorRT's entropy calibration).
    Entropy,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::MinMax => f.write_str("minmax"),
            Method::Percentile(p) => write!(f, "percentile={p}"),
            Method::Entropy => f.write_str("entropy"),
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Method, String> {
        match s {
            "minmax" => Ok(Method::MinMax),
            "entropy" => Ok(Method::Entropy),
            "percentile" => Ok(Method::Percentile(99.99)),
            _ => match s.strip_prefix("percentile=").map(str::parse::<f64>) {
                Some(Ok(p)) if p > 50.0 && p <= 100.0 => Ok(Method::Percentile(p)),
                Some(_) => Err(format!("`{s}`: the percentile must be a number in (50, 100]")),
                None => Err(format!("`{s}` is not a calibration method: minmax, percentile[=P] or entropy")),
            },
        }
    }
}

/// How weights are scaled to int8 (symmetric either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WeightScales {
    /// One scale per output channel: the accurate choice, and the default.
    #[default]
    PerChannel,
    /// One scale per layer. tract 0.23.9 fuses per-layer requantization into its int8 matmul
    /// kernels, not per-channel requantization, so this runs faster; accuracy may drop where one
    /// channel's weights are much larger than another's.
    PerTensor,
}

/// The int8 scheme: how activation ranges are calibrated and how weights are scaled.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Scheme {
    pub method: Method,
    pub weights: WeightScales,
    /// Whose kernels run the int8 convolutions and matrix products on the device.
    pub engine: Engine,
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let weights = match self.weights {
            WeightScales::PerChannel => "per-channel",
            WeightScales::PerTensor => "per-tensor",
        };
        write!(f, "{} calibration, {weights} weights, {} int8 kernels", self.method, self.engine.name())
    }
}

/// Streaming statistics of one activation: exact min and max, and a histogram over `[-bound, bound)`
/// whose bound doubles (merging bin pairs) whenever a value falls outside it.
#[derive(Clone, Debug)]
pub struct Observer {
    pub min: f32,
    pub max: f32,
    pub count: u64,
    bound: f32,
    bins: Vec<u64>,
}

impl Default for Observer {
    fn default() -> Self {
        Observer { min: f32::INFINITY, max: f32::NEG_INFINITY, count: 0, bound: 0.0, bins: vec![0; BINS] }
    }
}

impl Observer {
    pub fn observe(&mut self, values: &[f32]) {
        let (mut lo, mut hi) = (self.min, self.max);
        for &v in values {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if lo > hi {
            return;
        }
        self.min = lo;
        self.max = hi;
        let extent = lo.abs().max(hi.abs());
        if self.bound == 0.0 {
            self.bound = extent.max(f32::MIN_POSITIVE);
        }
        while extent >= self.bound {
            self.grow();
        }
        let scale = BINS as f32 / (2.0 * self.bound);
        let half = (BINS / 2) as f32;
        for &v in values {
            if v.is_finite() {
                let bin = ((v * scale + half) as usize).min(BINS - 1);
                self.bins[bin] += 1;
                self.count += 1;
            }
        }
    }

    /// Doubles the bound: bins 2i and 2i+1 become bin BINS/4 + i.
    fn grow(&mut self) {
        let mut merged = vec![0; BINS];
        for (i, pair) in self.bins.chunks_exact(2).enumerate() {
            merged[BINS / 4 + i] = pair[0] + pair[1];
        }
        self.bins = merged;
        self.bound *= 2.0;
    }

    fn bin_width(&self) -> f32 {
        2.0 * self.bound / BINS as f32
    }

    /// The float range to quantize, always containing 0 (so that zero is exact, as padding needs).
    pub fn range(&self, method: Method) -> (f32, f32) {
        if self.count == 0 {
            return (0.0, 0.0);
        }
        let (lo, hi) = match method {
            Method::MinMax => (self.min, self.max),
            Method::Percentile(p) => {
                let tail = ((1.0 - p / 100.0) * self.count as f64).floor() as u64;
                (self.value_at_rank(tail).max(self.min), self.value_at_rank(self.count - 1 - tail.min(self.count - 1)).min(self.max))
            }
            Method::Entropy => {
                let t = self.entropy_threshold();
                (self.min.max(-t), self.max.min(t))
            }
        };
        (lo.min(0.0), hi.max(0.0))
    }

    /// The value below which `rank` observations lie (the lower edge of that bin, upper for the top).
    fn value_at_rank(&self, rank: u64) -> f32 {
        let mut seen = 0;
        for (i, &n) in self.bins.iter().enumerate() {
            if seen + n > rank {
                let lower = -self.bound + i as f32 * self.bin_width();
                let within = (rank - seen) as f32 / n as f32;
                return lower + within * self.bin_width();
            }
            seen += n;
        }
        self.max
    }

    /// TensorRT's entropy calibration on |x|: the threshold among bin edges that minimizes
    /// KL(P || Q), P the clipped histogram and Q its quantization to the int8 levels available (128 for
    /// a signed tensor, 256 for a non-negative one, which uses the whole int8 range on one side).
    fn entropy_threshold(&self) -> f32 {
        let half = BINS / 2;
        let folded: Vec<f64> = (0..half).map(|k| (self.bins[half + k] + self.bins[half - 1 - k]) as f64).collect();
        let levels = if self.min >= 0.0 { 256 } else { 128 };
        let last = folded.iter().rposition(|&n| n > 0.0).map_or(0, |i| i + 1);
        if last <= levels {
            return self.min.abs().max(self.max.abs());
        }
        let mut best = (f64::INFINITY, last);
        for i in (levels..=last).step_by(((last - levels) / 256).max(1)) {
            let mut p: Vec<f64> = folded[..i].to_vec();
            p[i - 1] += folded[i..].iter().sum::<f64>();
            // Q: merge the i bins into `levels` groups, spread each group's mass over its non-empty bins.
            let mut q = vec![0.0; i];
            for level in 0..levels {
                let start = level * i / levels;
                let end = ((level + 1) * i / levels).max(start + 1);
                let mass: f64 = folded[start..end].iter().sum();
                let nonzero = folded[start..end].iter().filter(|&&n| n > 0.0).count();
                if nonzero > 0 {
                    for b in start..end {
                        if folded[b] > 0.0 {
                            q[b] = mass / nonzero as f64;
                        }
                    }
                }
            }
            let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
            let kl: f64 = p
                .iter()
                .zip(&q)
                .filter(|(pv, _)| **pv > 0.0)
                .map(|(pv, qv)| {
                    let (pn, qn) = (pv / ps, (qv / qs).max(1e-12));
                    pn * (pn / qn).ln()
                })
                .sum();
            if kl < best.0 {
                best = (kl, i);
            }
        }
        best.1 as f32 * self.bin_width()
    }
}

/// Statistics for a set of activations of one model, keyed by the float model's outlets.
pub type Statistics = HashMap<OutletId, Observer>;

/// The activations worth observing: every float outlet that is not a constant.
pub fn observed_outlets(model: &TypedModel) -> TractResult<Vec<OutletId>> {
    let mut outlets = vec![];
    for node in model.eval_order()?.into_iter().map(|id| model.node(id)) {
        for (slot, output) in node.outputs.iter().enumerate() {
            if output.fact.datum_type == f32::datum_type() && output.fact.konst.is_none() {
                outlets.push(OutletId::new(node.id, slot));
            }
        }
    }
    Ok(outlets)
}

/// `model` with its batch axis (the first input axis, symbolic or fixed) set to `batch`.
pub fn fix_batch(model: &TypedModel, batch: usize) -> TractResult<TypedModel> {
    let fact = model.input_fact(0)?;
    let first = &fact.shape[0];
    if first.as_i64().is_some() {
        ensure!(first.as_i64() == Some(batch as i64), "the model's batch axis is fixed at {first}");
        return Ok(model.clone());
    }
    let symbols = first.symbols();
    let sym = symbols.into_iter().next().context("the batch axis is not a symbol")?;
    model.set_symbols(&std::collections::HashMap::from([(sym, TDim::Val(batch as i64))]))
}

/// A float model prepared to report every observed activation for batches of `batch` inputs.
pub struct Probe {
    plan: Arc<TypedSimplePlan>,
    outlets: Vec<OutletId>,
    input_shape: Vec<usize>,
    batch: usize,
}

impl Probe {
    /// `model` is decluttered, its first axis is the batch (symbolic or `batch`).
    pub fn new(model: &TypedModel, batch: usize) -> TractResult<Probe> {
        // Statistics are keyed by the outlets of `model`; fixing the batch rebuilds the graph, so
        // outlets are found again there by node name.
        let outlets = observed_outlets(model)?;
        let names: Vec<(String, usize)> = outlets.iter().map(|o| (model.node(o.node).name.clone(), o.slot)).collect();
        let mut model = fix_batch(model, batch)?;
        let probes = names
            .iter()
            .map(|(name, slot)| Ok(OutletId::new(model.node_by_name(name)?.id, *slot)))
            .collect::<TractResult<Vec<_>>>()?;
        model.select_output_outlets(&probes)?;
        let input_shape = model.input_fact(0)?.shape.as_concrete().context("input shape must be fixed")?.to_vec();
        let plan = model.into_optimized()?.into_runnable()?;
        Ok(Probe { plan, outlets, input_shape, batch })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Runs `images` (at most `batch`, each its preprocessed values, concatenated) and folds every
    /// activation of those images into `stats`. A short batch is padded, and the padding not observed.
    pub fn observe(&self, values: &[f32], images: usize, stats: &mut Statistics) -> TractResult<()> {
        let mut padded = values.to_vec();
        padded.resize(self.input_shape.iter().product(), 0.0);
        let input = Tensor::from_shape(&self.input_shape, &padded)?;
        let outputs = self.plan.run(tvec!(input.into_tvalue()))?;
        for (outlet, value) in self.outlets.iter().zip(outputs.iter()) {
            let plain = value.try_as_plain_ram()?;
            let all = plain.as_slice::<f32>()?;
            let rows = if value.rank() > 0 && value.shape()[0] == self.batch { all.len() / self.batch * images } else { all.len() };
            stats.entry(*outlet).or_default().observe(&all[..rows]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_is_exact_and_contains_zero() {
        let mut o = Observer::default();
        o.observe(&[1.0, 2.0, 3.0]);
        o.observe(&[7.5, 0.5]);
        assert_eq!((o.min, o.max), (0.5, 7.5));
        assert_eq!(o.range(Method::MinMax), (0.0, 7.5));
        assert_eq!(o.count, 5);
    }

    #[test]
    fn growing_keeps_every_count() {
        let mut o = Observer::default();
        o.observe(&[0.001; 100]);
        o.observe(&[1000.0, -1000.0]);
        assert_eq!(o.bins.iter().sum::<u64>(), 102);
        assert!(o.bound > 1000.0);
    }

    #[test]
    fn percentile_clips_outliers() {
        let mut o = Observer::default();
        let values: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        o.observe(&values);
        o.observe(&[1000.0]);
        let (_, hi) = o.range(Method::Percentile(99.9));
        assert!(hi > 0.9 && hi < 1.5, "{hi}");
        assert_eq!(o.range(Method::MinMax).1, 1000.0);
    }

    #[test]
    fn entropy_clips_a_long_tail() {
        let mut o = Observer::default();
        // Mostly small values and a sparse tail: the threshold falls well below the maximum.
        let mut values: Vec<f32> = (0..200_000).map(|i| ((i * 7919) % 10_000) as f32 / 10_000.0).collect();
        values.extend((0..20).map(|i| 5.0 + i as f32));
        o.observe(&values);
        let (lo, hi) = o.range(Method::Entropy);
        assert_eq!(lo, 0.0);
        assert!((0.9..24.0).contains(&hi), "{hi}");
    }

    #[test]
    fn methods_parse() {
        assert_eq!("minmax".parse::<Method>(), Ok(Method::MinMax));
        assert_eq!("percentile=99.9".parse::<Method>(), Ok(Method::Percentile(99.9)));
        assert_eq!("percentile".parse::<Method>(), Ok(Method::Percentile(99.99)));
        assert!("percentile=20".parse::<Method>().is_err());
        assert!("kl".parse::<Method>().is_err());
    }
}
