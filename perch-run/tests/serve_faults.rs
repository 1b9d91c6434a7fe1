//! `perch-run serve` against hostile and broken clients, over loopback: slow senders, half-open and
//! idle connections, a connection flood, uploads abandoned halfway, oversized heads, absurd declared
//! lengths. Each test proves the server cuts the client off by its limits, holds no worker for it, and
//! still answers a normal request; a client refused at --max-connections gets a whole 503. Timeouts are short (under a second) so each test takes seconds;
//! the assertions leave room for qemu, where everything is slower, and never wait on a fixed sleep
//! longer than a client's own pacing.
#![cfg(feature = "serve")]

mod common;
use common::{TestServer, perch_run_command, spawn_server_patiently};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use perch_runtime::serve::ServeConfig;

/// Slack over a server-side timeout before a test calls it missed (qemu-user is 10-50x slower).
const SLACK: Duration = Duration::from_secs(20);
const HEADER_TIMEOUT: Duration = Duration::from_millis(600);
const BODY_TIMEOUT: Duration = Duration::from_millis(600);
/// A header timeout no test outlasts: connections the server admits stay until the client closes them.
const HOLD: Duration = Duration::from_secs(120);
const PREDICT: &str = "/predictions/fashion-cnn-s";

fn case_dir() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../tests/cases/fashion-cnn-s")
}

fn image() -> Vec<u8> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(case_dir().join("images")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    std::fs::read(&files[0]).unwrap()
}

/// The servers these tests start: one worker (so a client holding it would show) and short timeouts.
fn config() -> ServeConfig {
    let mut config = ServeConfig::new(vec![("fashion-cnn-s".into(), case_dir().join("model.perch"))]);
    config.workers = 1;
    config.header_timeout = HEADER_TIMEOUT;
    config.body_timeout = BODY_TIMEOUT;
    config.drain_timeout = Duration::from_secs(1);
    config
}

/// One request on a fresh connection (`Connection: close`): the status line's code and the body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len())
        .unwrap();
    s.write_all(body).unwrap();
    let reply = read_reply(&mut s);
    let code = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no HTTP answer: {reply:?}"));
    (code, reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// A normal prediction: 200 and TorchServe's top 5 with "Ankle boot" first (the first test image).
fn assert_serves(addr: SocketAddr) {
    let (code, body) = request(addr, "PUT", PREDICT, &image());
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 5, "{body}");
    assert!(body.trim_start_matches(['{', '\n', ' ']).starts_with("\"Ankle boot\""), "{body}");
}

