//! Rewrites tests/cases/<model>/: the float plan compiled from the committed ONNX, the first test
//! images as PNG, and the logits tract-onnx computes for them on this (x86) machine. Run it through
//! `cargo xtask goldens` after a deliberate change, and review the diff.

use perch_datasets::{Dataset, Item};
use perch_runtime::ChannelPolicy;
use perch_tests::*;

const IMAGES: usize = 10;

fn main() -> anyhow::Result<()> {
    let model = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: perch-goldens MODEL"))?;
    let onnx = model_path(&model, "onnx");
    let dir = root().join("tests/cases").join(&model);
    std::fs::create_dir_all(dir.join("images"))?;
    let (bytes, plan) = compile_plan(&onnx)?;
    perch_runtime::plan::write_atomically(&dir.join("model.perch"), &bytes)?;
    let manifest = plan.manifest.clone();
    let test = Dataset::open("fashion-mnist:test")?;
    let reference = onnx_reference(&onnx, 1)?;
    let mut images = Vec::new();
    for i in 0..IMAGES {
        let Item::Image(img) = test.item(i) else { anyhow::bail!("IDX items are images") };
        let file = format!("images/{i:05}.png");
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
        perch_runtime::plan::write_atomically(&dir.join(&file), &png)?;
        let values = manifest.preprocess.apply(&img, &manifest.input, ChannelPolicy::Strict)?;
        let logits = run_reference(&reference, &values, &[1, 1, 28, 28])?.remove(0);
        images.push(serde_json::json!({ "file": file, "label": test.label(i), "logits": logits }));
    }
    let case = serde_json::json!({
        "about": "Written by `cargo xtask goldens`: logits are tract-onnx's on x86 for the ONNX model; every CPU must match them within the tolerance.",
        "model": format!("models/{model}/{model}.onnx"),
        "plan": "model.perch",
        "tolerance": "CrossArch",
        "images": images,
    });
    let mut text = serde_json::to_string_pretty(&case)?;
    text.push('\n');
    perch_runtime::plan::write_atomically(&dir.join("case.json"), text.as_bytes())?;
    println!("wrote {}", dir.display());
    Ok(())
}
