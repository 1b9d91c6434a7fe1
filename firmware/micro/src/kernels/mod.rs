//! int8 kernels. Activations are NHWC with batch 1; each kernel checks its parameters against the
//! slices it is given and returns a [`Problem`] instead of panicking.
//!
//! [`portable`] holds the reference kernels, compiled everywhere. The functions at this level
//! dispatch: on Cortex-M cores with the DSP extension (`cfg(perch_dsp)`, chosen by build.rs from the
//! target name) conv2d, depthwise conv2d and fully connected run SMLAD/SXTB16 kernels that give the
//! same bytes as the portable ones; everything else is portable.

mod conv;
mod depthwise;
mod elementwise;
mod pool;
pub(crate) mod softmax;
mod types;

#[cfg(perch_dsp)]
mod dsp;

pub use conv::{conv_weight_index, conv_weights_len, pack_conv_weights, padded_depth};
pub use types::*;

use crate::Problem;

/// The portable reference kernels: what every accelerated kernel must reproduce byte for byte.
pub mod portable {
    pub use super::conv::{conv2d, fully_connected};
    pub use super::depthwise::depthwise_conv2d;
    pub use super::elementwise::{add, lookup, reshape};
    pub use super::pool::{average_pool, global_average_pool, max_pool};
    pub use super::softmax::softmax;
}

pub use portable::{add, average_pool, global_average_pool, lookup, max_pool, reshape, softmax};
pub use softmax::MAX_SOFTMAX_DEPTH;

/// Whether this build runs the Cortex-M DSP kernels (`true`) or the portable ones.
pub const DSP: bool = cfg!(perch_dsp);

/// 2D convolution; weights in the packed layout of [`pack_conv_weights`]. `scratch` must hold
/// [`ConvParams::scratch_words`] words (only the DSP kernel uses it; the size is the same for every
/// build so that one plan fits all).
pub fn conv2d(
    p: &ConvParams,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u32],
) -> Result<(), Problem> {
    #[cfg(perch_dsp)]
    return dsp::conv2d(p, input, output, scratch);
    #[cfg(not(perch_dsp))]
    return portable::conv2d(p, input, output, scratch);
}

/// Depthwise 2D convolution, weights `[1, KH, KW, C * multiplier]` as TFLite. `scratch` must hold
/// [`DepthwiseParams::scratch_words`] words.
pub fn depthwise_conv2d(
    p: &DepthwiseParams,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u32],
) -> Result<(), Problem> {
    #[cfg(perch_dsp)]
    return dsp::depthwise_conv2d(p, input, output, scratch);
    #[cfg(not(perch_dsp))]
    return portable::depthwise_conv2d(p, input, output, scratch);
}

/// Fully connected; weights in the packed layout of [`pack_conv_weights`] with `K = in_features`.
/// `scratch` must hold [`FullyConnectedParams::scratch_words`] words.
pub fn fully_connected(
    p: &FullyConnectedParams,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u32],
) -> Result<(), Problem> {
    #[cfg(perch_dsp)]
    return dsp::fully_connected(p, input, output, scratch);
    #[cfg(not(perch_dsp))]
    return portable::fully_connected(p, input, output, scratch);
}
