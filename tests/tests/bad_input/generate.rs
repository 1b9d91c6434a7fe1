//! The corpus in tests/bad-input/, built from code so that each file is damaged in exactly one way.
//! `cargo test -p perch-tests --test bad_input -- --ignored regenerate` rewrites the files and the
//! README's table; the files are committed, and the table is what the other tests read.
#![allow(clippy::vec_init_then_push, reason = "one push per case, in the order of the README's table")]

use std::io::Write;

use perch_micro::plan::{PlanBuilder, TensorDesc};
use perch_runtime::plan::{InputSpec, Layout, Manifest, OutputKind, OutputSpec, Plan, Quantization, Source, container};
use perch_runtime::preprocess::Preprocess;
use prost::Message;
use tract_onnx::pb;

/// One file of the corpus: where it goes (`<format>/<name>`), what is wrong with it, and a substring
/// of the error it must give. `expected` is `None` for a companion file (a dataset's labels) that
/// the case beside it needs, which is not fed alone.
pub struct Case {
    pub file: String,
    pub what: &'static str,
    pub expected: Option<&'static str>,
    pub bytes: Vec<u8>,
}

fn case(file: &str, what: &'static str, expected: &'static str, bytes: Vec<u8>) -> Case {
    Case { file: file.to_string(), what, expected: Some(expected), bytes }
}

fn companion(file: &str, what: &'static str, bytes: Vec<u8>) -> Case {
    Case { file: file.to_string(), what, expected: None, bytes }
}

pub fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(plans());
    cases.extend(micro_plans());
    cases.extend(images());
    cases.extend(onnx_models());
    cases.extend(datasets());
    cases
}

// ---- .perch plans ----

fn manifest() -> Manifest {
    let input = InputSpec {
        name: "input".into(),
        shape: [1, 1, 4, 4].map(perch_runtime::plan::Dim::Fixed).to_vec(),
        layout: Layout::Nchw,
        dtype: "f32".into(),
    };
    Manifest {
        format_version: perch_runtime::plan::FORMAT_VERSION,
        perch_version: "0.1.0".into(),
        tract_version: perch_runtime::plan::TRACT_VERSION.into(),
        source: Source { file_name: "bad.onnx".into(), sha256: "00".repeat(32), producer: None, opset: Some(13) },
        preprocess: Preprocess::default_for(&input),
        input,
        output: OutputSpec { name: "output".into(), shape: [1, 2].map(perch_runtime::plan::Dim::Fixed).to_vec(), kind: OutputKind::Logits },
        labels: vec!["a".into(), "b".into()],
        quantization: Quantization { scheme: "float32".into(), ..Default::default() },
        accuracy: None,
        graph_sha256: String::new(),
    }
}

fn seal(graph: &[u8]) -> Vec<u8> {
    Plan::seal(&mut manifest(), graph).expect("seals")
}

/// A tar of `(name, bytes)` entries, names written into the header as they are (tar::Builder would
/// refuse `..` and absolute paths, which are the point of some cases).
fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        out.extend_from_slice(&tar_header(name, data.len() as u64));
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    let bytes = h.as_mut_bytes();
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    h.set_mode(0o644);
    h.set_size(size);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    *h.as_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// An NNEF `.dat` header (tract-nnef tensors.rs) followed by `data`.
