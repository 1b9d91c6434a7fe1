//! Perch's host side: import ONNX models, analyse them, compile `.perch` plans, measure accuracy.

pub mod accuracy;
pub mod analysis;
pub mod compile;
pub mod eval;
pub mod import;
pub mod mcu;
pub mod quantize;
pub mod report;
