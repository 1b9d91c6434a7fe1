//! The committed golden cases are what the current code produces: a stale plan or stale expected
//! outputs fail here, on the host, before the cross tests compare against them.

use perch_runtime::tolerance::Tolerance;
use perch_runtime::ChannelPolicy;
use perch_tests::*;

#[test]
fn committed_plans_are_what_the_compiler_writes_today() {
    for model in MODELS {
        let dir = root().join("tests/cases").join(model);
        let committed = std::fs::read(dir.join("model.perch")).unwrap();
        let (fresh, _) = compile_plan(&model_path(model, "onnx")).unwrap();
        assert!(committed == fresh, "tests/cases/{model}/model.perch is stale: run `cargo xtask goldens`");
    }
}

#[test]
fn committed_logits_are_tract_onnx_outputs() {
    for model in MODELS {
        check_logits(model);
    }
}

fn check_logits(model: &str) {
    let dir = root().join("tests/cases").join(model);
    let case: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("case.json")).unwrap()).unwrap();
    let (_, plan) = compile_plan(&model_path(model, "onnx")).unwrap();
    let reference = onnx_reference(&model_path(model, "onnx"), 1).unwrap();
    for image in case["images"].as_array().unwrap() {
        let img = perch_runtime::preprocess::open_image(dir.join(image["file"].as_str().unwrap())).unwrap();
        let values = plan.manifest.preprocess.apply(&img, &plan.manifest.input, ChannelPolicy::Strict).unwrap();
        let want = run_reference(&reference, &values, &[1, 1, 28, 28]).unwrap().remove(0);
        let recorded: Vec<f32> = image["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        Tolerance::Close.check(&recorded, &want).unwrap();
    }
}
