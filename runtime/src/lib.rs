#![doc = include_str!("../README.md")]

pub mod classify;
pub mod ops;
pub mod plan;
pub mod preprocess;
pub mod tolerance;

pub use classify::{Classifier, Prediction, RunError};
pub use plan::{Manifest, Plan, PlanError};
pub use preprocess::{ChannelPolicy, ImageError, Preprocess};
