//! `perch-run serve` over real loopback sockets: a real HTTP client (ureq) for what clients send, raw
//! TCP for what broken clients send, and the CLI in a child process for SIGTERM. Nothing here depends on
//! timing except where a test says why (a full queue needs a busy worker).
#![cfg(feature = "serve")]

mod common;
use common::{TestServer, output_patiently, perch_run_command, spawn_server_patiently};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use perch_runtime::serve::ServeConfig;
use perch_runtime::{ChannelPolicy, Classifier};
use serde_json::Value;

/// How long a command the tests start may take (under qemu, in a debug build) before it is taken
/// for stuck and started again (`output_patiently`).
const PATIENCE: Duration = Duration::from_secs(120);

fn case_dir() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("../tests/cases/fashion-cnn-s")
}

fn plan_path() -> PathBuf {
    case_dir().join("model.perch")
}

fn images() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(case_dir().join("images")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// The servers these tests start: the example model, two workers.
fn config() -> ServeConfig {
    let mut config = ServeConfig::new(vec![("fashion-cnn-s".into(), plan_path())]);
    config.workers = 2;
    config
}

fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// Status, headers' Content-Type, and body as text.
fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String, String) {
    let mut response = result.expect("the request gets an answer");
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body = response.body_mut().read_to_string().expect("a text body");
    (status, content_type, body)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Fails unless the answer is TorchServe's JSON error with this status and type.
fn assert_error(got: (u16, String, String), status: u16, kind: &str, needle: &str) {
    let (code, content_type, body) = got;
    assert_eq!(code, status, "{body}");
    assert_eq!(content_type, "application/json", "{body}");
    let v = json(&body);
    assert_eq!(v["code"], status, "{body}");
    assert_eq!(v["type"], kind, "{body}");
    assert!(v["message"].as_str().unwrap().contains(needle), "`{needle}` not in {body}");
}

/// The value of one sample line of the Prometheus text, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn answers_as_torchserve_does_for_a_real_image() {
    let server = TestServer::start(config(), |_| {});
    let agent = client();
    let classifier = Classifier::load(plan_path(), 1).unwrap();
    for image in images().iter().take(3) {
        let bytes = std::fs::read(image).unwrap();
        let expected = classifier.classify(&perch_runtime::preprocess::decode_image(&bytes).unwrap(), ChannelPolicy::Strict, 5).unwrap();
        // `curl -T` sends PUT; TorchServe's examples also POST.
        for put in [true, false] {
            let url = server.url("/predictions/fashion-cnn-s");
            let request = if put { agent.put(&url).send(&bytes[..]) } else { agent.post(&url).send(&bytes[..]) };
            let (status, content_type, body) = answer(request);
            assert_eq!((status, content_type.as_str()), (200, "application/json"), "{body}");
            // TorchServe's image classifier: an object of the top 5 classes, most probable first.
            let keys: Vec<&str> = body.lines().filter_map(|l| l.trim().split('"').nth(1)).collect();
            assert_eq!(keys, expected.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(), "{body}");
            let v = json(&body);
            for p in &expected {
                let got = v[&p.label].as_f64().unwrap();
                assert!((got - f64::from(p.probability)).abs() < 1e-6, "{}: {got} vs {}", p.label, p.probability);
            }
        }
    }
    let (status, _, body) = answer(agent.get(&server.url("/ping")).call());
    assert_eq!((status, json(&body)), (200, serde_json::json!({"status": "Healthy"})));
    let (status, _, body) = answer(agent.get(&server.url("/models")).call());
    assert_eq!(status, 200);
    assert_eq!(json(&body), serde_json::json!({"models": [{"modelName": "fashion-cnn-s", "modelUrl": "model.perch"}]}));
    let (status, _, body) = answer(agent.get(&server.url("/models/fashion-cnn-s")).call());
    assert_eq!(status, 200);
    let description = &json(&body)[0];
    assert_eq!(description["modelName"], "fashion-cnn-s");
    assert_eq!(description["workers"].as_array().unwrap().len(), 2);
    assert_eq!(description["perch"]["labels"][9], "Ankle boot");
    assert_error(answer(agent.get(&server.url("/models/nope")).call()), 404, "ModelNotFoundException", "nope");
}

