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

/// Runs the command `make` builds to completion, its stdout and stderr captured, starting it again
/// (up to three tries) when it has not finished after `patience`.
///
/// Cross-tested under qemu-user, a test process whose other threads are busy (an in-process server,
/// parallel tests) can leave a child stuck before its `exec`: qemu turns posix_spawn's vfork into a
/// fork, and a lock another thread held at that moment stays held in the child, which then waits on
/// it forever (seen once in a `.ci/run`: a `curl` that never started). Killing such a child and
/// spawning again gets past it; a command that is merely slow must finish within `patience`.
#[allow(dead_code)] // Not every test file that includes this module uses it.
pub fn output_patiently(make: impl Fn() -> Command, patience: std::time::Duration) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut tries = 0;
    loop {
        tries += 1;
        let mut child = make().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if started.elapsed() > patience {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        match status {
            Some(status) => {
                let (stdout, stderr) = (stdout.join().expect("stdout reader"), stderr.join().expect("stderr reader"));
                return Ok(std::process::Output { status, stdout, stderr });
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                if tries == 3 {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{:?} did not finish in {patience:?}, three times", make())));
                }
                eprintln!("{:?} did not finish in {patience:?}: started again", make());
            }
        }
    }
}
