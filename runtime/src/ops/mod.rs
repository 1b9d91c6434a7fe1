//! Perch's own tract operators and the NNEF registry that writes and reads them.
//!
//! tract's standard NNEF serializer writes a quantized convolution as a plain `conv` whose scales come
//! from the tensors' types, which hold one scale per tensor: per-channel weight scales would be lost.
//! Perch's int8 plans therefore carry their convolutions as `perch_qconv` invocations (and residual
//! Adds of differently quantized tensors, which tract's reader cannot type, as `perch_qadd`; and
//! element-wise functions between int8 tensors as `perch_lut` lookup tables). The registry
//! is compiled into both the writer (host-tools) and the reader (the runtime), through [`nnef`].

pub mod dynamic;
pub mod lut;
pub mod qadd;
pub mod qconv;

use tract_nnef::internal::*;

/// The NNEF registry id written into plans that use Perch's operators.
pub const REGISTRY_ID: &str = "perch";

/// The registry holding Perch's operators.
pub fn registry() -> Registry {
    let mut registry = Registry::new(REGISTRY_ID);
    qconv::register(&mut registry);
    qadd::register(&mut registry);
    lut::register(&mut registry);
    dynamic::register(&mut registry);
    registry
}

/// tract's NNEF framework with Perch's registry: use it for every plan read or write.
pub fn nnef() -> tract_nnef::framework::Nnef {
    tract_nnef::nnef().with_registry(registry())
}
