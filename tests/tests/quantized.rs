//! Static int8 plans of both example models (calibrated with minmax on 1,000 training images): top-1
//! on the full 10k test set within 0.5 pt of the float plan and agreeing with it on >= 99% of images,
//! every convolution and matrix product on an integer kernel, at most 30% of the float plan's size,
//! and the same outputs after serialization as before.

use perch_datasets::{Dataset, Item};
use perch_host::quantize::Scheme;
use perch_host::{accuracy, analysis};
use perch_runtime::{ChannelPolicy, Classifier};
use perch_tests::*;
use tract_onnx::prelude::*;

fn check(model: &str) {
    let path = model_path(model, "onnx");
    let (float_bytes, float_plan) = compile_plan(&path).unwrap();
    let (int8_bytes, int8_plan, report, int8_graph) = compile_int8_plan(&path, Scheme::default(), 1000).unwrap();
    assert_eq!(int8_plan.manifest.quantization.scheme, "int8");
    assert!(!report.quantized.is_empty());
    // Integer from the input's quantization to the output's dequantization: the Swish activations
    // become lookup tables, global average pooling a depthwise int8 convolution.
    assert!(report.float_ops.is_empty(), "{model}: float ops left: {:?}", report.float_ops);

    // Size.
    let ratio = int8_bytes.len() as f64 / float_bytes.len() as f64;
    println!("{model}: int8 plan {} bytes, float {} bytes ({:.1}%)", int8_bytes.len(), float_bytes.len(), 100.0 * ratio);
    assert!(ratio <= 0.30, "{model}: int8 plan is {:.1}% of the float plan", 100.0 * ratio);

    // Integer kernels for every convolution and matrix product, as the runtime optimizes the plan.
    let single = Classifier::new(int8_plan.clone(), 1).unwrap();
    let kernels = analysis::matmul_kernels(single.optimized_model());
    assert!(kernels.len() >= report.quantized.len(), "{model}: {kernels:?}");
    for (name, kernel, int) in &kernels {
        assert!(*int, "{model}: {name} runs {kernel}");
    }
    // Max pools of int8 tensors run on Perch's pooling (fashion-cnn-s has three).
    let pools: Vec<String> = single.optimized_model().nodes().iter().map(|n| n.op.name().to_string()).filter(|n| n.contains("MaxPool")).collect();
    assert!(pools.iter().all(|p| p == "PerchMaxPool"), "{model}: {pools:?}");
    assert!(model != "fashion-cnn-s" || pools.len() == 3, "{model}: {pools:?}");
    // ... and the float plan's do not (the check can fail): its convolutions run on Perch's float
    // kernels, its matrix products on tract's float ones.
    let float_single = Classifier::new(float_plan.clone(), 1).unwrap();
    assert!(analysis::matmul_kernels(float_single.optimized_model()).iter().any(|k| !k.2));
    let float_ops: Vec<String> = float_single.optimized_model().nodes().iter().map(|n| n.op.name().to_string()).collect();
    assert!(float_ops.iter().any(|n| n == "PerchConv#f32") && !float_ops.iter().any(|n| n.contains("Im2col")), "{model}: {float_ops:?}");
    // The activations after them are fused (Swish's Sigmoid, Relu's Max), and the strided pointwise
    // shortcuts, matrix products after tract's declutter, run on them too: no Downsample is left.
    assert!(!float_ops.iter().any(|n| n == "Sigmoid" || n.contains("MaxByScalar") || n.contains("Downsample")), "{model}: {float_ops:?}");

    // Serialization: the reloaded plan computes exactly what the graph computed before writing.
    let test = Dataset::open("fashion-mnist:test").unwrap();
    let batch = 64;
    let int8 = Classifier::new(int8_plan.clone(), batch).unwrap();
    let mut values = Vec::new();
    for i in 0..batch {
        let Item::Image(img) = test.item(i) else { unreachable!("IDX items are images") };
        values.extend(int8.preprocess(&img, ChannelPolicy::Strict).unwrap());
    }
    let before = perch_host::quantize::calibrate::fix_batch(&int8_graph, batch)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = Tensor::from_shape(&[batch, 1, 28, 28], &values).unwrap();
    let want = before.run(tvec!(input.into_tvalue())).unwrap();
    let want = want[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
    let got: Vec<f32> = int8.run(&values).unwrap().concat();
    assert_eq!(got, want, "{model}: outputs changed through serialization");

    // Accuracy on all 10k test images, against the float plan.
    let float = Classifier::new(float_plan, 100).unwrap();
    let int8 = Classifier::new(int8_plan, 100).unwrap();
    let f = accuracy::evaluate(&float, &test, ChannelPolicy::Strict, |_| {}).unwrap();
    let q = accuracy::evaluate(&int8, &test, ChannelPolicy::Strict, |_| {}).unwrap();
    let agree = f.predicted.iter().zip(&q.predicted).filter(|(a, b)| a == b).count() as f64 / f.images as f64;
    println!("{model}: float {:.2}%, int8 {:.2}%, top-1 agreement {:.2}%", f.top1(), q.top1(), 100.0 * agree);
    assert!((q.top1() - f.top1()).abs() <= 0.5, "{model}: int8 {:.2}% vs float {:.2}%", q.top1(), f.top1());
    assert!(agree >= 0.99, "{model}: int8 and float agree on {:.2}% of the test set", 100.0 * agree);
}

#[test]
fn fashion_cnn_s_int8() {
    check("fashion-cnn-s");
}

#[test]
fn fashion_resnet_int8() {
    check("fashion-resnet");
}

/// `--max-accuracy-drop`: a loose budget keeps every layer int8; a zero budget either keeps the most
/// sensitive layers in float until int8 is as accurate as float, or says it cannot, with the best reached.
#[test]
fn mixed_precision_budget() {
    use perch_host::quantize::{self, QuantizeError};
    use perch_host::{compile, import};
    let path = model_path("fashion-cnn-s", "onnx");
    let imported = import::import(&path, None).unwrap();
    let labels = compile::read_labels(&path.with_file_name("labels.txt")).unwrap();
    let mut manifest = compile::manifest_for(&imported, Some(labels), &fashion_preprocess()).unwrap();
    let train = Dataset::open("fashion-mnist:train").unwrap();
    let mut eval = Dataset::open("fashion-mnist:test").unwrap();
    eval.truncate(1000);
    let run = |manifest: &mut perch_runtime::Manifest, budget: f64| {
        quantize::int8_within_budget(&imported.model, manifest, &train, "train", Scheme::default(), 100, &eval, budget, |_| {})
    };
    let (_, rewritten, report) = run(&mut manifest, 5.0).unwrap();
    assert!(report.kept_float.is_empty() && report.sensitivity.is_empty(), "{report:?}");
    assert_eq!(rewritten.quantized.len(), 4);

    match run(&mut manifest, 0.0) {
        Ok((_, rewritten, report)) => {
            assert!(report.final_top1 >= report.float_top1, "{report:?}");
            assert_eq!(rewritten.kept_float, report.kept_float);
            assert_eq!(manifest.quantization.float_layers, report.kept_float);
            assert!(rewritten.quantized.len() + report.kept_float.len() == 4 && !rewritten.quantized.is_empty());
        }
        Err(QuantizeError::Budget { float, best, kept, layers, .. }) => {
            assert!(best < float && kept == layers - 1, "{float} {best} {kept} {layers}");
        }
        Err(e) => panic!("{e}"),
    }
}

/// `--quantize dynamic`: the matrix products get int8 weights and run integer kernels on inputs
/// quantized at run time; top-1 on the 10k test set stays within 0.5 pt of float.
#[test]
fn dynamic_int8_plans() {
    use perch_host::{compile, import, quantize};
    let test = Dataset::open("fashion-mnist:test").unwrap();
    for model in MODELS {
        let path = model_path(model, "onnx");
        let (_, float_plan) = compile_plan(&path).unwrap();
        let imported = import::import(&path, None).unwrap();
        let labels = compile::read_labels(&path.with_file_name("labels.txt")).unwrap();
        let mut manifest = compile::manifest_for(&imported, Some(labels), &fashion_preprocess()).unwrap();
        let (graph, report) = quantize::quantize_dynamic(&imported.model, &mut manifest).unwrap();
        assert!(!report.quantized.is_empty());
        let (_, plan) = compile::round_trip(&mut manifest, &graph).unwrap();
        assert_eq!(plan.manifest.quantization.scheme, "dynamic-int8");
        let single = Classifier::new(plan.clone(), 1).unwrap();
        let int = analysis::matmul_kernels(single.optimized_model()).iter().filter(|k| k.2).count();
        assert_eq!(int, report.quantized.len(), "{model}: every dynamic layer runs an integer kernel");
        let float = Classifier::new(float_plan, 100).unwrap();
        let dynamic = Classifier::new(plan, 100).unwrap();
        let f = accuracy::evaluate(&float, &test, ChannelPolicy::Strict, |_| {}).unwrap();
        let d = accuracy::evaluate(&dynamic, &test, ChannelPolicy::Strict, |_| {}).unwrap();
        println!("{model}: float {:.2}%, dynamic int8 {:.2}%", f.top1(), d.top1());
        assert!((d.top1() - f.top1()).abs() <= 0.5, "{model}: dynamic {:.2}% vs float {:.2}%", d.top1(), f.top1());
    }
}

/// The dynamo exporter's graphs (opset 20, symbolic batch in value_info) quantize the same way:
/// integer end to end, every convolution and matrix product on an integer kernel.
#[test]
fn dynamo_exports_quantize_end_to_end() {
    for model in MODELS {
        let path = model_path(model, "dynamo.onnx");
        let (_, plan, report, _) = compile_int8_plan(&path, Scheme::default(), 200).unwrap();
        assert!(report.float_ops.is_empty(), "{model}: {:?}", report.float_ops);
        let single = Classifier::new(plan, 1).unwrap();
        let kernels = analysis::matmul_kernels(single.optimized_model());
        assert!(kernels.len() >= report.quantized.len() && kernels.iter().all(|k| k.2), "{model}: {kernels:?}");
    }
}