fn dat(dims: &[u32], bits: u32, item_type: u16, data_bytes: u32, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 128];
    h[..4].copy_from_slice(&[0x4e, 0xef, 1, 0]);
    h[4..8].copy_from_slice(&data_bytes.to_le_bytes());
    h[8..12].copy_from_slice(&(dims.len() as u32).to_le_bytes());
    for (i, d) in dims.iter().enumerate() {
        h[12 + 4 * i..16 + 4 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[44..48].copy_from_slice(&bits.to_le_bytes());
    h[48..50].copy_from_slice(&item_type.to_le_bytes());
    h.extend_from_slice(data);
    h
}

const GRAPH: &[u8] = b"version 1.0;\ngraph network(input) -> (output) {\n  input = external<scalar>(shape = [1, 1, 4, 4]);\n}\n";

fn plans() -> Vec<Case> {
    let good_tar = tar(&[("graph.nnef", GRAPH), ("w.dat", &dat(&[2], 32, 0, 8, &[0; 8]))]);
    let good = seal(&good_tar);
    let mut v = Vec::new();
    v.push(case("plan/empty.perch", "0 bytes", "not a .perch plan", vec![]));
    v.push(case("plan/zip.perch", "a zip file renamed", "not a .perch plan", b"PK\x03\x04\x14\x00\x00\x00\x08\x00 not a plan".to_vec()));
    v.push(case("plan/truncated-header.perch", "the first 40 of the 56 header bytes", "plan is truncated", good[..40].to_vec()));
    v.push(case("plan/truncated-body.perch", "cut 100 bytes before the end", "plan is truncated", good[..good.len() - 100].to_vec()));
    let mut wrong = good.clone();
    wrong[8..12].copy_from_slice(&99u32.to_le_bytes());
    v.push(case("plan/wrong-version.perch", "container format version 99", "plan format version 99 is not the one this build reads", wrong));
    let mut flipped = good.clone();
    let at = good.len() - 700;
    flipped[at] ^= 0x04;
    v.push(case("plan/bit-flipped.perch", "one bit flipped in the graph", "checksum", flipped));
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"extra");
    v.push(case("plan/trailing-bytes.perch", "5 bytes after the graph", "trailing data after the graph", trailing));
    let mut huge_len = good.clone();
    huge_len[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    v.push(case("plan/graph-length-u64-max.perch", "header claims a graph of 2^64-1 bytes", "plan is truncated", huge_len));
    v.push(case(
        "plan/manifest-not-json.perch",
        "manifest is `{ \"format_version\": 1,` (cut JSON)",
        "plan manifest is invalid",
        container::encode(1, b"{ \"format_version\": 1,", &good_tar).unwrap(),
    ));
    let mut m = manifest();
    let sealed = Plan::seal(&mut m, &good_tar).unwrap();
    m.format_version = 7;
    let lying = container::encode(1, &serde_json::to_vec(&m).unwrap(), &good_tar).unwrap();
    v.push(case("plan/manifest-other-version.perch", "manifest says format 7, header says 1", "manifest says format 7", lying));
    let mut m: Manifest = serde_json::from_slice(container::decode(&sealed, 1).unwrap().manifest).unwrap();
    m.graph_sha256 = "ab".repeat(32);
    let other_hash = container::encode(1, &serde_json::to_vec(&m).unwrap(), &good_tar).unwrap();
    v.push(case("plan/graph-hash-mismatch.perch", "manifest's graph hash is not the graph's", "does not match the manifest's", other_hash));

    let mut gz = gzip(&good_tar);
    let mid = gz.len() / 2;
    gz[mid] ^= 0xff;
    v.push(case("plan/gzip-corrupt.perch", "gzipped graph with a damaged deflate stream (resealed)", "plan graph archive is damaged: gzip stream", seal(&gz)));
    let cut = &good_tar[..512 + 40];
    v.push(case("plan/tar-truncated.perch", "graph tar cut inside graph.nnef (resealed)", "graph.nnef is truncated", seal(cut)));
    v.push(case(
        "plan/tar-dotdot-path.perch",
        "tar entry `../../evil.dat`",
        "points outside the archive",
        seal(&tar(&[("graph.nnef", GRAPH), ("../../evil.dat", &dat(&[2], 32, 0, 8, &[0; 8]))])),
    ));
    v.push(case(
        "plan/tar-absolute-path.perch",
        "tar entry `/etc/evil.dat`",
        "points outside the archive",
        seal(&tar(&[("/etc/evil.dat", &dat(&[2], 32, 0, 8, &[0; 8]))])),
    ));
    let mut many = Vec::new();
    let header = tar_header("x", 0);
    for _ in 0..10_001 {
        many.extend_from_slice(&header);
    }
    many.extend_from_slice(&[0; 1024]);
    v.push(case("plan/tar-10001-entries.perch", "gzipped tar of 10,001 empty entries (5 MB unpacked)", "more than 10000 entries", seal(&gzip(&many))));
    let mut claims = tar(&[("graph.nnef", GRAPH)]);
    let big = tar_header("w.dat", 0o77777777777);
    claims.splice(..0, big);
    v.push(case("plan/tar-entry-8gb.perch", "tar entry header claims 8 GiB", "entry w.dat is 8589934591 bytes, over the 1073741824-byte limit", seal(&claims)));
    v.push(case(
        "plan/tensor-shape-overflow.perch",
        "tensor .dat with shape [2^32-1; 3]: the product overflows",
        "more elements than a 64-bit count holds",
        seal(&tar(&[("graph.nnef", GRAPH), ("w.dat", &dat(&[u32::MAX; 3], 32, 0, 8, &[0; 8]))])),
    ));
    v.push(case(
        "plan/tensor-4g-elements.perch",
        "tensor .dat of shape [65536, 65536] (4 Gi elements)",
        "has 4294967296 elements, over the limit of 268435456",
        seal(&tar(&[("graph.nnef", GRAPH), ("w.dat", &dat(&[65536, 65536], 8, 3, 0, &[]))])),
    ));
    v.push(case(
        "plan/tensor-size-lie.perch",
        "tensor .dat header says 4 GiB of data, the entry has 8 bytes",
        "header says 4294967295 data bytes, the entry holds 8",
        seal(&tar(&[("graph.nnef", GRAPH), ("w.dat", &dat(&[2], 32, 0, u32::MAX, &[0; 8]))])),
    ));
    v.push(case(
        "plan/tensor-bool-no-data.perch",
        "bit-packed bool tensor of 9 items with 0 data bytes (tract would underflow)",
        "needs 2 bytes, the header says 0",
        seal(&tar(&[("graph.nnef", GRAPH), ("w.dat", &dat(&[9], 1, 5, 0, &[]))])),
    ));
    v.push(case(
        "plan/graph-not-nnef.perch",
        "graph.nnef that is not NNEF text",
        "plan graph cannot be loaded: Reading proto model: NNEF parse error at line 1, column 1",
        seal(&tar(&[("graph.nnef", b"hello")])),
    ));
    v
}

// ---- .pmc micro plans ----

fn good_pmc() -> Vec<u8> {
    let t = || TensorDesc { shape: perch_micro::kernels::Shape::new(1, 1, 4), scale: 0.1, zero_point: 0, offset: None };
    let mut b = PlanBuilder::new();
    let x = b.tensor(t());
    let y = b.tensor(t());
    let table: [i8; 256] = std::array::from_fn(|i| i as u8 as i8);
    b.lookup(x, y, &table).set_input(x).set_output(y).set_label_count(4);
    b.build().expect("builds").as_bytes().to_vec()
}

/// Sets the little-endian `value` at `at` and recomputes the CRC, so the field is the only damage.
fn pmc_with(at: usize, value: &[u8]) -> Vec<u8> {
    let mut b = good_pmc();
    b[at..at + value.len()].copy_from_slice(value);
    let crc = perch_micro::crc32(&b[16..]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    b
}

fn micro_plans() -> Vec<Case> {
    let good = good_pmc();
    let mut v = Vec::new();
    v.push(case("pmc/empty.pmc", "0 bytes", "plan truncated", vec![]));
    v.push(case("pmc/bad-magic.pmc", "starts with `PMD\\0`", "not a .pmc plan (bad magic)", pmc_with(0, b"PMD\0")));
    v.push(case("pmc/wrong-version.pmc", "format version 9", "plan format version 9, this runtime reads version 1", pmc_with(4, &9u16.to_le_bytes())));
    v.push(case("pmc/truncated.pmc", "cut 16 bytes before the length the header states", "plan truncated", good[..good.len() - 16].to_vec()));
    let mut flipped = good.clone();
    flipped[good.len() - 3] ^= 0x01;
    v.push(case("pmc/bit-flipped.pmc", "one bit flipped in the constants", "plan checksum mismatch", flipped));
    v.push(case("pmc/total-length-4gb.pmc", "header says the plan is 4 GiB", "plan truncated", pmc_with(8, &0xFFFF_FFFCu32.to_le_bytes())));
    v.push(case("pmc/ops-offset-out-of-range.pmc", "op table offset past the end (CRC fixed)", "plan section out of bounds", pmc_with(44, &0x7FFF_FFF0u32.to_le_bytes())));
    v.push(case("pmc/op-count-65535.pmc", "65535 ops declared (CRC fixed)", "plan section out of bounds", pmc_with(30, &u16::MAX.to_le_bytes())));
    v.push(case("pmc/const-length-4gb.pmc", "constant section of 4 GiB (CRC fixed)", "plan section out of bounds", pmc_with(52, &u32::MAX.to_le_bytes())));
    v.push(case("pmc/arena-4-bytes.pmc", "arena of 4 bytes, under its scratch area (CRC fixed)", "inconsistent plan header", pmc_with(16, &4u32.to_le_bytes())));
    let tensors = u32::from_le_bytes(good[40..44].try_into().unwrap()) as usize;
    v.push(case(
        "pmc/tensor-outside-arena.pmc",
        "tensor 1 at arena offset 2^31 (CRC fixed)",
        "tensor 1: tensor outside the arena",
        pmc_with(tensors + 32 + 16, &0x8000_0000u32.to_le_bytes()),
    ));
    v.push(case("pmc/input-id-out-of-range.pmc", "input tensor id 7 of 2 tensors (CRC fixed)", "inconsistent plan header", pmc_with(32, &7u16.to_le_bytes())));
    v
}

// ---- images ----

fn png(image: image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    out.extend_from_slice(&perch_micro::crc32(&crc_input).to_be_bytes());
    out
}

fn images() -> Vec<Case> {
    let grey = png(image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y) as u8]))));
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y) as u8])))
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA, deflate, no interlace
    bomb.extend(png_chunk(b"IHDR", &ihdr));
    bomb.extend(png_chunk(b"IDAT", &gzip(&[0; 64])[10..]));
    bomb.extend(png_chunk(b"IEND", &[]));
    let rgb = png(image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(28, 28, image::Rgb([200, 30, 30]))));
    let mut v = Vec::new();
    v.push(case("image/empty.png", "0 bytes", "the file is empty", vec![]));
    v.push(case("image/truncated.png", "a 28x28 PNG cut in half", "image does not decode", grey[..grey.len() / 2].to_vec()));
    v.push(case("image/truncated.jpg", "a 28x28 JPEG cut in half", "image does not decode", jpeg[..jpeg.len() / 2].to_vec()));
    v.push(case("image/bomb-100000x100000.png", "PNG header claiming 100000x100000 RGBA (40 GB decoded)", "over the limit of 16384 pixels a side", bomb));
    v.push(case(
        "image/decodes-to-1.5gb.ppm",
        "PPM header claiming 16384x16384 16-bit RGB (1.5 GiB decoded)",
        "decodes to 1610612736 bytes, over the 536870912-byte limit",
        b"P6\n16384 16384\n65535\n".to_vec(),
    ));
    v.push(case("image/not-an-image.png", "text named .png", "unknown image format", b"these are my notes\n".to_vec()));
    v.push(case("image/ico.png", "an ICO header (a format Perch does not decode)", "image does not decode", b"\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00\x01\x00\x20\x00".to_vec()));
    v.push(case("image/zero-width.pgm", "PGM header with width 0", "an image needs pixels", b"P5\n0 4\n255\n".to_vec()));
    v.push(case("image/rgb-for-grey-model.png", "a 3-channel image for the 1-channel example model", "image has 3 channel(s) (RGB) but the model takes 1", rgb));
    v
}

