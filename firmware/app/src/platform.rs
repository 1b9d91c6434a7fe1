//! The platform glue: the defmt transport (a feature), the end of a run, and faults.
//!
//! Under qemu (and `probe-rs run`), the run ends with a semihosting exit whose status is the
//! verdict. A panic (panic-probe prints it, then raises a HardFault) and any other HardFault end
//! the run with a failure, never a hang.

#[cfg(feature = "rtt")]
use defmt_rtt as _;
#[cfg(feature = "semihosting")]
use defmt_semihosting as _;
use panic_probe as _;

use cortex_m_rt::{ExceptionFrame, exception};
use cortex_m_semihosting::debug;

/// Ends the run: the semihosting exit status is `ok`'s (qemu's and probe-rs' exit status).
pub fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached without a debugger (a board running on its own): stop here.
    loop {
        cortex_m::asm::wfi();
    }
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:#010x}", frame.pc());
    exit(false)
}
