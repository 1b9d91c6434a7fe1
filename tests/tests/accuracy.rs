//! The fp32 path end to end, for both example models and both exporters: the `.perch` plan computes what
//! tract-onnx computes on the ONNX file (Tolerance::Close), and its top-1 accuracy on the full 10k
//! Fashion-MNIST test set is the one recorded at training time (within 0.1 pt).

use perch_datasets::{Dataset, Item};
use perch_host::accuracy;
use perch_runtime::tolerance::Tolerance;
use perch_runtime::{ChannelPolicy, Classifier};
use perch_tests::*;

fn check(model: &str, variant: &str) {
    let path = model_path(model, variant);
    let (_, plan) = compile_plan(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    let classifier = Classifier::new(plan, 100).unwrap();
    let test = Dataset::open("fashion-mnist:test").unwrap();
    assert_eq!(test.len(), 10_000);

    // Outputs: the first 200 test images through the plan and through tract-onnx.
    let reference = onnx_reference(&path, 100).unwrap();
    for start in [0, 100] {
        let mut values = Vec::new();
        for i in start..start + 100 {
            let Item::Image(img) = test.item(i) else { unreachable!("IDX items are images") };
            values.extend(classifier.preprocess(&img, ChannelPolicy::Strict).unwrap());
        }
        let got = classifier.run(&values).unwrap();
        let want = run_reference(&reference, &values, &[100, 1, 28, 28]).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            Tolerance::Close.check(g, w).unwrap_or_else(|e| panic!("{model}.{variant} image {}: {e}", start + i));
        }
    }

    // Accuracy on all 10k test images.
    let eval = accuracy::evaluate(&classifier, &test, ChannelPolicy::Strict, |_| {}).unwrap();
    let record = training_record(model);
    let trained = record["test_top1"].as_f64().unwrap();
    println!("{model}.{variant}: plan {:.2}% vs trained {trained:.2}%", eval.top1());
    assert!(
        (eval.top1() - trained).abs() <= 0.1,
        "{model}.{variant}: plan top-1 {:.2}% differs from the {trained:.2}% recorded at training",
        eval.top1()
    );
}

#[test]
fn fashion_cnn_s_legacy_export() {
    check("fashion-cnn-s", "onnx");
}

#[test]
fn fashion_cnn_s_dynamo_export() {
    check("fashion-cnn-s", "dynamo.onnx");
}

#[test]
fn fashion_resnet_legacy_export() {
    check("fashion-resnet", "onnx");
}

#[test]
fn fashion_resnet_dynamo_export() {
    check("fashion-resnet", "dynamo.onnx");
}

#[test]
fn the_example_models_meet_their_targets() {
    // The bar for the bundled models; a retrain that misses it must not land silently.
    assert!(training_record("fashion-cnn-s")["test_top1"].as_f64().unwrap() >= 90.0);
    assert!(training_record("fashion-resnet")["test_top1"].as_f64().unwrap() >= 92.5);
    let params = training_record("fashion-resnet")["parameters"].as_u64().unwrap();
    assert!((300_000..=1_500_000).contains(&params), "fashion-resnet has {params} parameters");
}