// ---- ONNX models ----

fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims.iter().map(|&d| Dimension { value: Some(Value::DimValue(d)), ..Default::default() }).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn onnx(op: &str, input: &[i64], output: &[i64]) -> Vec<u8> {
    let node = pb::NodeProto { input: vec!["x".into()], output: vec!["y".into()], op_type: op.into(), name: "n".into(), ..Default::default() };
    let graph = pb::GraphProto {
        node: vec![node],
        name: "bad".into(),
        input: vec![value_info("x", input)],
        output: vec![value_info("y", output)],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 7,
        producer_name: "perch bad-input corpus".into(),
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn onnx_models() -> Vec<Case> {
    let relu = onnx("Relu", &[1, 1, 4, 4], &[1, 1, 4, 4]);
    let mut v = Vec::new();
    v.push(case("onnx/empty.onnx", "0 bytes", "is not an ONNX model", vec![]));
    v.push(case("onnx/truncated.onnx", "a valid model cut to 40 bytes", "is not an ONNX model", relu[..40].to_vec()));
    let random: Vec<u8> = (0u32..256).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    v.push(case("onnx/random-bytes.onnx", "256 pseudo-random bytes", "is not an ONNX model", random));
    v.push(case("onnx/rank-2-input.onnx", "a valid Relu model whose input is [1, 16]", "Perch takes 4-D image batches", onnx("Relu", &[1, 16], &[1, 16])));
    v.push(case("onnx/unknown-op.onnx", "a model whose one node is op `PerchNoSuchOp`", "PerchNoSuchOp", onnx("PerchNoSuchOp", &[1, 1, 4, 4], &[1, 1, 4, 4])));
    v
}

// ---- datasets: IDX and .npy ----

fn idx(kind: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, kind, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// A `.npy` (format 1.0) with the header dict `dict` and `data` after it.
fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn labels_npy(n: usize) -> Vec<u8> {
    npy(&format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({n},), }}"), &vec![1; n])
}

fn datasets() -> Vec<Case> {
    let mut v = Vec::new();
    let mut bad = idx(8, &[1, 2, 2], &[0; 4]);
    bad[0] = 0x1f;
    bad[1] = 0x00;
    v.push(case("data/bad-magic-images-idx3-ubyte", "IDX whose first bytes are not 0 0", "not an IDX file (bad magic)", bad));
    v.push(case("data/float-images-idx3-ubyte", "IDX of element type 0x0d (float)", "element type 0x0d is not supported", idx(0x0d, &[1, 2, 2], &[0; 16])));
    v.push(case(
        "data/short-images-idx3-ubyte",
        "IDX header [2, 28, 28], 100 data bytes",
        "IDX data has 100 bytes, its header ([2, 28, 28]) promises 1568",
        idx(8, &[2, 28, 28], &[7; 100]),
    ));
    v.push(case("data/overflow-images-idx3-ubyte", "IDX dims [2^32-1; 3]", "IDX dimensions overflow", idx(8, &[u32::MAX; 3], &[])));
    v.push(case("data/huge-images-idx3-ubyte", "IDX dims [60000, 65535, 65535] with 4 data bytes", "promises 257690173500000", idx(8, &[60000, 65535, 65535], &[0; 4])));
    v.push(case("data/labels-count-images-idx3-ubyte", "2 images of 2x2 with 3 labels", "labels of shape [3] for 2 images", idx(8, &[2, 2, 2], &[0; 8])));
    v.push(companion("data/labels-count-labels-idx1-ubyte", "its 3 labels", idx(8, &[3], &[0, 1, 2])));
    let mut gz = gzip(&idx(8, &[1, 2, 2], &[0; 4]));
    let mid = gz.len() / 2;
    gz[mid] ^= 0xff;
    v.push(case("data/corrupt-images-idx3-ubyte.gz", "gzipped IDX with a damaged deflate stream", "gzip stream is damaged", gz));

    let u8_images = |shape: &str| format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}");
    v.push(case("data/bad-magic.npy", "`.npy` without the \\x93NUMPY magic", "not a .npy file (bad magic)", b"\x93NUMPX\x01\x00\x10\x00{}".to_vec()));
    v.push(companion("data/bad-magic.labels.npy", "2 labels", labels_npy(2)));
    v.push(case("data/bad-header.npy", "`.npy` whose header is not a Python dict", "bad .npy header", npy("[1, 2, 3]", &[0; 8])));
    v.push(companion("data/bad-header.labels.npy", "2 labels", labels_npy(2)));
    v.push(case(
        "data/header-past-end.npy",
        "`.npy` (v2) whose header length is 4 GiB",
        "runs past the end",
        [b"\x93NUMPY\x02\x00".as_slice(), &u32::MAX.to_le_bytes(), b"{}"].concat(),
    ));
    v.push(companion("data/header-past-end.labels.npy", "2 labels", labels_npy(2)));
    v.push(case(
        "data/length-mismatch.npy",
        "`.npy` of shape (1000000, 28, 28) u8 with 10 data bytes",
        "needs 784000000 data bytes, the file has 10",
        npy(&u8_images("(1000000, 28, 28)"), &[0; 10]),
    ));
    v.push(companion("data/length-mismatch.labels.npy", "2 labels", labels_npy(2)));
    v.push(case(
        "data/wrong-dtype.npy",
        "`.npy` of float64 images",
        "images must be uint8 (pixels) or float32",
        npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1, 1), }", &[0; 16]),
    ));
    v.push(companion("data/wrong-dtype.labels.npy", "2 labels", labels_npy(2)));
    v.push(case("data/wrong-shape.npy", "`.npy` of u8 images of shape (2, 8)", "u8 images must be NHW, NCHW or NHWC", npy(&u8_images("(2, 8)"), &[0; 16])));
    v.push(companion("data/wrong-shape.labels.npy", "2 labels", labels_npy(2)));
    v.push(case("data/label-count.npy", "2 images, 3 labels", "3 labels for 2 samples", npy(&u8_images("(2, 2, 2)"), &[0; 8])));
    v.push(companion("data/label-count.labels.npy", "3 labels", labels_npy(3)));
    v.push(case("data/float-labels.npy", "labels stored as float32", "labels must be int64, int32 or uint8", npy(&u8_images("(2, 2, 2)"), &[0; 8])));
    v.push(companion(
        "data/float-labels.labels.npy",
        "2 float32 labels",
        npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", &[0; 8]),
    ));
    v.push(case("data/no-labels.npy", "images without a `.labels.npy` beside them", "labels not found", npy(&u8_images("(2, 2, 2)"), &[0; 8])));
    v
}

