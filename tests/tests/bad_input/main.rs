//! Every file in tests/bad-input/ given to the loader of its format: each must fail with the error
//! its README line names, quickly, and without a panic. (The commands that read these files are
//! run on the same corpus in host-tools/tests/cli.rs and perch-run/tests/cli.rs.)

mod generate;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use perch_runtime::preprocess::ChannelPolicy;

fn corpus_dir() -> PathBuf {
    perch_tests::root().join("tests/bad-input")
}

/// `(file, expected error)` for each case of the README's table; companions have no expectation.
fn table() -> Vec<(String, Option<String>)> {
    let readme = std::fs::read_to_string(corpus_dir().join("README.md")).expect("tests/bad-input/README.md");
    readme
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| file "))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let expected = cells.last().expect("three cells").strip_prefix('`').and_then(|e| e.strip_suffix('`'));
            (cells[0].to_string(), expected.map(str::to_string))
        })
        .collect()
}

/// Runs the loader of `file`'s format on it; `Ok` is a failure of the test, as is a panic.
fn load(path: &Path, format: &str) -> Result<(), String> {
    match format {
        "plan" => perch_runtime::Plan::load(path).map(drop).map_err(|e| e.to_string()),
        "pmc" => {
            // Plans are parsed in place and must be 4-byte aligned, as firmware embeds them.
            let bytes = perch_micro::plan::AlignedBytes::from(std::fs::read(path).map_err(|e| e.to_string())?.as_slice());
            perch_micro::Plan::parse(&bytes).map(drop).map_err(|e| e.to_string())
        }
        "image" => {
            let image = perch_runtime::preprocess::open_image(path).map_err(|e| e.to_string())?;
            // Decoded: then it must be wrong for the example model.
            let plan = perch_runtime::Plan::load(perch_tests::root().join("tests/cases/fashion-cnn-s/model.perch")).unwrap();
            let m = &plan.manifest;
            m.preprocess.apply(&image, &m.input, ChannelPolicy::Strict).map(drop).map_err(|e| e.to_string())
        }
        "onnx" => perch_host::import::import(path, None).map(drop).map_err(|e| e.to_string()),
        "data" => perch_datasets::Dataset::open(path.to_str().unwrap()).map(drop).map_err(|e| e.to_string()),
        other => panic!("no loader for tests/bad-input/{other}/"),
    }
}

#[test]
fn every_file_is_refused_with_its_error() {
    let dir = corpus_dir();
    let mut failures = Vec::new();
    let cases = table();
    assert!(cases.len() > 50, "the README table lists {} files", cases.len());
    for (file, expected) in &cases {
        let Some(expected) = expected else { continue };
        let path = dir.join(file);
        let format = file.split('/').next().unwrap();
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| load(&path, format)));
        let took = started.elapsed();
        match outcome {
            Err(_) => failures.push(format!("{file}: panicked")),
            Ok(Ok(())) => failures.push(format!("{file}: loaded without an error")),
            Ok(Err(e)) if !e.contains(expected.as_str()) => failures.push(format!("{file}: `{e}` does not contain `{expected}`")),
            Ok(Err(e)) => eprintln!("{file}: {e}"),
        }
        // Files that claim huge sizes must be refused from the claim, not after trying.
        if took > Duration::from_secs(2) {
            failures.push(format!("{file}: took {took:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} files:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn the_table_lists_every_file_and_the_corpus_stays_small() {
    let dir = corpus_dir();
    let listed: Vec<String> = table().into_iter().map(|(f, _)| f).collect();
    let mut on_disk = Vec::new();
    let mut total = 0;
    for format in std::fs::read_dir(&dir).unwrap() {
        let format = format.unwrap().path();
        if !format.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&format).unwrap() {
            let file = file.unwrap();
            total += file.metadata().unwrap().len();
            on_disk.push(format!("{}/{}", format.file_name().unwrap().to_string_lossy(), file.file_name().to_string_lossy()));
        }
    }
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(on_disk, sorted, "files on disk vs the README table");
    assert!(total < 256 * 1024, "the corpus is {total} bytes");
}

/// Rewrites tests/bad-input/ from generate.rs. Review the diff; the test above then checks the files.
#[test]
#[ignore = "writes the corpus: run by hand after changing generate.rs"]
fn regenerate() {
    let dir = corpus_dir();
    let cases = generate::corpus();
    for case in &cases {
        let path = dir.join(&case.file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        perch_runtime::plan::write_atomically(&path, &case.bytes).unwrap();
    }
    perch_runtime::plan::write_atomically(&dir.join("README.md"), generate::readme(&cases).as_bytes()).unwrap();
}
