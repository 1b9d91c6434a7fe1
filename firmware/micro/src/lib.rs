#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "std")]
extern crate std;

#[cfg(perch_dsp)]
mod arm_dsp;
mod cast;
mod crc32;
mod error;
pub mod interpreter;
pub mod kernels;
pub mod plan;
pub mod requantize;
#[cfg(feature = "std")]
pub mod tables;

pub use crc32::crc32;
pub use error::{Error, Problem};
pub use interpreter::run;
pub use plan::Plan;
