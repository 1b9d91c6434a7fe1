//! Time per node of the optimized model: what `perch-run bench --profile` prints, as
//! `onnxruntime_perf_test -p` and TFLite's `benchmark_model --enable_op_profiling` do.

use std::time::{Duration, Instant};

use tract_nnef::prelude::*;
use tract_nnef::tract_core::plan::eval;

/// Accumulated time per node over any number of [`crate::Session::run_profiled`] calls.
#[derive(Clone, Debug)]
pub struct Profile {
    per_node: Vec<Duration>,
    runs: usize,
}

/// One node's share of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTime {
    /// Node id in the optimized model.
    pub node: usize,
    pub name: String,
    /// The operator tract runs there (its name in the optimized model, e.g. `OptMatMul`).
    pub op: String,
    /// Mean time per run.
    pub per_run: Duration,
    /// Fraction of the summed time of all nodes.
    pub share: f64,
}

impl Profile {
    /// An empty profile for `model` (the classifier's [`crate::Classifier::optimized_model`]).
    pub fn new(model: &TypedModel) -> Profile {
        Profile { per_node: vec![Duration::ZERO; model.nodes().len()], runs: 0 }
    }

    /// Profiled runs so far.
    pub fn runs(&self) -> usize {
        self.runs
    }

    pub(crate) fn run(&mut self, state: &mut TypedSimpleState, input: TValue) -> TractResult<TVec<TValue>> {
        let per_node = &mut self.per_node;
        let outputs = state.run_plan_with_eval(tvec!(input), |ctx, op_state, node, inputs| {
            let started = Instant::now();
            let out = eval(ctx, op_state, node, inputs);
            if let Some(t) = per_node.get_mut(node.id) {
                *t += started.elapsed();
            }
            out
        })?;
        self.runs += 1;
        Ok(outputs)
    }

    /// Nodes that took any time, slowest first.
    pub fn nodes(&self, model: &TypedModel) -> Vec<NodeTime> {
        let total: Duration = self.per_node.iter().sum();
        let runs = self.runs.max(1) as u32;
        let mut nodes: Vec<NodeTime> = self
            .per_node
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_zero())
            .filter_map(|(id, t)| {
                let node = model.nodes().get(id)?;
                Some(NodeTime {
                    node: id,
                    name: node.name.clone(),
                    op: node.op().name().to_string(),
                    per_run: *t / runs,
                    share: t.as_secs_f64() / total.as_secs_f64().max(f64::MIN_POSITIVE),
                })
            })
            .collect();
        nodes.sort_by(|a, b| b.per_run.cmp(&a.per_run).then(a.node.cmp(&b.node)));
        nodes
    }

    /// Time per operator kind (all `OptMatMul` nodes together, ...), slowest first: `(op, per run, share)`.
    pub fn by_op(&self, model: &TypedModel) -> Vec<(String, Duration, f64)> {
        let mut ops: Vec<(String, Duration, f64)> = Vec::new();
        for n in self.nodes(model) {
            match ops.iter_mut().find(|(op, _, _)| *op == n.op) {
                Some(entry) => {
                    entry.1 += n.per_run;
                    entry.2 += n.share;
                }
                None => ops.push((n.op, n.per_run, n.share)),
            }
        }
        ops.sort_by_key(|op| std::cmp::Reverse(op.1));
        ops
    }
}
