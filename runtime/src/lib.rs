#![doc = include_str!("../README.md")]

pub mod bench;
pub mod classify;
pub mod kernels;
pub mod ops;
pub mod plan;
pub mod preprocess;
pub mod profile;
#[cfg(feature = "serve")]
pub mod serve;
pub mod tolerance;

pub use classify::{Classifier, Prediction, RunError, Session};
pub use plan::{Manifest, Plan, PlanError};
pub use preprocess::{ChannelPolicy, ImageError, Preprocess};
