//! Where frames come from: anything that fills the plan's input tensor.
//!
//! A frame is the plan's input: int8, NHWC, already quantized with the input tensor's scale and
//! zero point. [`VectorFrames`] replays the embedded test vectors (qemu, self-test on a board);
//! [`SpiFrames`] reads 8-bit pixels from a camera or sensor front end on any embedded-hal 1.0
//! [`SpiDevice`] and quantizes them with a [`PixelMap`].

use embedded_hal::spi::{Error as _, ErrorKind, Operation, SpiDevice};

use crate::vectors::TestVectors;

/// Why no frame was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A finite source has no more frames.
    Exhausted,
    /// The buffer does not have the frame's size (the plan's input size).
    WrongSize,
    /// The SPI bus reported an error.
    Spi(ErrorKind),
}

#[cfg(target_os = "none")]
impl defmt::Format for FrameError {
    fn format(&self, f: defmt::Formatter) {
        match self {
            FrameError::Exhausted => defmt::write!(f, "no more frames"),
            FrameError::WrongSize => defmt::write!(f, "frame buffer of the wrong size"),
            FrameError::Spi(kind) => defmt::write!(f, "SPI: {}", defmt::Debug2Format(kind)),
        }
    }
}

/// A source of input frames.
pub trait FrameSource {
    /// Fills `frame` (the plan's input size) with the next frame.
    fn read_frame(&mut self, frame: &mut [i8]) -> Result<(), FrameError>;
}

/// The test vectors' inputs, in order, then [`FrameError::Exhausted`].
pub struct VectorFrames<'a> {
    vectors: TestVectors<'a>,
    next: usize,
}

impl<'a> VectorFrames<'a> {
    pub fn new(vectors: TestVectors<'a>) -> Self {
        VectorFrames { vectors, next: 0 }
    }
}

impl FrameSource for VectorFrames<'_> {
    fn read_frame(&mut self, frame: &mut [i8]) -> Result<(), FrameError> {
        if self.next >= self.vectors.len() {
            return Err(FrameError::Exhausted);
        }
        let input = self.vectors.input(self.next);
        if input.len() != frame.len() {
            return Err(FrameError::WrongSize);
        }
        for (q, &b) in frame.iter_mut().zip(input) {
            *q = b as i8;
        }
        self.next += 1;
        Ok(())
    }
}

/// Pixel value (0..=255) to the plan's int8 input, for the preprocessing the model was trained
/// with: `x = (pixel / 255 - mean) / std`, `q = round(x / scale) + zero_point`, saturated.
#[derive(Clone)]
pub struct PixelMap([i8; 256]);

impl PixelMap {
    /// `scale`, `zero_point`: the plan's input tensor; `mean`, `std`: the model's normalization
    /// of pixels scaled to 0..1 (`training.json`'s `preprocessing`).
    pub fn new(scale: f32, zero_point: i32, mean: f32, std: f32) -> Self {
        let mut table = [0i8; 256];
        for (pixel, q) in table.iter_mut().enumerate() {
            let x = (pixel as f32 / 255.0 - mean) / std / scale;
            // Round half away from zero, as f32::round (not in core).
            let r = if x < 0.0 { x - 0.5 } else { x + 0.5 } as i32;
            *q = (r + zero_point).clamp(-128, 127) as i8;
        }
        PixelMap(table)
    }

    pub fn quantize(&self, pixel: u8) -> i8 {
        self.0[pixel as usize]
    }
}

/// A camera or sensor front end on SPI: one transaction per frame, the command byte `read` out,
/// then one 8-bit pixel per input element back (row-major, channels last).
pub struct SpiFrames<D> {
    device: D,
    read: u8,
    pixels: PixelMap,
}

impl<D: SpiDevice> SpiFrames<D> {
    pub fn new(device: D, read: u8, pixels: PixelMap) -> Self {
        SpiFrames {
            device,
            read,
            pixels,
        }
    }

    /// Gives the SPI device back.
    pub fn release(self) -> D {
        self.device
    }
}

impl<D: SpiDevice> FrameSource for SpiFrames<D> {
    fn read_frame(&mut self, frame: &mut [i8]) -> Result<(), FrameError> {
        let raw = as_bytes_mut(frame);
        self.device
            .transaction(&mut [Operation::Write(&[self.read]), Operation::Read(raw)])
            .map_err(|e| FrameError::Spi(e.kind()))?;
        for b in raw.iter_mut() {
            *b = self.pixels.quantize(*b) as u8;
        }
        Ok(())
    }
}

/// The frame's bytes, so the SPI read lands in place (no second frame buffer).
fn as_bytes_mut(frame: &mut [i8]) -> &mut [u8] {
    // SAFETY: i8 and u8 have the same size, alignment and validity; the borrow is carried over.
    unsafe { core::slice::from_raw_parts_mut(frame.as_mut_ptr().cast::<u8>(), frame.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::spi::{Mock, Transaction};
    use std::vec;

    #[test]
    fn vector_frames_replay_the_inputs_then_stop() {
        let mut bytes = b"PMCV".to_vec();
        for n in [1u32, 2, 2, 1] {
            bytes.extend(n.to_le_bytes());
        }
        bytes.extend([0x80, 0x7F, 1, 2, 9, 8, 7, 6]);
        let mut source = VectorFrames::new(TestVectors::parse(&bytes, 2, 1).unwrap());
        let mut frame = [0i8; 2];
        source.read_frame(&mut frame).unwrap();
        assert_eq!(frame, [-128, 127]);
        assert_eq!(source.read_frame(&mut [0; 3]), Err(FrameError::WrongSize));
        source.read_frame(&mut frame).unwrap();
        assert_eq!(frame, [1, 2]);
        assert_eq!(source.read_frame(&mut frame), Err(FrameError::Exhausted));
    }

    #[test]
    fn pixel_map_applies_the_training_normalization_then_quantizes() {
        // fashion-cnn-s: pixels / 255, mean 0.286, std 0.353.
        let (scale, zp) = (0.011, -54);
        let map = PixelMap::new(scale, zp, 0.286, 0.353);
        for pixel in [0u8, 1, 73, 128, 254, 255] {
            let x = (pixel as f64 / 255.0 - 0.286) / 0.353;
            let q = ((x / scale as f64).round() as i32 + zp).clamp(-128, 127);
            assert_eq!(map.quantize(pixel) as i32, q, "pixel {pixel}");
        }
        let saturated = PixelMap::new(0.001, 0, 0.0, 1.0);
        assert_eq!((saturated.quantize(0), saturated.quantize(255)), (0, 127));
    }

    #[test]
    fn spi_frames_read_one_transaction_per_frame() {
        let expectations = [
            Transaction::transaction_start(),
            Transaction::write_vec(vec![0x2A]),
            Transaction::read_vec(vec![0, 128, 255]),
            Transaction::transaction_end(),
        ];
        let spi = Mock::new(&expectations);
        // Identity-like map: q = pixel - 128.
        let mut source = SpiFrames::new(spi, 0x2A, PixelMap::new(1.0 / 255.0, -128, 0.0, 1.0));
        let mut frame = [0i8; 3];
        source.read_frame(&mut frame).unwrap();
        assert_eq!(frame, [-128, 0, 127]);
        source.release().done();
    }
}
