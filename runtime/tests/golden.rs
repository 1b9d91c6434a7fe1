//! Golden cases (tests/cases/<model>/case.json): a committed plan, real test images, and the logits
//! tract-onnx computed for them on x86. Run on the host and, by `cargo xtask test-cross`, under qemu on
//! aarch64 and armv7: the same plan must give the same outputs on every CPU, within `CrossArch`.

use std::path::{Path, PathBuf};

use perch_runtime::preprocess::open_image;
use perch_runtime::tolerance::Tolerance;
use perch_runtime::{ChannelPolicy, Classifier};
use serde_json::Value;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../tests/cases");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases under {}", dir.display());
    cases
}

fn tolerance(case: &Value) -> Tolerance {
    match case["tolerance"].as_str() {
        Some("CrossArch") => Tolerance::CrossArch,
        Some("Close") => Tolerance::Close,
        Some("Exact") => Tolerance::Exact,
        other => panic!("unknown tolerance {other:?}"),
    }
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

#[test]
fn plans_give_the_recorded_outputs_one_image_at_a_time() {
    for dir in cases() {
        let case: Value = serde_json::from_slice(&std::fs::read(dir.join("case.json")).unwrap()).unwrap();
        let classifier = Classifier::load(dir.join(case["plan"].as_str().unwrap()), 1).unwrap();
        let tol = tolerance(&case);
        let images = case["images"].as_array().unwrap();
        assert!(images.len() >= 4, "{}: too few images to mean anything", dir.display());
        let mut correct = 0;
        for image in images {
            let file = image["file"].as_str().unwrap();
            let img = open_image(dir.join(file)).unwrap();
            let values = classifier.preprocess(&img, ChannelPolicy::Strict).unwrap();
            let got = &classifier.run(&values).unwrap()[0];
            tol.check(got, &f32s(&image["logits"])).unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()));
            let top = classifier.top_k(got, 1);
            correct += usize::from(top[0].class as u64 == image["label"].as_u64().unwrap());
        }
        // The models are 90+% accurate: most of the recorded images must be classified right.
        assert!(correct * 10 >= images.len() * 7, "{}: only {correct}/{} right", dir.display(), images.len());
    }
}

#[test]
fn a_batch_gives_what_single_images_give() {
    for dir in cases() {
        let case: Value = serde_json::from_slice(&std::fs::read(dir.join("case.json")).unwrap()).unwrap();
        let plan = dir.join(case["plan"].as_str().unwrap());
        let single = Classifier::load(&plan, 1).unwrap();
        let images: Vec<Vec<f32>> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|image| {
                let img = open_image(dir.join(image["file"].as_str().unwrap())).unwrap();
                single.preprocess(&img, ChannelPolicy::Strict).unwrap()
            })
            .collect();
        let batch = 8;
        assert!(images.len() > batch, "{}: the case needs more images than the batch", dir.display());
        let batched = Classifier::load(&plan, batch).unwrap();
        // Fewer images than the batch: the classifier pads, and must return only the real rows.
        let n = batch - 1;
        let rows = batched.run(&images[..n].concat()).unwrap();
        assert_eq!(rows.len(), n);
        for (row, values) in rows.iter().zip(&images) {
            // Another batch size may pick other kernels (other summation order): CrossArch bounds it.
            Tolerance::CrossArch.check(row, &single.run(values).unwrap()[0]).unwrap();
        }
        // More images than the batch is refused, not truncated.
        assert!(batched.run(&images[..batch + 1].concat()).is_err());
    }
}

/// The float plans run Perch's float convolutions where they beat tract's, and tract's elsewhere
/// (32-bit ARM: `FConvKernel::pays_on`).
#[test]
fn float_plans_run_perchs_convolutions_where_they_pay() {
    use perch_runtime::kernels::fconv::FConvKernel;
    use perch_runtime::kernels::Isa;
    for dir in cases() {
        let case: Value = serde_json::from_slice(&std::fs::read(dir.join("case.json")).unwrap()).unwrap();
        let classifier = Classifier::load(dir.join(case["plan"].as_str().unwrap()), 1).unwrap();
        // (The golden plans are float.)
        let perch = classifier.optimized_model().nodes().iter().filter(|n| n.op.name().starts_with("PerchConv")).count();
        assert_eq!(perch > 0, FConvKernel::pays_on(Isa::best()), "{}: {perch} of Perch's float convolutions", dir.display());
    }
}
