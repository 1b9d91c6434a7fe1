//! What a graph holds: its ops, parameters, multiply-accumulates, tensor shapes, and which ops each
//! Perch target runs.

use std::collections::{BTreeMap, HashMap};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;

/// Where a plan runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// ARM single-board computers through tract (`.perch`).
    Sbc,
    /// Cortex-M through Perch's micro runtime (`.pmc`).
    Mcu,
}

/// The op kinds (tract names, after decluttering) that the micro runtime's int8 kernel set covers:
/// conv (incl. depthwise), fully connected, pooling, residual add, ReLU/ReLU6 as clamps, element-wise
/// lookup tables (sigmoid, swish, tanh), reshapes and softmax. Everything else needs the SBC target.
pub const MCU_OPS: &[&str] = &[
    "Source", "Const", "Conv", "EinSum", "MatMul", "MaxPool", "SumPool", "Reduce<Sum>", "Reduce<Max>", "Add", "Sub",
    "Mul", "Max", "Min", "Sigmoid", "Tanh", "HardSwish", "AddAxis", "RmAxis", "Reshape", "Move", "Softmax",
];

#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub op: String,
    pub shape: String,
    pub macs: u64,
    pub params: u64,
}

#[derive(Debug, Clone)]
pub struct Analysis {
    pub nodes: Vec<NodeInfo>,
    /// Op name -> node count, constants excluded.
    pub ops: BTreeMap<String, usize>,
    pub params: u64,
    /// Multiply-accumulates for one image.
    pub macs: u64,
    /// Largest activation tensor (elements) for one image.
    pub largest_activation: u64,
    /// Op kinds (by name) outside the micro runtime's kernel set.
    pub mcu_unsupported: Vec<String>,
}

/// Analyses a decluttered model; symbolic dimensions (the batch) are set to 1 for the counts.
pub fn analyze(model: &TypedModel) -> TractResult<Analysis> {
    let mut subs = HashMap::new();
    for input in &model.inputs {
        for dim in model.outlet_fact(*input)?.shape.iter() {
            for sym in dim.symbols() {
                subs.insert(sym, TDim::Val(1));
            }
        }
    }
    let model = if subs.is_empty() { model.clone() } else { model.set_symbols(&subs)? };
    let mut nodes = Vec::new();
    let mut ops = BTreeMap::new();
    let (mut total_params, mut total_macs, mut largest) = (0u64, 0u64, 0u64);
    let mut mcu_missing = Vec::new();
    for id in model.eval_order()? {
        let node = model.node(id);
        let op = node.op.name().to_string();
        let fact = &node.outputs[0].fact;
        let shape = fact.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        let params = node.op_as::<Const>().map_or(0, |c| c.val().len() as u64);
        let inputs = model.node_input_facts(id)?;
        // tract prices element-wise ops (sigmoid...) as FMAs too; MACs are the linear layers' alone.
        let linear = ["Conv", "EinSum", "MatMul"].iter().any(|k| op.contains(k));
        let macs: u64 = if !linear { 0 } else { node
            .op
            .cost(&inputs)?
            .iter()
            .filter(|(c, _)| matches!(c, tract_onnx::tract_core::ops::Cost::FMA(_)))
            .filter_map(|(_, n)| n.to_i64().ok())
            .sum::<i64>() as u64 };
        if params == 0 {
            *ops.entry(op.clone()).or_insert(0) += 1;
            if let Ok(n) = fact.shape.volume().to_i64() {
                largest = largest.max(n as u64);
            }
            if !MCU_OPS.contains(&op.as_str()) && !mcu_missing.contains(&op) {
                mcu_missing.push(op.clone());
            }
        }
        total_params += params;
        total_macs += macs;
        nodes.push(NodeInfo { name: node.name.clone(), op, shape, macs, params });
    }
    Ok(Analysis {
        nodes,
        ops,
        params: total_params,
        macs: total_macs,
        largest_activation: largest,
        mcu_unsupported: mcu_missing,
    })
}

/// What each target cannot run. The SBC check serializes the whole graph, so it is asked for apart
/// from [`analyze`].
pub fn unsupported(model: &TypedModel, analysis: &Analysis) -> BTreeMap<Target, Vec<String>> {
    BTreeMap::from([(Target::Sbc, sbc_unsupported(model)), (Target::Mcu, analysis.mcu_unsupported.clone())])
}

/// The SBC target runs what tract runs and Perch can ship: every op whose NNEF serializer exists.
fn sbc_unsupported(model: &TypedModel) -> Vec<String> {
    match perch_runtime::ops::nnef().write_to_tar(model, std::io::sink()) {
        Ok(_) => Vec::new(),
        Err(e) => vec![format!("{e:#}")],
    }
}

/// `12345678` -> `12.3 M`.
pub fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1} k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} M", n as f64 / 1e6),
        _ => format!("{:.2} G", n as f64 / 1e9),
    }
}

/// One line per node of an optimized model: name, op, and tract's details (for matrix products, the
/// kernel it picked, such as `avx2_mmm_i32_8x8` or `arm64simd_mmm_f32_8x8_gen`).
pub fn optimized_nodes(model: &TypedModel) -> Vec<String> {
    model
        .nodes()
        .iter()
        .filter(|n| !n.op_is::<tract_onnx::tract_core::ops::konst::Const>())
        .map(|n| {
            let info = n.op.info().unwrap_or_default().join("; ");
            format!("{:<56} {:<18} {} {info}", n.name, n.op.name(), n.outputs.first().map_or(String::new(), |o| format!("{:?}", o.fact.datum_type)))
        })
        .collect()
}

/// The matrix products and convolutions of an optimized model (`OptMatMul` and the like, not the
/// packing ops around them) and whether each runs integer kernels (tract's `*_mmm_i32_*` or Perch's int8 convolution):
/// (node name, op and details, is_int).
pub fn matmul_kernels(model: &TypedModel) -> Vec<(String, String, bool)> {
    model
        .nodes()
        .iter()
        .filter(|n| {
            let name = n.op.name();
            (name.contains("MatMul") || name.contains("Conv") || name.contains("EinSum") || name.contains("Gemm"))
                && !name.contains("Pack")
        })
        .map(|n| {
            let info = n.op.info().unwrap_or_default().join("; ");
            // tract's integer matmul kernels, or Perch's int8 convolution kernels.
            let int = info.contains("mmm_i32") || n.op_is::<perch_runtime::ops::qconv::QConvExec>();
            (n.name.clone(), format!("{} {info}", n.op.name()), int)
        })
        .collect()
}

/// "N matrix products: a int8, b f32".
pub fn kernel_summary(model: &TypedModel) -> String {
    let kernels = matmul_kernels(model);
    let int = kernels.iter().filter(|k| k.2).count();
    format!("{} matrix-product/convolution nodes: {int} on integer kernels, {} not", kernels.len(), kernels.len() - int)
}
