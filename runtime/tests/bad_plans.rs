//! Damaged plans get a typed error naming the damage, never a panic.

use std::path::Path;

use perch_runtime::plan::container::{self, HEADER_LEN};
use perch_runtime::plan::FORMAT_VERSION;
use perch_runtime::{Plan, PlanError};

fn good_plan() -> Vec<u8> {
    let path = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../tests/cases/fashion-cnn-s/model.perch");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_committed_plan_loads() {
    let plan = Plan::from_bytes(&good_plan()).unwrap();
    assert_eq!(plan.manifest.format_version, FORMAT_VERSION);
    assert_eq!(plan.manifest.labels.len(), 10);
}

#[test]
fn wrong_version_is_refused_with_both_versions_named() {
    let mut bytes = good_plan();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = Plan::from_bytes(&bytes).unwrap_err();
    assert!(matches!(err, PlanError::UnsupportedVersion { .. }), "{err}");
    assert!(err.to_string().contains(&format!("version {}", FORMAT_VERSION + 1)), "{err}");
}

#[test]
fn a_flipped_bit_anywhere_in_the_body_fails_the_checksum() {
    let good = good_plan();
    for at in [HEADER_LEN, HEADER_LEN + 100, good.len() / 2, good.len() - 1] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x10;
        let err = Plan::from_bytes(&bytes).unwrap_err();
        assert!(matches!(err, PlanError::ChecksumMismatch { .. }), "byte {at}: {err}");
    }
}

#[test]
fn truncation_at_any_point_is_reported() {
    let good = good_plan();
    for len in [0, 5] {
        let err = Plan::from_bytes(&good[..len]).unwrap_err();
        assert!(matches!(err, PlanError::NotAPlan), "len {len}: {err}");
    }
    // With the magic intact, the file is a plan that was cut short.
    for len in [8, 40, HEADER_LEN, HEADER_LEN + 10, good.len() / 2, good.len() - 1] {
        let err = Plan::from_bytes(&good[..len]).unwrap_err();
        assert!(matches!(err, PlanError::Truncated { .. }), "len {len}: {err}");
    }
}

/// Seals `manifest` and `graph` into a container with a valid checksum: what it holds is then the
/// only thing wrong.
fn reseal(manifest: &perch_runtime::Manifest, graph: &[u8]) -> Vec<u8> {
    container::encode(FORMAT_VERSION, &serde_json::to_vec(manifest).unwrap(), graph).unwrap()
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_consistent_but_wrong_manifest_or_graph_is_refused() {
    let good = good_plan();
    let parts = container::decode(&good, FORMAT_VERSION).unwrap();
    let manifest: perch_runtime::Manifest = serde_json::from_slice(parts.manifest).unwrap();
    assert!(Plan::from_bytes(&reseal(&manifest, parts.graph)).is_ok(), "resealing alone must not break a plan");

    let mut newer_tract = manifest.clone();
    newer_tract.tract_version = "0.24.0".into();
    let err = Plan::from_bytes(&reseal(&newer_tract, parts.graph)).unwrap_err();
    assert!(matches!(err, PlanError::TractVersion { .. }), "{err}");

    let err = Plan::from_bytes(&reseal(&manifest, b"not a tar")).unwrap_err();
    assert!(matches!(err, PlanError::Manifest(_)), "graph hash mismatch: {err}");

    let not_json = container::encode(FORMAT_VERSION, b"{ nope", b"").unwrap();
    assert!(matches!(Plan::from_bytes(&not_json), Err(PlanError::Manifest(_))));

    let mut no_mean = manifest.clone();
    no_mean.preprocess.mean.clear();
    let err = Plan::from_bytes(&reseal(&no_mean, parts.graph)).unwrap_err();
    assert!(err.to_string().contains("mean and std need 1 value(s) each"), "{err}");

    let mut flat = manifest.clone();
    flat.input.shape.truncate(2);
    let err = Plan::from_bytes(&reseal(&flat, parts.graph)).unwrap_err();
    assert!(err.to_string().contains("4-D image batch"), "{err}");

    let mut wrong_shape = manifest.clone();
    wrong_shape.input.shape[2] = perch_runtime::plan::Dim::Fixed(32);
    let err = Plan::from_bytes(&reseal(&wrong_shape, parts.graph)).unwrap_err();
    assert!(err.to_string().contains("axis 2"), "{err}");
}

#[test]
fn a_tar_that_is_not_nnef_is_a_graph_error() {
    let good = good_plan();
    let parts = container::decode(&good, FORMAT_VERSION).unwrap();
    let mut manifest: perch_runtime::Manifest = serde_json::from_slice(parts.manifest).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_cksum();
    tar.append_data(&mut header, "graph.nnef", &b"hello"[..]).unwrap();
    let graph = tar.into_inner().unwrap();
    manifest.graph_sha256 = hex_sha256(&graph);
    let err = Plan::from_bytes(&reseal(&manifest, &graph)).unwrap_err();
    assert!(matches!(err, PlanError::Graph(_)), "{err}");
}