/// A prediction, retried while the answer is the 503 of a full server (as its Retry-After asks, but
/// sooner); the whole 503 each time, never a reset.
fn assert_serves_once_admitted(addr: SocketAddr) {
    let until = Instant::now() + SLACK;
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        let image = image();
        write!(s, "PUT {PREDICT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", image.len())
            .unwrap();
        s.write_all(&image).unwrap();
        let reply = read_reply(&mut s);
        if !reply.starts_with("HTTP/1.1 503") {
            assert!(reply.starts_with("HTTP/1.1 200") && reply.contains("Ankle boot"), "{reply}");
            return;
        }
        assert_whole_refusal(&reply);
        assert!(Instant::now() < until, "still refused after {SLACK:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's answer to a connection over --max-connections: a 503 whose body is all there.
fn assert_whole_refusal(reply: &str) {
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no whole head: {reply:?}"));
    let mut lines = head.split("\r\n");
    assert!(lines.next().is_some_and(|status| status.starts_with("HTTP/1.1 503 ")), "{reply}");
    let headers: Vec<&str> = lines.collect();
    assert!(headers.contains(&"Retry-After: 1"), "{reply}");
    assert!(headers.contains(&format!("Content-Length: {}", body.len()).as_str()), "{reply}");
    assert!(body.contains("--max-connections"), "{reply}");
}

/// `GET /ping` on a keep-alive connection: the status, after reading exactly the answer.
fn ping_keep_alive(s: &mut TcpStream) -> u16 {
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(SLACK * 3)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-answer: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    head[9..12].parse().unwrap()
}

/// Everything the server sends until it closes (a reset counts as the close).
fn read_reply(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(SLACK * 3)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads the server's reply to `s` on another thread, raising the returned flag once it has it (so
/// that a [`dribble`] on `s` stops).
fn watch_reply(s: &TcpStream) -> (Arc<AtomicBool>, std::thread::JoinHandle<String>) {
    let reader = s.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let raised = stop.clone();
    let watcher = std::thread::spawn(move || {
        let reply = read_reply(&mut { reader });
        raised.store(true, Ordering::Relaxed);
        reply
    });
    (stop, watcher)
}

/// Sends `bytes` one at a time every `pace` until the server hangs up; returns how many were sent.
fn dribble(s: &mut TcpStream, bytes: &[u8], pace: Duration, stop: &AtomicBool) -> usize {
    for (i, b) in bytes.iter().enumerate() {
        if stop.load(Ordering::Relaxed) || s.write_all(std::slice::from_ref(b)).is_err() {
            return i;
        }
        std::thread::sleep(pace);
    }
    bytes.len()
}

/// The value of one sample line of the Prometheus text.
fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (_, text) = request(addr, "GET", "/metrics", b"");
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

#[test]
fn slow_clients_are_cut_off_and_hold_no_worker() {
    let server = TestServer::start(config(), |_| {});
    let addr = server.addr;
    // A head a byte every 40 ms: 400 bytes would take 16 s; the header timeout ends it.
    let head = format!("PUT {PREDICT} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(360));
    // A body a byte every 40 ms after a complete head: the body timeout ends it with 408.
    let slow_body = format!("PUT {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n");
    std::thread::scope(|scope| {
        let head_client = scope.spawn(|| {
            let mut s = TcpStream::connect(addr).unwrap();
            let (stop, watcher) = watch_reply(&s);
            let started = Instant::now();
            let sent = dribble(&mut s, head.as_bytes(), Duration::from_millis(40), &stop);
            (sent, started.elapsed(), watcher.join().unwrap())
        });
        let body_client = scope.spawn(|| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(slow_body.as_bytes()).unwrap();
            let (stop, watcher) = watch_reply(&s);
            let sent = dribble(&mut s, &[b'x'; 400], Duration::from_millis(40), &stop);
            (sent, watcher.join().unwrap())
        });
        // While both dribble, the one worker serves others.
        std::thread::sleep(Duration::from_millis(100));
        assert_serves(addr);

        let (sent, took, reply) = head_client.join().unwrap();
        assert!(sent < head.len(), "the server took the whole slow head ({took:?})");
        assert!(took < HEADER_TIMEOUT + SLACK, "{took:?}");
        // hyper answers a head timeout with 408, or just closes.
        assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 408"), "{reply}");

        let (sent, reply) = body_client.join().unwrap();
        assert!(sent < 400, "the server waited for the whole slow body");
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("RequestTimeoutException") && reply.contains("--body-timeout"), "{reply}");
    });
    assert_serves(addr);
    assert_eq!(metric(addr, "perch_busy_workers"), 0.0);
}

#[test]
fn half_open_connections_are_closed_after_the_header_timeout() {
    let server = TestServer::start(config(), |_| {});
    let silent = TcpStream::connect(server.addr).unwrap();
    let mut half = TcpStream::connect(server.addr).unwrap();
    half.write_all(format!("PUT {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Le").as_bytes()).unwrap();
    let started = Instant::now();
    assert_serves(server.addr);
    for (what, mut s) in [("silent", silent), ("half a head", half)] {
        let reply = read_reply(&mut s);
        let took = started.elapsed();
        assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 408"), "{what}: {reply}");
        assert!(took < HEADER_TIMEOUT + SLACK, "{what}: closed after {took:?}");
    }
    assert!(started.elapsed() >= HEADER_TIMEOUT / 2, "closed before the header timeout");
    assert_serves(server.addr);
}

#[test]
fn a_connection_flood_beyond_max_connections_is_refused() {
    const LIMIT: usize = 16;
    const FLOOD: usize = 300;
    // The admitted connections stay (a header timeout longer than the test), so how many are refused
    // does not depend on timing: all but LIMIT.
    let server = TestServer::start(config(), |c| {
        c.max_connections = LIMIT;
        c.header_timeout = HOLD;
    });
    let mut flood: Vec<TcpStream> = (0..FLOOD).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    // The refused get a whole 503 and the close; the admitted, which send nothing, get nothing. The
    // client side keeps them all open meanwhile, so the refusals go past the server's lingering reads
    // to its immediate ones.
    let mut replies = vec![Vec::new(); FLOOD];
    let mut closed = vec![false; FLOOD];
    let sweep = |flood: &mut [TcpStream], replies: &mut [Vec<u8>], closed: &mut [bool]| {
        let mut buf = [0u8; 4096];
        for (i, s) in flood.iter_mut().enumerate() {
            if closed[i] {
                continue;
            }
            s.set_nonblocking(true).unwrap();
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        closed[i] = true;
                        break;
                    }
                    Ok(n) => replies[i].extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!(
                        "connection {i}: {e} (a reset, not a refusal) after {:?}",
                        String::from_utf8_lossy(&replies[i])
                    ),
                }
            }
        }
        closed.iter().filter(|c| **c).count()
    };
    let until = Instant::now() + SLACK;
    let mut refused = 0;
    while refused < FLOOD - LIMIT {
        assert!(Instant::now() < until, "{refused} of {FLOOD} refused with {LIMIT} places: more were let in");
        std::thread::sleep(Duration::from_millis(10));
        refused = sweep(&mut flood, &mut replies, &mut closed);
    }
    // No more than the LIMIT places were taken, and every one of them was: nothing else ends.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sweep(&mut flood, &mut replies, &mut closed), FLOOD - LIMIT, "refused more than the places taken");
    for (reply, closed) in replies.iter().zip(&closed) {
        let reply = String::from_utf8_lossy(reply);
        if *closed {
            assert_whole_refusal(&reply);
        } else {
            assert!(reply.is_empty(), "an admitted connection that sent nothing got {reply}");
        }
    }
    // When the flood ends its places come back; a client arriving before the server has seen them all
    // close gets the 503 and retries.
    drop(flood);
    assert_serves_once_admitted(server.addr);
    assert!(metric(server.addr, "perch_connections_refused_total") >= (FLOOD - LIMIT) as f64);
    assert_eq!(
        metric(server.addr, "perch_connections_reclaimed_total"),
        0.0,
        "connections never answered are not idle"
    );
}

