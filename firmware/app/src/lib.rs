#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), no_std)]

#[cfg(all(feature = "semihosting", feature = "rtt"))]
compile_error!("features `semihosting` and `rtt` are both on: choose one defmt transport");
#[cfg(not(any(feature = "semihosting", feature = "rtt")))]
compile_error!(
    "no defmt transport: enable `semihosting` (qemu, the default) or `rtt` (boards, with `--no-default-features`)"
);
#[cfg(any(
    all(feature = "stm32f411", feature = "stm32f405"),
    all(feature = "stm32f411", feature = "nrf52840"),
    all(feature = "stm32f405", feature = "nrf52840"),
))]
compile_error!("more than one chip feature: choose one memory layout");

pub mod classify;
pub mod frames;
pub mod indicator;
pub mod model;
#[cfg(target_os = "none")]
pub mod platform;
#[cfg(target_os = "none")]
pub mod ram;
#[cfg(target_os = "none")]
pub mod selftest;
pub mod vectors;
