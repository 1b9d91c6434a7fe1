//! perch-run as a user runs it: good runs and every kind of bad input, each a one-line error and a
//! non-zero exit. Under qemu (`cargo xtask test-cross`) PERCH_TEST_RUNNER names the emulator command
//! that runs the cross-built binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn case_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases/fashion-cnn-s")
}

fn perch_run(args: &[&str]) -> Output {
    let exe = env!("CARGO_BIN_EXE_perch-run");
    let mut cmd = match std::env::var("PERCH_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut c = Command::new(parts.next().unwrap());
            c.args(parts).arg(exe);
            c
        }
        _ => Command::new(exe),
    };
    cmd.args(args).output().expect("perch-run starts")
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