#[test]
fn connections_that_send_nothing_give_their_places_back_at_the_header_timeout() {
    const LIMIT: usize = 4;
    let server = TestServer::start(config(), |c| c.max_connections = LIMIT);
    let holders: Vec<TcpStream> = (0..LIMIT).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    let started = Instant::now();
    // Refused (a whole 503) until the header timeout closes the holders, though they stay open.
    assert_serves_once_admitted(server.addr);
    assert!(started.elapsed() < HEADER_TIMEOUT + SLACK, "{:?}", started.elapsed());
    for mut s in holders {
        let reply = read_reply(&mut s);
        assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 408"), "{reply}");
    }
}

/// Regression: a refused connection was closed with its request unread, which makes the kernel reset
/// it: the client's write of its request failed, or the reset destroyed the 503 before it was read.
#[test]
fn a_refused_client_gets_the_whole_503_not_a_reset() {
    let server = TestServer::start(config(), |c| {
        c.max_connections = 1;
        c.header_timeout = HOLD;
    });
    // Connections are accepted in order: the holder is admitted, every later one refused.
    let holder = TcpStream::connect(server.addr).unwrap();
    for body in [image(), vec![0u8; 256 << 10]] {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(format!("PUT {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes())
            .unwrap();
        // Time for the server to refuse: had it closed, a reset would be here by now and fail this write.
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(&body).expect("the refused request is read, not reset");
        assert_whole_refusal(&read_reply(&mut s));
    }
    drop(holder);
    assert_serves_once_admitted(server.addr);
}

#[test]
fn the_connection_idle_longest_makes_room_for_a_new_one() {
    let server = TestServer::start(config(), |c| {
        c.max_connections = 3;
        c.header_timeout = HOLD;
    });
    // Admitted in order: one that never sends a request, then two keep-alive clients answered once.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    let mut older = TcpStream::connect(server.addr).unwrap();
    assert_eq!(ping_keep_alive(&mut older), 200);
    let mut newer = TcpStream::connect(server.addr).unwrap();
    assert_eq!(ping_keep_alive(&mut newer), 200);
    // Every place taken: a new client gets the place of the connection idle longest, closed for it.
    assert_serves(server.addr);
    let reply = read_reply(&mut older);
    assert!(reply.is_empty(), "{reply}");
    // The others stay: the newer keep-alive client is answered again, and the silent one, never
    // answered, is not idle but waiting for its request (the header timeout ends it).
    assert_eq!(ping_keep_alive(&mut newer), 200);
    silent.set_nonblocking(true).unwrap();
    match silent.read(&mut [0u8; 1]) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the silent connection was closed: {other:?}"),
    }
    assert_eq!(metric(server.addr, "perch_connections_reclaimed_total"), 1.0);
    assert_eq!(metric(server.addr, "perch_connections_refused_total"), 0.0);
}

#[test]
fn uploads_abandoned_halfway_are_forgotten() {
    let server = TestServer::start(config(), |c| c.max_body = 2 << 20);
    for _ in 0..20 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        write!(s, "PUT {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 1 << 20).unwrap();
        s.write_all(&[7u8; 10 * 1024]).unwrap();
        drop(s);
    }
    assert_serves(server.addr);
    let until = Instant::now() + SLACK;
    while metric(server.addr, "perch_requests_in_flight") != 0.0 {
        assert!(Instant::now() < until, "abandoned uploads still count as in flight");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(server.addr, "perch_queue_depth"), 0.0);
}

#[test]
fn oversized_heads_get_431() {
    let server = TestServer::start(config(), |c| {
        c.max_headers = 50;
        c.max_header_bytes = 8 * 1024;
    });
    let mut many = String::from("GET /ping HTTP/1.1\r\nHost: x\r\n");
    for i in 0..80 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(many.as_bytes()).unwrap();
    let reply = read_reply(&mut s);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    // One 12 KiB header: within what hyper reads at once (its buffer), so the 431 is not lost to a
    // reset; bigger heads are cut at the same limit.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(format!("GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(12 * 1024)).as_bytes())
        .unwrap();
    let reply = read_reply(&mut s);
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert!(!reply.contains("Healthy"), "{reply}");
    assert_serves(server.addr);
}

#[test]
fn a_huge_declared_body_gets_413_unread() {
    let server = TestServer::start(config(), |c| c.body_timeout = Duration::from_secs(60));
    for extra in ["", "Expect: 100-continue\r\n"] {
        // The server must answer from the head alone: no body byte is ever sent, and the body
        // timeout (60 s here) is not what ends it.
        let started = Instant::now();
        let mut s = TcpStream::connect(server.addr).unwrap();
        write!(s, "PUT {PREDICT} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 1000000000000\r\n\r\n").unwrap();
        let reply = read_reply(&mut s);
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(reply.contains("PayloadTooLargeException"), "{reply}");
        assert!(started.elapsed() < SLACK, "{:?}", started.elapsed());
    }
    assert_serves(server.addr);
}


/// Resident memory of a process, from /proc/PID/status.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap();
    kb * 1024
}