/// The helper the tests start commands with gives up on a child that never finishes, after three
/// tries, instead of waiting forever.
#[test]
fn a_child_that_never_finishes_is_started_three_times_then_given_up() {
    let started = Instant::now();
    let sleep = || {
        let mut c = Command::new("sleep");
        c.arg("30");
        c
    };
    let err = output_patiently(sleep, Duration::from_millis(300)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

/// And a server that never says it is listening, likewise.
#[test]
#[should_panic(expected = "did not start listening")]
fn a_server_that_never_listens_is_started_three_times_then_given_up() {
    let sleep = || {
        let mut c = Command::new("sleep");
        c.arg("30");
        c
    };
    spawn_server_patiently(sleep, Duration::from_millis(300));
}

#[test]
fn curl_upload_works_when_curl_is_installed() {
    let version = || {
        let mut c = Command::new("curl");
        c.arg("--version");
        c
    };
    if let Err(e) = output_patiently(version, PATIENCE) {
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "curl --version: {e}");
        eprintln!("curl is not installed: skipped (the ureq tests cover the same requests)");
        return;
    }
    let server = TestServer::start(config(), |_| {});
    let image = &images()[0];
    let url = server.url("/predictions/fashion-cnn-s");
    let curl = || {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "100", "-T"]).arg(image).arg(&url);
        c
    };
    let out = output_patiently(curl, PATIENCE).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v.as_object().unwrap().len(), 5, "{v}");
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let server = TestServer::start(config(), |c| c.max_body = 64 * 1024);
    let agent = client();
    let url = server.url("/predictions/fashion-cnn-s");
    let good = std::fs::read(&images()[0]).unwrap();

    assert_error(answer(agent.put(&server.url("/predictions/nope")).send(&good[..])), 404, "ModelNotFoundException", "nope");
    assert_error(answer(agent.put(&url).send(&b"this is not an image"[..])), 400, "BadRequestException", "does not decode");
    assert_error(answer(agent.put(&url).send(&good[..good.len() / 2])), 400, "BadRequestException", "does not decode");
    assert_error(answer(agent.put(&url).send(&[][..])), 400, "BadRequestException", "no body");

    // A JPEG cut short.
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x * 4 + y) as u8])))
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    assert_error(answer(agent.put(&url).send(&jpeg[..jpeg.len() / 3])), 400, "BadRequestException", "does not decode");
    // A colour image for a grey model is refused with the reason (the server was not started with --convert).
    let mut rgb = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(28, 28, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, 128])))
        .write_to(&mut std::io::Cursor::new(&mut rgb), image::ImageFormat::Png)
        .unwrap();
    assert_error(answer(agent.put(&url).send(&rgb[..])), 400, "BadRequestException", "3 channel(s)");
    // A small file claiming a huge image: refused on its declared size, before any decoder allocates.
    assert_error(answer(agent.put(&url).send(&huge_png_header(100_000, 100_000)[..])), 400, "BadRequestException", "over the limit of 16384 pixels a side");
    // Over the body limit: 413, whether the client declares the length or streams it.
    let big = vec![0u8; 200 * 1024];
    assert_error(answer(agent.put(&url).send(&big[..])), 413, "PayloadTooLargeException", "65536 bytes");
    assert_error(answer(agent.put(&url).send(ureq::SendBody::from_owned_reader(std::io::Cursor::new(big.clone())))), 413, "PayloadTooLargeException", "65536 bytes");
    assert_error(answer(agent.post(&server.url("/predictions/fashion-cnn-s/extra/parts")).send(&good[..])), 404, "ResourceNotFoundException", "/ping");
    assert_error(answer(agent.get(&url).call()), 405, "MethodNotAllowedException", "POST or PUT");
    assert_error(
        answer(agent.post(&url).header("content-type", "multipart/form-data; boundary=x").send(&good[..])),
        415,
        "UnsupportedMediaTypeException",
        "curl -T",
    );

    // Malformed HTTP: hyper answers 400 before any route runs.
    let mut raw = TcpStream::connect(server.addr).unwrap();
    raw.write_all(b"THIS IS NOT HTTP\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = raw.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // A client that goes away halfway through its body.
    let mut raw = TcpStream::connect(server.addr).unwrap();
    write!(raw, "PUT /predictions/fashion-cnn-s HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", good.len()).unwrap();
    raw.write_all(&good[..good.len() / 2]).unwrap();
    drop(raw);
    // A client that goes away while its image waits or runs.
    let mut raw = TcpStream::connect(server.addr).unwrap();
    write!(raw, "PUT /predictions/fashion-cnn-s HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", good.len()).unwrap();
    raw.write_all(&good).unwrap();
    drop(raw);

    // Still serving.
    let (status, _, body) = answer(agent.put(&url).send(&good[..]));
    assert_eq!(status, 200, "{body}");
    let (status, content_type, metrics) = answer(agent.get(&server.url("/metrics")).call());
    assert_eq!((status, content_type.as_str()), (200, "text/plain; version=0.0.4; charset=utf-8"));
    assert_eq!(metric(&metrics, r#"perch_requests_total{model="",code="404"}"#), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, r#"perch_requests_total{model="fashion-cnn-s",code="413"}"#), 2.0, "{metrics}");
    assert_eq!(metric(&metrics, r#"perch_requests_total{model="fashion-cnn-s",code="415"}"#), 1.0, "{metrics}");
    // Six bad bodies, plus the one cut short by its client (counted once the server sees the end).
    let bad = metric(&metrics, r#"perch_requests_total{model="fashion-cnn-s",code="400"}"#);
    assert!((6.0..=7.0).contains(&bad), "{metrics}");
    assert!(metric(&metrics, r#"perch_requests_total{model="fashion-cnn-s",code="200"}"#) >= 1.0, "{metrics}");
    assert_eq!(metric(&metrics, r#"perch_request_errors_total{model="fashion-cnn-s",type="PayloadTooLargeException"}"#), 2.0);
    assert!(metric(&metrics, r#"perch_request_duration_seconds_count{model="fashion-cnn-s"}"#) >= 10.0, "{metrics}");
}

/// A PNG signature and IHDR chunk (valid CRC) announcing `width` x `height` 8-bit grey pixels, and no data.
fn huge_png_header(width: u32, height: u32) -> Vec<u8> {
    let mut chunk = b"IHDR".to_vec();
    chunk.extend(width.to_be_bytes());
    chunk.extend(height.to_be_bytes());
    chunk.extend([8, 0, 0, 0, 0]);
    let mut crc = flate2::Crc::new();
    crc.update(&chunk);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&chunk);
    png.extend(crc.sum().to_be_bytes());
    png
}

#[test]
fn a_body_that_does_not_arrive_in_time_gets_408() {
    let server = TestServer::start(config(), |c| c.timeout = Duration::from_millis(500));
    let mut raw = TcpStream::connect(server.addr).unwrap();
    raw.write_all(b"PUT /predictions/fashion-cnn-s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789").unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut reply = String::new();
    let _ = raw.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"type\": \"RequestTimeoutException\""), "{reply}");
}

#[test]
fn a_full_queue_answers_503_at_once() {
    // One worker, one queue place: of many simultaneous requests, at most two are taken while the
    // worker decodes a 16-megapixel image (tens of milliseconds even on a fast machine; the requests
    // all arrive within a few). The rest must get 503 with Retry-After, not wait.
    let server = TestServer::start(config(), |c| {
        c.workers = 1;
        c.queue = 1;
        c.convert = true;
        c.max_body = 64 << 20;
    });
    let mut big = Vec::new();
    image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(4000, 4000, |x, y| image::Luma([((x / 8 + y / 8) % 256) as u8])))
        .write_to(&mut std::io::Cursor::new(&mut big), image::ImageFormat::Png)
        .unwrap();
    let clients = 12;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(clients));
    let url = server.url("/predictions/fashion-cnn-s");
    let answers: Vec<(u16, Option<String>, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (barrier, big, url) = (barrier.clone(), &big, &url);
                s.spawn(move || {
                    let agent = client();
                    barrier.wait();
                    let mut response = agent.put(url).send(&big[..]).expect("an answer");
                    let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                    (response.status().as_u16(), retry, response.body_mut().read_to_string().unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert_eq!(ok + refused.len(), clients, "only 200 or 503 expected: {answers:?}");
    assert!(ok >= 1 && !refused.is_empty(), "{ok} answered, {} refused", refused.len());
    for (_, retry, body) in &refused {
        assert_eq!(retry.as_deref(), Some("1"));
        let v = json(body);
        assert_eq!(v["type"], "ServiceUnavailableException");
        assert!(v["message"].as_str().unwrap().contains("--workers"), "{body}");
    }
    let metrics = answer(client().get(&server.url("/metrics")).call()).2;
    assert_eq!(metric(&metrics, r#"perch_requests_total{model="fashion-cnn-s",code="503"}"#), refused.len() as f64, "{metrics}");
    assert_eq!(metric(&metrics, "perch_queue_depth"), 0.0, "{metrics}");
}

#[test]
fn shutdown_finishes_the_request_in_flight() {
    let mut server = TestServer::start(config(), |_| {});
    let good = std::fs::read(&images()[0]).unwrap();
    let raw = upload_in_part(server.addr, "fashion-cnn-s", &good);
    let addr = server.addr;
    server.stop_accepting();
    wait_until_refused(addr);
    let reply = finish_upload(raw, &good);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body = &reply[reply.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(json(body).as_object().unwrap().len(), 5, "{body}");
    assert_eq!(server.shutdown(), 0, "every connection drained");
}

/// A prediction request in flight: its head and the first 10 bytes of `image` sent to `model`, and
/// the server has read the head.
fn upload_in_part(addr: SocketAddr, model: &str, image: &[u8]) -> TcpStream {
    let mut raw = TcpStream::connect(addr).unwrap();
    write!(raw, "PUT /predictions/{model} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", image.len()).unwrap();
    raw.write_all(&image[..10]).unwrap();
    wait_for_in_flight(addr);
    raw
}

/// Sends the rest of [`upload_in_part`]'s `image` and reads the whole answer.
fn finish_upload(mut raw: TcpStream, image: &[u8]) -> String {
    raw.write_all(&image[10..]).unwrap();
    let mut reply = String::new();
    raw.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let _ = raw.read_to_string(&mut reply);
    reply
}

/// Waits until the server has one prediction request in flight (its headers read).
fn wait_for_in_flight(addr: SocketAddr) {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let metrics = answer(client().get(&format!("http://{addr}/metrics")).call()).2;
        if metric(&metrics, "perch_requests_in_flight") == 1.0 {
            return;
        }
        assert!(Instant::now() < until, "the request never reached the server:\n{metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to two minutes: qemu is slow) until the server no longer accepts connections.
fn wait_until_refused(addr: SocketAddr) {
    let until = Instant::now() + Duration::from_secs(120);
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < until, "the server still accepts connections after shutdown");
        std::thread::sleep(Duration::from_millis(20));
    }
}


/// Starts `perch-run serve` and reads its address from the `listening on` line. The caller owns the
/// child and waits for it.
fn spawn_cli(args: &[&str]) -> (Child, SocketAddr, BufReader<std::process::ChildStderr>) {
    let serve = || {
        let mut c = perch_run_command();
        c.arg("serve").args(args);
        c
    };
    spawn_server_patiently(serve, PATIENCE)
}

#[test]
fn sigterm_drains_then_exits_cleanly() {
    let store = tempfile::tempdir().unwrap();
    std::fs::copy(plan_path(), store.path().join("fashion.perch")).unwrap();
    let (mut child, addr, mut stderr) = spawn_cli(&["--model-store", store.path().to_str().unwrap(), "--port", "0", "--workers", "1"]);
    let good = std::fs::read(&images()[0]).unwrap();
    let (status, _, body) = answer(client().put(&format!("http://{addr}/predictions/fashion")).send(&good[..]));
    assert_eq!(status, 200, "{body}");
    // A request in flight when SIGTERM comes: headers and part of the body sent.
    let raw = upload_in_part(addr, "fashion", &good);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    wait_until_refused(addr);
    let reply = finish_upload(raw, &good);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status}: {rest}");
    assert!(rest.contains("finishing the requests in flight") && rest.contains("stopped"), "{rest}");
    assert!(!rest.contains("panicked"), "{rest}");
}

#[test]
fn cli_refuses_bad_setups_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec![], "nothing to serve"),
        (vec!["--model-store", dir.path().to_str().unwrap()], "holds no .perch plans"),
        (vec!["--models", "m=/no/such.perch"], "/no/such.perch"),
        (vec!["--models", "bad/name=x.perch"], "cannot appear in a URL"),
        (vec!["--models", "all"], "needs --model-store"),
        (vec!["--models", "m=x.perch", "--timeout", "0"], "--timeout must be"),
    ] {
        let serve = || {
            let mut c = perch_run_command();
            c.arg("serve").args(&args);
            c
        };
        let out = output_patiently(serve, PATIENCE).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{args:?}: `{needle}` not in {stderr}");
    }
    // A port already taken says so.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let serve = || {
        let mut c = perch_run_command();
        c.args(["serve", "--models"]).arg(format!("m={}", plan_path().display())).args(["--port", &port]);
        c
    };
    let out = output_patiently(serve, PATIENCE).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("another server has that port"), "{stderr}");
}
