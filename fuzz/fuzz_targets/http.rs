//! `perch-run serve`'s request path, in-process: the router of a server holding the fashion-cnn-s float
//! plan answers requests built from the input. The input reads like an HTTP/1 request without the
//! version: `METHOD PATH`, a line per `name: value` header, an empty line, then the body.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use perch_runtime::serve::{ServeConfig, Server};
use tower::ServiceExt;

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    /// Holds the workers and the models the router uses.
    _server: Server,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let path = std::env::temp_dir().join(format!("perch-fuzz-http-{}.perch", std::process::id()));
    std::fs::write(&path, include_bytes!("../../tests/cases/fashion-cnn-s/model.perch")).expect("write the plan");
    let mut config = ServeConfig::new(vec![("fashion".into(), path.clone())]);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.workers = 1;
    config.queue = 4;
    config.max_body = 256 << 10;
    config.timeout = Duration::from_secs(10);
    let server = Server::start(config).expect("the server starts");
    let _ = std::fs::remove_file(&path);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    Harness { runtime, router: server.router(), _server: server }
});

fn request(data: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let mut builder = Request::builder().method(&first[..space]).uri(&first[space + 1..]);
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let value = line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]);
        builder = builder.header(&line[..colon], value);
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else { return };
    let harness = &*HARNESS;
    let (status, body) = harness.runtime.block_on(async {
        let response = harness.router.clone().oneshot(request).await.expect("the router is infallible");
        let status = response.status();
        (status, axum::body::to_bytes(response.into_body(), usize::MAX).await)
    });
    assert!(body.is_ok(), "the answer body could not be read");
    // Whatever the client sends is a client error at worst: a 500 means the server broke.
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{}", String::from_utf8_lossy(&body.unwrap()));
});