/// The server process (qemu's, cross-testing: it includes qemu) stays under this.
const RSS_CEILING: u64 = 256 << 20;
/// And grows by less than this from its first answer to after all the abuse.
const RSS_GROWTH: u64 = 64 << 20;

#[test]
fn perch_run_serve_survives_every_fault_in_bounded_memory() {
    let plan = case_dir().join("model.perch");
    let serve = || {
        let mut c = perch_run_command();
        c.args(["serve", "--port", "0", "--workers", "1", "--header-timeout", "0.6", "--body-timeout", "0.6"])
            .args(["--max-connections", "32", "--max-body", "2000000", "--models"])
            .arg(format!("fashion-cnn-s={}", plan.display()));
        c
    };
    // Its stderr is not read again: nothing the server logs after this must block it.
    let (child, addr, stderr) = spawn_server_patiently(serve, Duration::from_secs(120));
    std::thread::spawn(move || std::io::copy(&mut { stderr }, &mut std::io::sink()));
    // Kill the server whatever happens below.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(child);
    let pid = child.0.id();
    assert_serves(addr);
    let before = rss_bytes(pid);

    for _ in 0..3 {
        // A flood of silent connections.
        let flood: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // Abandoned uploads, absurd lengths, oversized heads, half heads.
        for i in 0..10 {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = write!(s, "PUT {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 1 << 20);
                let _ = s.write_all(&[i as u8; 10 * 1024]);
            }
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = write!(s, "PUT {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n\r\n");
            }
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = write!(s, "GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(64 * 1024));
            }
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = write!(s, "PUT {PREDICT} HTTP/1.1\r\nHo");
            }
        }
        drop(flood);
        // The places come back as the server sees the flood close (the faults' within the header
        // timeout); until then a client gets the whole 503, never a reset.
        assert_serves_once_admitted(addr);
    }
    assert_serves(addr);
    let after = rss_bytes(pid);
    eprintln!("perch-run serve RSS: {} KiB after the first answer, {} KiB after the faults", before >> 10, after >> 10);
    assert!(after < RSS_CEILING, "RSS {after} bytes over the {RSS_CEILING}-byte ceiling");
    assert!(after < before + RSS_GROWTH, "RSS grew from {before} to {after} bytes");
    drop(child);
}
