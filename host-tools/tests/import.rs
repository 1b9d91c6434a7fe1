//! Input shapes as exporters other than PyTorch's write them: a `-1` batch is kept dynamic, a symbolic
//! image size asks for `--input-shape`.

use std::path::Path;

use perch_host::import;
use perch_runtime::plan::Dim;
use prost::Message;
use tract_onnx::pb::tensor_shape_proto::dimension::Value;
use tract_onnx::prelude::Framework;

fn shape_of(imported: &import::Imported) -> String {
    imported.model.input_fact(0).unwrap().shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")
}

fn with_input_dims(dims: &[Value]) -> tempfile::TempPath {
    let src = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../models/fashion-cnn-s/fashion-cnn-s.onnx");
    let mut proto = tract_onnx::onnx().proto_model_for_path(&src).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) = graph.input[0].r#type.as_mut().unwrap().value.as_mut() else {
        panic!("tensor input")
    };
    for (d, v) in t.shape.as_mut().unwrap().dim.iter_mut().zip(dims) {
        d.value = Some(v.clone());
    }
    let file = tempfile::Builder::new().suffix(".onnx").tempfile().unwrap();
    std::fs::write(file.path(), proto.encode_to_vec()).unwrap();
    file.into_temp_path()
}

#[test]
fn a_minus_one_batch_becomes_symbolic() {
    let path = with_input_dims(&[Value::DimValue(-1), Value::DimValue(1), Value::DimValue(28), Value::DimValue(28)]);
    let imported = import::import(&path, None).unwrap();
    assert_eq!(shape_of(&imported), "batch,1,28,28");
}

#[test]
fn a_symbolic_image_size_asks_for_input_shape() {
    let path = with_input_dims(&[
        Value::DimParam("N".into()),
        Value::DimValue(1),
        Value::DimParam("height".into()),
        Value::DimValue(28),
    ]);
    let err = import::import(&path, None).unwrap_err().to_string();
    assert!(err.contains("input axis 2") && err.contains("--input-shape"), "{err}");
    let fixed = import::import(&path, Some(&[Dim::Symbol("N".into()), Dim::Fixed(1), Dim::Fixed(28), Dim::Fixed(28)])).unwrap();
    assert_eq!(shape_of(&fixed), "N,1,28,28");
}
