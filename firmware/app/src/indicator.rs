//! Showing the result on pins: one [`OutputPin`] per class (a LED bar, or lines to another
//! controller), the predicted class high and the others low. [`NoPin`] stands in where there is
//! nothing to drive (qemu).

use core::convert::Infallible;

use embedded_hal::digital::{ErrorType, OutputPin};

/// `N` class pins; [`ClassPins::show`] drives the predicted class high, the others low.
pub struct ClassPins<P, const N: usize> {
    pins: [P; N],
}

impl<P: OutputPin, const N: usize> ClassPins<P, N> {
    pub fn new(pins: [P; N]) -> Self {
        ClassPins { pins }
    }

    /// Drives pin `class` high and the others low; a class past `N` leaves every pin low.
    pub fn show(&mut self, class: usize) -> Result<(), P::Error> {
        for (i, pin) in self.pins.iter_mut().enumerate() {
            pin.set_state((i == class).into())?;
        }
        Ok(())
    }

    /// Gives the pins back.
    pub fn release(self) -> [P; N] {
        self.pins
    }
}

/// A pin that drives nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPin;

impl ErrorType for NoPin {
    type Error = Infallible;
}

impl OutputPin for NoPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

    #[test]
    fn drives_the_predicted_class_high_and_the_others_low() {
        let pin = |states: &[State]| {
            Mock::new(
                &states
                    .iter()
                    .map(|&s| Transaction::set(s))
                    .collect::<std::vec::Vec<_>>(),
            )
        };
        let mut pins = ClassPins::new([
            pin(&[State::Low, State::High]),
            pin(&[State::High, State::Low]),
            pin(&[State::Low, State::Low]),
        ]);
        pins.show(1).unwrap();
        pins.show(0).unwrap();
        for mut p in pins.release() {
            p.done();
        }
    }
}
