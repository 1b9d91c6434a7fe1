//! The accuracy regression suite: for each example model and each target (the ONNX graph in
//! tract-onnx, the float and int8 plans, the MCU plan in the host simulation), top-1 and agreement
//! with the float reference on the full 10k Fashion-MNIST test set, against goldens kept as data in
//! `tests/cases/<model>/<target>.json`. A drop beyond a golden's tolerance fails with a table of
//! what changed. `cargo xtask goldens` rewrites them (then review the diff); this test only reads.
//! The MCU firmware itself is checked under qemu by `cargo xtask test-firmware` (32 images, every
//! output byte against this host simulation).

use perch_datasets::Dataset;
use perch_host::eval::{self, Target};
use perch_host::quantize::Scheme;
use perch_host::{compile, import};
use perch_tests::*;
use serde_json::{Value, json};

/// Default tolerances when a golden is first written: top-1 points, agreement points.
const TOP1_TOLERANCE: f64 = 0.3;
const AGREEMENT_TOLERANCE: f64 = 0.5;

fn check(model: &str) {
    let path = model_path(model, "onnx");
    let imported = import::import(&path, None).unwrap();
    let labels = compile::read_labels(&path.with_file_name("labels.txt")).unwrap();
    let manifest = compile::manifest_for(&imported, Some(labels.clone()), &fashion_preprocess()).unwrap();
    let train = Dataset::open("fashion-mnist:train").unwrap();
    let test = Dataset::open("fashion-mnist:test").unwrap();
    let n = test.len();
    let done = eval::evaluate_model(
        &imported,
        &manifest,
        &Target::ALL,
        Some((&train, "fashion-mnist:train")),
        Scheme::default(),
        1000,
        &test,
        n,
        &mut |_, _, _| {},
    )
    .unwrap();
    let truth = eval::truth(&test, &labels, n).unwrap();
    let bless = std::env::var_os("PERCH_BLESS_ACCURACY").is_some();
    let mut failures = vec![];
    let mut table = format!("{model}: {:<10} {:>14} {:>14} {:>18} {:>18}\n", "target", "top-1 golden", "top-1 now", "agreement golden", "agreement now");
    for outputs in &done.outputs {
        let m = eval::metrics(outputs, &truth, &labels, done.outputs.first());
        let file = root().join(format!("tests/cases/{model}/{}.json", m.target));
        let old: Option<Value> = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let agreement = m.agreement.unwrap_or(100.0);
        if bless {
            let keep = |key: &str, default: f64| old.as_ref().and_then(|o| o[key].as_f64()).unwrap_or(default);
            let golden = json!({
                "model": model,
                "target": m.target,
                "data": "fashion-mnist:test",
                "images": m.images,
                "calibration": "minmax, per-channel weights, first 1000 images of fashion-mnist:train",
                "top1": (m.top1 * 100.0).round() / 100.0,
                "agreement_with_onnx": (agreement * 100.0).round() / 100.0,
                "top1_tolerance": keep("top1_tolerance", TOP1_TOLERANCE),
                "agreement_tolerance": keep("agreement_tolerance", AGREEMENT_TOLERANCE),
            });
            perch_runtime::plan::write_atomically(&file, (serde_json::to_string_pretty(&golden).unwrap() + "\n").as_bytes()).unwrap();
            continue;
        }
        let golden = old.unwrap_or_else(|| panic!("{} is missing: run `cargo xtask goldens`", file.display()));
        let g = |key: &str| golden[key].as_f64().unwrap_or_else(|| panic!("{}: no `{key}`", file.display()));
        assert_eq!(golden["images"].as_u64(), Some(m.images as u64), "{}: image count", file.display());
        let _ = std::fmt::Write::write_fmt(
            &mut table,
            format_args!("{model}: {:<10} {:>13.2}% {:>13.2}% {:>17.2}% {:>17.2}%\n", m.target, g("top1"), m.top1, g("agreement_with_onnx"), agreement),
        );
        if m.top1 < g("top1") - g("top1_tolerance") {
            failures.push(format!("{} top-1 {:.2}% is below the golden {:.2}% by more than {} pt", m.target, m.top1, g("top1"), g("top1_tolerance")));
        }
        if agreement < g("agreement_with_onnx") - g("agreement_tolerance") {
            failures.push(format!(
                "{} agreement {agreement:.2}% is below the golden {:.2}% by more than {} pt",
                m.target,
                g("agreement_with_onnx"),
                g("agreement_tolerance")
            ));
        }
    }
    print!("{table}");
    assert!(failures.is_empty(), "accuracy regression:\n{table}{}", failures.join("\n"));
}

#[test]
fn fashion_cnn_s_accuracy_on_every_target() {
    check("fashion-cnn-s");
}

#[test]
fn fashion_resnet_accuracy_on_every_target() {
    check("fashion-resnet");
}
