//! What the runtime's integration tests share.

use std::process::Command;

/// perch-run itself, through PERCH_TEST_RUNNER (the qemu command) when cross-testing: no binfmt
/// handler is assumed.
pub fn perch_run_command() -> Command {
    let exe = env!("CARGO_BIN_EXE_perch-run");
    match std::env::var("PERCH_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut c = Command::new(parts.next().unwrap());
            c.args(parts).arg(exe);
            c
        }
        _ => Command::new(exe),
    }
}
