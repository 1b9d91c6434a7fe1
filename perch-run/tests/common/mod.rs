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
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
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

/// Starts the `perch-run serve` command `make` builds and waits, up to `patience`, for its
/// `listening on` line: the child, its address, and the rest of its stderr. A child that has not
/// printed that line by then (stuck before its exec under qemu-user: see [`output_patiently`]) is
/// killed and started again, up to three tries. The caller owns the child.
#[allow(dead_code)] // Not every test file that includes this module uses it.
#[allow(clippy::zombie_processes)] // Every child is either returned or killed and waited for.
pub fn spawn_server_patiently(
    make: impl Fn() -> Command,
    patience: std::time::Duration,
) -> (std::process::Child, std::net::SocketAddr, std::io::BufReader<std::process::ChildStderr>) {
    use std::io::BufRead;
    use std::process::Stdio;
    for _ in 0..3 {
        let mut child = make().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("perch-run starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut stderr = std::io::BufReader::new(stderr);
            let mut seen = String::new();
            loop {
                let mut line = String::new();
                if !matches!(stderr.read_line(&mut line), Ok(n) if n > 0) {
                    let _ = tx.send(Err(seen));
                    return;
                }
                seen.push_str(&line);
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                    let _ = tx.send(addr.map(|a| (a, stderr)).ok_or(format!("an address that does not parse: {seen}")));
                    return;
                }
            }
        });
        match rx.recv_timeout(patience) {
            Ok(Ok((addr, stderr))) => return (child, addr, stderr),
            Ok(Err(seen)) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("perch-run serve did not listen: {seen}");
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("{:?} said nothing in {patience:?}: started again", make());
            }
        }
    }
    panic!("perch-run serve did not start listening in {patience:?}, three times");
}

/// An in-process `perch-run serve` on a free loopback port, stopped (and drained) when dropped.
#[cfg(feature = "serve")]
#[allow(dead_code)] // Not every test file that includes this module uses it.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

#[cfg(feature = "serve")]
#[allow(dead_code)]
impl TestServer {
    /// Serves with `config` (its address replaced by a free loopback port), as `tune` adjusts it.
    pub fn start(mut config: perch_runtime::serve::ServeConfig, tune: impl FnOnce(&mut perch_runtime::serve::ServeConfig)) -> TestServer {
        config.addr = "127.0.0.1:0".parse().unwrap();
        tune(&mut config);
        let server = perch_runtime::serve::Server::start(config).expect("server starts");
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            server
                .run_blocking(async {
                    let _ = stopped.await;
                })
                .expect("server runs")
        });
        TestServer { addr, stop: Some(stop), thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Tells the server to stop accepting and drain, without waiting for it.
    pub fn stop_accepting(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops accepting and waits for the drain; returns the connections left open.
    pub fn shutdown(&mut self) -> usize {
        self.stop_accepting();
        self.thread.take().map(|t| t.join().expect("server thread ends without panic")).unwrap_or(0)
    }
}

#[cfg(feature = "serve")]
impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Without waiting on a thread that may be what panicked.
            self.stop_accepting();
        } else {
            self.shutdown();
        }
    }
}
