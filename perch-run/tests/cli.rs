//! perch-run as a user runs it: good runs and every kind of bad input, each a one-line error and a
//! non-zero exit. Under qemu (`cargo xtask test-cross`) PERCH_TEST_RUNNER names the emulator command
//! that runs the cross-built binary.

use std::path::{Path, PathBuf};
mod common;
use common::{output_patiently, perch_run_command};
use perch_runtime::kernels::fconv::FConvKernel;
use perch_runtime::kernels::Isa;
use std::process::Output;

fn case_dir() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../tests/cases/fashion-cnn-s")
}

/// perch-run with `args`, run to completion (started again if stuck before running, as a forked
/// child under qemu-user can be: `output_patiently`).
fn perch_run(args: &[&str]) -> Output {
    let command = || {
        let mut c = perch_run_command();
        c.args(args);
        c
    };
    output_patiently(command, std::time::Duration::from_secs(300)).expect("perch-run starts")
}

fn plan() -> String {
    case_dir().join("model.perch").display().to_string()
}

fn first_image() -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(case_dir().join("images")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.remove(0)
}

/// Fails unless the command failed with exactly one `error:` line containing `needle`, and no panic.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "expected `{needle}` in: {stderr}");
}

#[test]
fn classifies_an_image_as_json() {
    let image = first_image();
    let out = perch_run(&["classify", "--plan", &plan(), image.to_str().unwrap(), "--top", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let preds = json[0]["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    let p0 = preds[0]["probability"].as_f64().unwrap();
    assert!(p0 >= preds[1]["probability"].as_f64().unwrap() && p0 <= 1.0);
}

#[test]
fn a_directory_is_walked() {
    let out = perch_run(&["classify", "--plan", &plan(), case_dir().join("images").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(lines, std::fs::read_dir(case_dir().join("images")).unwrap().count());
}

#[test]
fn missing_plan() {
    assert_one_line_error(&perch_run(&["classify", "--plan", "/no/such.perch", "x.png"]), "No such file");
}

#[test]
fn not_a_plan() {
    let image = first_image();
    assert_one_line_error(&perch_run(&["classify", "--plan", image.to_str().unwrap(), "x.png"]), "not a .perch plan");
}

#[test]
fn bad_plans_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(plan()).unwrap();
    let image = first_image();
    let image = image.to_str().unwrap();

    let truncated = dir.path().join("truncated.perch");
    std::fs::write(&truncated, &good[..good.len() - 100]).unwrap();
    assert_one_line_error(&perch_run(&["classify", "--plan", truncated.to_str().unwrap(), image]), "truncated");

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    let corrupt = dir.path().join("corrupt.perch");
    std::fs::write(&corrupt, &flipped).unwrap();
    assert_one_line_error(&perch_run(&["classify", "--plan", corrupt.to_str().unwrap(), image]), "checksum");

    let mut newer = good.clone();
    newer[8..12].copy_from_slice(&99u32.to_le_bytes());
    let versioned = dir.path().join("v99.perch");
    std::fs::write(&versioned, &newer).unwrap();
    assert_one_line_error(&perch_run(&["classify", "--plan", versioned.to_str().unwrap(), image]), "version 99");
}

/// The cases of tests/bad-input/ for one format: each file with the error it must give (README table).
fn bad_input(format: &str) -> Vec<(String, String)> {
    let dir = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../tests/bad-input");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.strip_prefix("| ")?.trim_end_matches('|').split(" | ").map(str::trim).collect();
            let expected = cells.last()?.strip_prefix('`')?.strip_suffix('`')?;
            cells[0].starts_with(&format!("{format}/")).then(|| (dir.join(cells[0]).display().to_string(), expected.to_string()))
        })
        .collect()
}

#[test]
fn every_bad_plan_and_image_of_the_corpus_is_one_error_line() {
    let image = first_image();
    let image = image.to_str().unwrap();
    let plans = bad_input("plan");
    assert!(plans.len() > 10, "tests/bad-input/README.md lists the plans");
    for (file, expected) in &plans {
        assert_one_line_error(&perch_run(&["info", "--plan", file]), expected);
        assert_one_line_error(&perch_run(&["classify", "--plan", file, image]), expected);
    }
    for (file, expected) in bad_input("image") {
        assert_one_line_error(&perch_run(&["classify", "--plan", &plan(), &file]), &expected);
    }
}

#[test]
fn image_that_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.png");
    let good = std::fs::read(first_image()).unwrap();
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    assert_one_line_error(&perch_run(&["classify", "--plan", &plan(), bad.to_str().unwrap()]), "does not decode");
}

#[test]
fn image_with_the_wrong_channel_count() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = dir.path().join("rgb.png");
    image::RgbImage::from_fn(28, 28, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, 128])).save(&rgb).unwrap();
    let rgb = rgb.to_str().unwrap();
    assert_one_line_error(&perch_run(&["classify", "--plan", &plan(), rgb]), "3 channel(s)");
    let out = perch_run(&["classify", "--plan", &plan(), rgb, "--convert"]);
    assert!(out.status.success(), "--convert must accept it: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn info_shows_the_manifest() {
    let out = perch_run(&["info", "--plan", &plan()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in ["format    v1 (perch", "input     input [batch,1,28,28] Nchw f32", "labels    T-shirt/top, Trouser", "\"mean\":[0.286]"] {
        assert!(stdout.contains(needle), "`{needle}` missing from:\n{stdout}");
    }
}

#[test]
fn bench_reports_latency_throughput_and_memory_as_json() {
    let out = perch_run(&["bench", "--plan", &plan(), "--runs", "20", "--warmup", "2", "--json", "--profile"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"], 20);
    assert_eq!(v["batch"], 1);
    let l = &v["latency_us"];
    let f = |k: &str| l[k].as_f64().unwrap();
    assert!(f("min") > 0.0 && f("min") <= f("p50") && f("p50") <= f("p90") && f("p90") <= f("p99") && f("p99") <= f("max"), "{l}");
    assert!(v["throughput_images_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    let inside = &v["cold_start_ms"]["this_process"];
    assert!(inside["load"].as_f64().unwrap() > 0.0 && inside["optimize"].as_f64().unwrap() > 0.0, "{inside}");
    // The process-start figure comes from starting perch-run again, which qemu-user cannot do without
    // binfmt: then the report says why instead.
    let cold = &v["cold_start_ms"];
    assert!(cold["process_start_to_first_result"].as_f64().is_some() || cold["process_start_error"].is_string(), "{cold}");
    // (Not compared with this process's own load time: two timings on a shared machine are no order.)
    if std::env::var("PERCH_TEST_RUNNER").is_err() {
        assert!(cold["process_start_to_first_result"].as_f64().unwrap() > 0.0, "{cold}");
    }
    // The profile names Perch's float convolutions (where they beat tract's: not on 32-bit ARM)
    // and classifier head, and the shares add up to the whole.
    let nodes = v["profile"].as_array().unwrap();
    let ops: &[&str] = if FConvKernel::pays_on(Isa::best()) { &["PerchConv#f32", "PerchDense#f32"] } else { &["PerchDense#f32"] };
    assert!(ops.iter().all(|op| nodes.iter().any(|n| n["op"] == *op)), "{nodes:?}");
    assert_eq!(nodes.iter().any(|n| n["op"] == "PerchConv#f32"), FConvKernel::pays_on(Isa::best()), "{nodes:?}");
    let total: f64 = nodes.iter().map(|n| n["share"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
}

#[test]
fn bench_text_and_bad_arguments() {
    let out = perch_run(&["bench", "--plan", &plan(), "--duration", "0.2", "--no-cold-start", "--batch", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["latency     min ", "p99 ", "throughput  ", "peak RSS    ", "batch 4", "cold start  "] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
    assert_one_line_error(&perch_run(&["bench", "--plan", &plan(), "--runs", "0"]), "--runs must be at least 1");
    assert_one_line_error(&perch_run(&["bench", "--plan", &plan(), "--duration", "0"]), "--duration must be");
    assert_one_line_error(&perch_run(&["bench", "--plan", "/no/such.perch"]), "No such file");
    let threads = perch_run(&["bench", "--plan", &plan(), "--runs", "3", "--threads", "0"]);
    assert_one_line_error(&threads, "0 threads: at least one is needed");
}

/// More than one thread needs the `multithread` feature: without it (the default build) asking for
/// two is a one-line error; with it (`cargo xtask test` runs this test again with the feature) the
/// plan runs on a pool and says so.
#[test]
fn threads_need_the_multithread_feature() {
    let out = perch_run(&["bench", "--plan", &plan(), "--runs", "3", "--threads", "2", "--json", "--no-cold-start"]);
    if cfg!(feature = "multithread") {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["threads"], 2);
        assert_eq!(json["runs"], 3);
    } else {
        assert_one_line_error(&out, "2 threads: this build has no `multithread` feature");
    }
}

/// A folder with the case's images, one broken file and one text file named like an image.
fn folder_with_bad_files() -> (tempfile::TempDir, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut good = 0;
    for entry in std::fs::read_dir(case_dir().join("images")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        good += 1;
    }
    let png = std::fs::read(first_image()).unwrap();
    std::fs::write(dir.path().join("broken.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(dir.path().join("notes, \"draft\".jpg"), b"not an image").unwrap();
    (dir, good)
}

#[test]
fn a_folder_with_unreadable_files_is_classified_with_warnings_as_csv() {
    let (dir, good) = folder_with_bad_files();
    let out = perch_run(&["classify", "--plan", &plan(), dir.path().to_str().unwrap(), "--csv", "--top", "2"]);
    // Exit status 2: some images skipped, the rest classified.
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().filter(|l| l.starts_with("warning: skipping ")).count(), 2, "{stderr}");
    assert!(stderr.contains(&format!("classified {good} of {} images; skipped 2", good + 2)), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "image,label_1,probability_1,label_2,probability_2");
    assert_eq!(lines.len(), good + 1, "{csv}");
    // Labels with a slash or a comma stay one field: "T-shirt/top" needs no quotes, each row has 5 fields.
    for row in &lines[1..] {
        assert_eq!(row.matches(',').count(), 4, "{row}");
        let p: f64 = row.split(',').nth(2).unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "{row}");
    }
}

#[test]
fn a_folder_as_json_stays_valid_json_with_skipped_files() {
    let (dir, good) = folder_with_bad_files();
    let out = perch_run(&["classify", "--plan", &plan(), dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = json.as_array().unwrap();
    assert_eq!(records.len(), good);
    assert!(records.iter().all(|r| r["predictions"].as_array().unwrap().len() == 3));
    // Nothing classifiable: exit 1, and still an error line at the end.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("a.png"), b"x").unwrap();
    std::fs::write(bad.path().join("b.png"), b"y").unwrap();
    let out = perch_run(&["classify", "--plan", &plan(), bad.path().to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().last().unwrap().starts_with("error: none of the 2 images"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, serde_json::json!([]));
}

#[test]
fn help_teaches_by_example() {
    for (args, needles) in [
        (vec!["--help"], vec!["classify", "bench", "serve", "curl -T"]),
        (vec!["bench", "--help"], vec!["--runs", "--duration", "--profile", "--threads", "Examples:"]),
        (vec!["serve", "--help"], vec!["--model-store", "--models", "NAME=FILE", "--queue", "--max-body", "503", "413", "curl -T"]),
        (vec!["classify", "--help"], vec!["--csv", "--json", "Exit status"]),
    ] {
        let out = perch_run(&args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for needle in needles {
            assert!(text.contains(needle), "{args:?}: `{needle}` missing from:\n{text}");
        }
    }
}
