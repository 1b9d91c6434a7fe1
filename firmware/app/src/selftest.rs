//! The firmware test: every frame through the plan, each output byte compared with the host
//! simulation's, top-1 counted against the true labels, the prediction shown on the class pins.

use embedded_hal::digital::OutputPin;
use heapless::Vec;
use perch_micro::Plan;

use crate::classify::top_k;
use crate::frames::{FrameError, FrameSource};
use crate::indicator::ClassPins;
use crate::vectors::TestVectors;

/// One output byte that differs from the host simulation's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub struct Mismatch {
    pub frame: u16,
    pub index: u16,
    pub got: i8,
    pub expected: i8,
}

/// What the run found.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub frames: u16,
    /// Frames whose every output byte equals the host simulation's.
    pub identical: u16,
    /// Frames whose top-1 class is the true label.
    pub correct: u16,
    /// The first differing bytes (the count is in `frames - identical`).
    pub mismatches: Vec<Mismatch, 8>,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.frames > 0 && self.identical == self.frames
    }
}

/// Why the run stopped before the end.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Failure {
    Frame(FrameError),
    /// The plan refused the input or the arena.
    Run(perch_micro::Error),
    /// A class pin could not be driven.
    Pin,
}

impl defmt::Format for Failure {
    fn format(&self, f: defmt::Formatter) {
        match self {
            Failure::Frame(e) => defmt::write!(f, "frame source: {}", e),
            Failure::Run(e) => defmt::write!(f, "inference: {}", defmt::Display2Format(e)),
            Failure::Pin => defmt::write!(f, "class pin error"),
        }
    }
}

/// Runs one inference per test vector on frames from `source`, `frame` being the input buffer.
pub fn run<S: FrameSource, P: OutputPin, const N: usize>(
    plan: &Plan,
    arena: &mut [u8],
    frame: &mut [i8],
    vectors: &TestVectors,
    source: &mut S,
    pins: &mut ClassPins<P, N>,
) -> Result<Summary, Failure> {
    let mut summary = Summary::default();
    for i in 0..vectors.len() {
        source.read_frame(frame).map_err(Failure::Frame)?;
        let scores = perch_micro::run(plan, arena, frame).map_err(Failure::Run)?;
        let expected = vectors.expected(i);
        let mut identical = true;
        for (index, (&got, &want)) in scores.iter().zip(expected).enumerate() {
            if got as u8 != want {
                identical = false;
                // A full list keeps the first ones.
                let _ = summary.mismatches.push(Mismatch {
                    frame: i as u16,
                    index: index as u16,
                    got,
                    expected: want as i8,
                });
            }
        }
        let top = top_k::<3>(scores);
        let predicted = top.first().map_or(usize::MAX, |r| r.class as usize);
        pins.show(predicted).map_err(|_| Failure::Pin)?;
        let label = vectors.label(i);
        summary.frames += 1;
        summary.identical += identical as u16;
        summary.correct += (predicted == label as usize) as u16;
        defmt::info!(
            "frame {=usize}: top-3 (class:score) {}, label {=u8}, output {=str}",
            i,
            top.as_slice(),
            label,
            if identical {
                "= host"
            } else {
                "DIFFERS from host"
            }
        );
    }
    Ok(summary)
}