/// The README's table: one line per file.
pub fn readme(cases: &[Case]) -> String {
    let mut out = String::from(
        "# Bad input\n\n\
         Files of every format Perch reads, each damaged in one way, and the error each must give (a \
         substring of the message). `tests/tests/bad_input/` feeds each to the library loader, and \
         `host-tools/tests/cli.rs` and `perch-run/tests/cli.rs` to the command that reads it: every one \
         must fail with that error, never succeed, never panic. The files are written by \
         `tests/tests/bad_input/generate.rs`:\n\n\
         ```sh\ncargo test -p perch-tests --test bad_input -- --ignored regenerate\n```\n\n\
         Files that claim huge sizes are small: the claim is in a header. (A real gzip bomb is not here: \
         deflate packs at most ~1000:1, so passing the 1 GiB graph limit takes a 1 MB file; \
         `runtime/src/plan/archive.rs` tests that limit with a small one.) A file marked *companion* is \
         not a case: the case above it needs it (a dataset's labels).\n\n\
         | file | what is wrong | expected error |\n|---|---|---|\n",
    );
    for c in cases {
        let expected = c.expected.map_or("*companion*".to_string(), |e| format!("`{e}`"));
        out.push_str(&format!("| {} | {} | {} |\n", c.file, c.what.replace('|', "\\|"), expected));
    }
    out
}
