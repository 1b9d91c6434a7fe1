//! `perch` as a user runs it: the example model compiles, and bad input gets one clear error line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn perch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perch")).args(args).output().expect("perch starts")
}

fn example() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../models/fashion-cnn-s/fashion-cnn-s.onnx")
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "expected `{needle}` in: {stderr}");
}

#[test]
fn compiles_the_example_and_leaves_nothing_else_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("m.perch");
    let out = perch(&[
        "compile", example().to_str().unwrap(), "--target", "sbc", "-o", out_path.to_str().unwrap(),
        "--mean", "0.2860", "--std", "0.3530", "--eval-data", "fashion-mnist:test", "--eval-limit", "500",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("lean-types"), "an f32 plan runs on the lean device binary: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("10 labels from"), "labels.txt beside the model is picked up: {stdout}");
    assert!(stdout.contains("on fashion-mnist:test (500 images)"), "{stdout}");
    let plan = perch_runtime::Plan::load(&out_path).unwrap();
    let accuracy = plan.manifest.accuracy.expect("recorded");
    assert!(accuracy.top1 > 85.0, "{accuracy:?}");
    assert_eq!(plan.manifest.preprocess.mean, vec![0.2860]);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec!["m.perch"], "no temporary files left");
}

#[test]
fn inspect_reports_ops_params_and_macs() {
    let out = perch(&["inspect", example().to_str().unwrap(), "--nodes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 3x3 convs 1->16 @28x28, 16->32 @14x14, 32->64 @7x7, and the 576->10 head: 1.93 M MACs.
    for needle in ["params    29.1 k", "MACs      1.9 M per image", "Conv x3", "sbc (tract, .perch): every op supported", "mcu ("] {
        assert!(stdout.contains(needle), "`{needle}` missing from:\n{stdout}");
    }
}

#[test]
fn inspect_reads_plans_too() {
    let plan = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../tests/cases/fashion-cnn-s/model.perch");
    let out = perch(&["inspect", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in ["format    v1 (perch", "checksum  sha256:", "labels    T-shirt/top, Trouser", "Conv x3"] {
        assert!(stdout.contains(needle), "`{needle}` missing from:\n{stdout}");
    }
    let out = perch(&["inspect", plan.to_str().unwrap(), "--input-shape", "1,1,28,28"]);
    assert_one_line_error(&out, "--input-shape applies to ONNX models");
}

#[test]
fn input_shape_overrides_a_dynamo_models_symbolic_batch() {
    // Dynamo exports carry value_info with a symbolic batch: pinning it must still work.
    let dynamo = example().with_file_name("fashion-cnn-s.dynamo.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("b1.perch");
    let out = perch(&[
        "compile", dynamo.to_str().unwrap(), "-o", out_path.to_str().unwrap(), "--input-shape", "1,1,28,28",
        "--eval-data", "fashion-mnist:test", "--eval-limit", "50",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan = perch_runtime::Plan::load(&out_path).unwrap();
    assert_eq!(plan.manifest.input.fixed_batch(), Some(1));

    let out = perch(&["compile", dynamo.to_str().unwrap(), "-o", out_path.to_str().unwrap(), "--input-shape", "1,1,32,32"]);
    assert_one_line_error(&out, "--input-shape");
    let out = perch(&["compile", dynamo.to_str().unwrap(), "-o", out_path.to_str().unwrap(), "--input-shape", "1,x-y,28"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a size nor a symbol name"));
}

#[test]
fn missing_model() {
    assert_one_line_error(&perch(&["compile", "/no/such/model.onnx", "-o", "/tmp/x.perch"]), "cannot read /no/such/model.onnx");
}

#[test]
fn not_an_onnx_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.onnx");
    std::fs::write(&path, "these are my notes, not a model\n").unwrap();
    let out_path = dir.path().join("x.perch");
    let out = perch(&["compile", path.to_str().unwrap(), "-o", out_path.to_str().unwrap()]);
    assert_one_line_error(&out, "is not an ONNX model");
    assert!(!out_path.exists());
}

#[test]
fn truncated_onnx_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(example()).unwrap();
    for cut in [bytes.len() / 3, bytes.len() - 7] {
        let path = dir.path().join("cut.onnx");
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let out = perch(&["compile", path.to_str().unwrap(), "-o", dir.path().join("x.perch").to_str().unwrap()]);
        assert_one_line_error(&out, "not an ONNX model");
    }
}

#[test]
fn labels_that_do_not_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "cat\ndog\n").unwrap();
    let out = perch(&[
        "compile", example().to_str().unwrap(), "-o", dir.path().join("x.perch").to_str().unwrap(),
        "--labels", labels.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "2 labels given for a model with 10 classes");
}

#[test]
fn preprocessing_that_does_not_fit_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("x.perch");
    let out = perch(&["compile", example().to_str().unwrap(), "-o", out_path.to_str().unwrap(), "--resize", "32x32"]);
    assert_one_line_error(&out, "makes 32x32 images, the model input takes 28x28");
    let out = perch(&["compile", example().to_str().unwrap(), "-o", out_path.to_str().unwrap(), "--mean", "0.1,0.2"]);
    assert_one_line_error(&out, "--mean has 2 values for 1 channel(s)");
}

#[test]
fn an_existing_plan_survives_a_failed_compile() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("x.perch");
    std::fs::write(&out_path, b"previous").unwrap();
    let out = perch(&["compile", example().to_str().unwrap(), "-o", out_path.to_str().unwrap(), "--eval-data", "/no/such/data"]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&out_path).unwrap(), b"previous");
}

/// The cases of tests/bad-input/ for one format: each file with the error it must give (README table).
fn bad_input(format: &str) -> Vec<(String, String)> {
    let dir = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../tests/bad-input");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let cases: Vec<(String, String)> = readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.strip_prefix("| ")?.trim_end_matches('|').split(" | ").map(str::trim).collect();
            let expected = cells.last()?.strip_prefix('`')?.strip_suffix('`')?;
            cells[0].starts_with(&format!("{format}/")).then(|| (dir.join(cells[0]).display().to_string(), expected.to_string()))
        })
        .collect();
    assert!(!cases.is_empty(), "tests/bad-input/README.md lists no {format}/ case");
    cases
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn every_bad_model_of_the_corpus_is_one_error_line_and_the_old_plan_stays() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("existing.perch");
    let previous = std::fs::read(Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../tests/cases/fashion-cnn-s/model.perch")).unwrap();
    std::fs::write(&existing, &previous).unwrap();
    for (file, expected) in bad_input("onnx") {
        assert_one_line_error(&perch(&["compile", &file, "-o", existing.to_str().unwrap()]), &expected);
        assert_one_line_error(&perch(&["inspect", &file]), &expected);
        assert!(std::fs::read(&existing).unwrap() == previous, "{file}: the existing plan was changed");
        assert_eq!(listing(dir.path()), ["existing.perch"], "{file}: files left behind");
    }
}

#[test]
fn every_bad_plan_and_dataset_of_the_corpus_is_one_error_line() {
    for (file, expected) in bad_input("plan") {
        assert_one_line_error(&perch(&["inspect", &file]), &expected);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    for (file, expected) in bad_input("data") {
        assert_one_line_error(&perch(&["dataset", "export", &file, "-o", out.to_str().unwrap(), "--count", "1"]), &expected);
        assert!(!out.exists(), "{file}: export wrote something");
    }
}

#[test]
fn a_compile_that_fails_while_writing_leaves_no_temporary_file() {
    // The output path is a directory: the plan is computed, the rename over it fails.
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("x.perch");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("keep"), b"x").unwrap();
    let out = perch(&["compile", example().to_str().unwrap(), "-o", blocker.to_str().unwrap()]);
    assert_one_line_error(&out, "cannot write");
    assert_eq!(listing(dir.path()), ["x.perch"]);
    assert_eq!(listing(&blocker), ["keep"]);
}

#[test]
fn exports_dataset_images_as_an_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = perch(&["dataset", "export", "fashion-mnist:test", "--count", "3", "-o", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The first three test images are an ankle boot, a pullover and a trouser.
    for p in ["Ankle boot/00000.png", "Pullover/00001.png", "Trouser/00002.png"] {
        assert!(dir.path().join(p).is_file(), "{p}");
    }
}

#[test]
fn image_folder_classes_are_matched_to_labels_by_name() {
    // ImageFolder sorts class directories alphabetically ("Ankle boot" first), the model's order is
    // Fashion-MNIST's ("T-shirt/top" first): accuracy is only right if names are matched.
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let out = perch(&["dataset", "export", "fashion-mnist:test", "--count", "200", "-o", images.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan = dir.path().join("m.perch");
    let out = perch(&[
        "compile", example().to_str().unwrap(), "-o", plan.to_str().unwrap(), "--mean", "0.2860", "--std", "0.3530",
        "--eval-data", images.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let accuracy = perch_runtime::Plan::load(&plan).unwrap().manifest.accuracy.unwrap();
    assert_eq!(accuracy.images, 200);
    assert!(accuracy.top1 > 85.0, "{accuracy:?}");

    std::fs::create_dir(images.join("Hat")).unwrap();
    std::fs::copy(images.join("Bag").read_dir().unwrap().next().unwrap().unwrap().path(), images.join("Hat/1.png")).unwrap();
    let out = perch(&["compile", example().to_str().unwrap(), "-o", plan.to_str().unwrap(), "--eval-data", images.to_str().unwrap()]);
    assert_one_line_error(&out, "classes [\"Hat\"] are not among the plan's labels");
}

#[test]
fn compiles_an_int8_plan_that_runs_integer_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("q.perch");
    let report = dir.path().join("layers.json");
    let out = perch(&[
        "compile", example().to_str().unwrap(), "-o", plan.to_str().unwrap(), "--mean", "0.2860", "--std", "0.3530",
        "--quantize", "int8", "--calibration", "fashion-mnist:train", "--calibration-samples", "200",
        "--calibration-method", "percentile=99.99", "--quant-report", report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SQNR"), "the debugger table is printed: {stdout}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let layers = json["layers"].as_array().unwrap();
    assert!(layers.iter().any(|l| l["op"] == "Conv" && l["sqnr_db"].as_f64().unwrap() > 20.0), "{json}");
    let loaded = perch_runtime::Plan::load(&plan).unwrap();
    assert_eq!(loaded.manifest.quantization.scheme, "int8");
    assert_eq!(loaded.manifest.quantization.int8_layers.len(), 4, "3 convs and the head");

    let out = perch(&["inspect", plan.to_str().unwrap(), "--optimized"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4 matrix-product/convolution nodes: 4 on integer kernels, 0 not"), "{stdout}");
    // Perch's int8 kernels by default (`--int8-kernels tract` would show tract's `mmm_i32` ones).
    assert!(stdout.contains("PerchQConv#kernels"), "{stdout}");
}

#[test]
fn bad_calibration_input_gets_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("q.perch");
    let model = example();
    let run = |extra: &[&str]| {
        let mut args = vec!["compile", model.to_str().unwrap(), "-o", out_path.to_str().unwrap(), "--quantize", "int8"];
        args.extend_from_slice(extra);
        perch(&args)
    };
    assert_one_line_error(&run(&[]), "needs --calibration");
    assert_one_line_error(&run(&["--calibration", "/no/such/data"]), "cannot read /no/such/data");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_one_line_error(&run(&["--calibration", empty.to_str().unwrap()]), "not a dataset");
    // An undecodable image and an RGB image for a greyscale model, in ImageFolder layout.
    let bad = dir.path().join("bad/class");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("x.png"), b"not a png").unwrap();
    assert_one_line_error(&run(&["--calibration", dir.path().join("bad").to_str().unwrap()]), "does not decode");
    let rgb = dir.path().join("rgb/class");
    std::fs::create_dir_all(&rgb).unwrap();
    image::RgbImage::from_pixel(28, 28, image::Rgb([200, 10, 10])).save(rgb.join("x.png")).unwrap();
    assert_one_line_error(&run(&["--calibration", dir.path().join("rgb").to_str().unwrap()]), "3 channel(s)");
    assert_one_line_error(
        &run(&["--calibration", "fashion-mnist:train", "--calibration-samples", "32", "--eval-data", "fashion-mnist:test",
            "--eval-limit", "200", "--max-accuracy-drop=-1"]),
        "--max-accuracy-drop",
    );
    let out = perch(&["compile", model.to_str().unwrap(), "-o", out_path.to_str().unwrap(), "--quantize", "dynamic", "--calibration", "x"]);
    assert_one_line_error(&out, "needs no --calibration");
    let out = run(&["--calibration", "fashion-mnist:train", "--calibration-method", "kl"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not a calibration method"));
    assert!(!out_path.exists(), "no plan written on error");
}

#[test]
fn mcu_plans_are_sized_and_refused_when_too_big() {
    let dir = tempfile::tempdir().unwrap();
    let pmc = dir.path().join("m.pmc");
    let model = example();
    let base = ["compile", model.to_str().unwrap(), "--target", "mcu", "-o", pmc.to_str().unwrap()];
    let int8 = ["--quantize", "int8", "--calibration", "fashion-mnist:train", "--calibration-samples", "64"];
    let run = |extra: &[&str]| perch(&[&base[..], &int8[..], extra].concat());

    let out = run(&["--chip", "stm32f411", "--eval-data", "fashion-mnist:test", "--eval-limit", "200"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in ["conv2d", "fully_connected", "lookup", "fits stm32f411", "MCU accuracy (host simulation, bit-exact)"] {
        assert!(stdout.contains(needle), "`{needle}` missing from:\n{stdout}");
    }
    let bytes = std::fs::read(&pmc).unwrap();
    assert!(perch_micro::Plan::parse(perch_micro::plan::AlignedBytes::from(bytes.as_slice()).as_bytes()).is_ok());
    std::fs::remove_file(&pmc).unwrap();

    assert_one_line_error(&run(&["--flash", "512K", "--ram", "16K"]), "does not fit");
    assert_one_line_error(&run(&["--flash", "40K", "--ram", "1M"]), "flash (plan + code) needs");
    assert_one_line_error(&run(&["--chip", "esp32"]), "unknown chip `esp32`");
    assert_one_line_error(&perch(&base), "--target mcu runs int8 only");
    assert!(!pmc.exists(), "nothing written when the plan is refused");
}

#[test]
fn eval_compares_every_target_and_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let out = perch(&[
        "eval", example().to_str().unwrap(), "--data", "fashion-mnist:test", "--limit", "300",
        "--calibration", "fashion-mnist:train", "--calibration-samples", "64", "--mean", "0.2860", "--std", "0.3530",
        "--json", "--report", report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let targets = json["targets"].as_array().unwrap();
    let names: Vec<&str> = targets.iter().map(|t| t["target"].as_str().unwrap()).collect();
    assert_eq!(names, ["onnx", "sbc-f32", "sbc-int8", "mcu"]);
    for t in targets {
        assert!(t["top1"].as_f64().unwrap() > 85.0, "{t}");
        assert_eq!(t["confusion"].as_array().unwrap().len(), 10);
    }
    assert_eq!(targets[1]["agreement"].as_f64(), Some(100.0), "the float plan is the ONNX graph");
    assert!(targets[3]["logit_error"]["cosine"].as_f64().unwrap() > 0.99);
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Confusion matrix") && html.contains("SQNR"), "charts inline");
    assert!(report.join("report.md").is_file() && report.join("per-class.svg").is_file());

    // A plan evaluates as it is; images of another colour are converted, with a warning.
    let plan = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../tests/cases/fashion-cnn-s/model.perch");
    let rgb = dir.path().join("rgb/Trouser");
    std::fs::create_dir_all(&rgb).unwrap();
    image::RgbImage::from_pixel(28, 28, image::Rgb([20, 20, 20])).save(rgb.join("x.png")).unwrap();
    let out = perch(&["eval", plan.to_str().unwrap(), "--data", dir.path().join("rgb").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("they were converted"), "{}", String::from_utf8_lossy(&out.stderr));

    // Bad input: classes the labels do not name, int8 targets without calibration.
    let odd = dir.path().join("odd/Spaceship");
    std::fs::create_dir_all(&odd).unwrap();
    image::GrayImage::new(28, 28).save(odd.join("x.png")).unwrap();
    assert_one_line_error(&perch(&["eval", plan.to_str().unwrap(), "--data", dir.path().join("odd").to_str().unwrap()]), "Spaceship");
    assert_one_line_error(
        &perch(&["eval", example().to_str().unwrap(), "--data", "fashion-mnist:test", "--targets", "sbc-int8"]),
        "needs --calibration",
    );
}

#[test]
fn build_writes_every_artifact() {
    // Run where there is no firmware/ directory: everything but the ELF.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_perch"))
        .current_dir(dir.path())
        .args(["build", example().to_str().unwrap(), "-o", "out", "--calibration", "fashion-mnist:train", "--calibration-samples", "64"])
        .args(["--eval-data", "fashion-mnist:test", "--eval-limit", "200", "--mean", "0.2860", "--std", "0.3530"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no firmware ELF"));
    let o = dir.path().join("out");
    for f in ["fashion-cnn-s.perch", "fashion-cnn-s.int8.perch", "fashion-cnn-s.pmc", "fashion-cnn-s.vectors", "report/report.html"] {
        assert!(o.join(f).is_file(), "{f} missing");
    }
    let int8 = perch_runtime::Plan::load(o.join("fashion-cnn-s.int8.perch")).unwrap();
    assert_eq!(int8.manifest.quantization.scheme, "int8");
    assert_eq!(int8.manifest.accuracy.unwrap().images, 200, "accuracy sealed into the plan");
}

/// `Relu` computed in f64 between two casts: x [1, 1, 2, 2] f32 -> [1, 4] f32.
fn onnx_computing_in_f64() -> Vec<u8> {
    use prost::Message;
    use tract_onnx::pb;
    let value_info = |name: &str, dims: &[i64]| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cast = |input: &str, output: &str, to: pb::tensor_proto::DataType| pb::NodeProto {
        input: vec![input.into()],
        output: vec![output.into()],
        op_type: "Cast".into(),
        name: output.into(),
        attribute: vec![pb::AttributeProto {
            name: "to".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: to as i64,
            ..Default::default()
        }],
        ..Default::default()
    };
    let node = |op: &str, input: &str, output: &str| pb::NodeProto {
        input: vec![input.into()],
        output: vec![output.into()],
        op_type: op.into(),
        name: output.into(),
        ..Default::default()
    };
    let graph = pb::GraphProto {
        node: vec![
            cast("x", "wide", pb::tensor_proto::DataType::Double),
            node("Relu", "wide", "relu"),
            cast("relu", "narrow", pb::tensor_proto::DataType::Float),
            node("Flatten", "narrow", "y"),
        ],
        name: "f64".into(),
        input: vec![value_info("x", &[1, 1, 2, 2])],
        output: vec![value_info("y", &[1, 4])],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn plans_the_lean_device_binary_would_refuse_get_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("f64.onnx");
    std::fs::write(&model, onnx_computing_in_f64()).unwrap();
    let plan = dir.path().join("f64.perch");
    let out = perch(&["compile", model.to_str().unwrap(), "-o", plan.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("holds F64 tensors") && stderr.contains("lean-types"), "{stderr}");
    // The example's f32 plan gets no such warning: compiles_the_example_and_leaves_nothing_else_behind.
}
