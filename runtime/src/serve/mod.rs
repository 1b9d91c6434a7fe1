//! `perch-run serve`: TorchServe's inference API (and the read side of its management API) over
//! plans, so what PyTorch users already send to `torchserve` works against a board.
//!
//! | request | answer |
//! |---|---|
//! | `POST` or `PUT /predictions/{model}`, the encoded image as the body (`curl -T img.jpg URL`) | `{"label": probability, ...}`, the top 5, most probable first (TorchServe's `image_classifier` handler) |
//! | `GET /ping` | `{"status": "Healthy"}` |
//! | `GET /models`, `GET /models/{model}` | the models served, TorchServe's listing and description |
//! | `GET /metrics` | Prometheus text: requests and errors per model and status, latency histograms, queue |
//!
//! Errors are TorchServe's JSON, `{"code": 404, "type": "ModelNotFoundException", "message": "..."}`.
//! Each worker thread holds one tract session per model; requests wait in a bounded queue, and the
//! server answers 503 at once when it is full. Bodies over the limit get 413, a body that does not
//! arrive in time 408, a request head that does not arrive in time is dropped, one too large gets 431,
//! and connections beyond `max_connections` get 503 (see [`ServeConfig`]). [`Server::run`] stops on the future it is given (the CLI passes SIGTERM or
//! SIGINT): it stops accepting, finishes the requests in flight, then returns.
//!
//! ```no_run
//! use perch_runtime::serve::{ServeConfig, Server};
//!
//! let mut config = ServeConfig::new(vec![("fashion".into(), "fashion-cnn-s.perch".into())]);
//! config.addr = "127.0.0.1:8080".parse()?;
//! let server = Server::start(config)?;
//! println!("listening on http://{}", server.local_addr());
//! // Until SIGTERM or Ctrl-C; then requests in flight finish.
//! server.run_blocking(perch_runtime::serve::termination_signal())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod api;
mod connections;
mod metrics;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{Classifier, Plan, Prediction};

pub use metrics::Metrics;

/// How a server is set up. [`ServeConfig::new`] gives TorchServe's defaults where it has one.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// (name, plan file) of each model to serve, as `/predictions/{name}`.
    pub models: Vec<(String, PathBuf)>,
    /// Address to listen on; port 0 picks a free port (see [`Server::local_addr`]).
    pub addr: SocketAddr,
    /// Inference threads, each with its own tract state per model.
    pub workers: usize,
    /// Requests that may wait for a worker; one more is answered 503.
    pub queue: usize,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body: usize,
    /// Time a request may take, from its headers to its answer: a body still arriving then gets 408, an
    /// image still waiting or running gets 503.
    pub timeout: Duration,
    /// Time a connection may take to send a complete request head (line and headers), counted from
    /// when the server starts waiting for it: a new connection, or one idle between requests. A client
    /// that sends nothing, half a head, or a head a byte at a time is closed then (hyper answers 408).
    pub header_timeout: Duration,
    /// Time a request body may take to arrive after its head (408 beyond). A slow body holds a
    /// connection, never a worker: workers only see complete bodies.
    pub body_timeout: Duration,
    /// Client connections open at once. A connection beyond takes the place of the connection idle
    /// longest between requests, which is closed; with none idle, it gets a short 503 (what it sends
    /// is read and thrown away for a moment, so that it sees the answer, not a reset) and is closed.
    /// Silent, half-open and idle connections free their place after `header_timeout`.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most header fields in a request (431 beyond).
    pub max_headers: usize,
    /// How long shutdown waits for requests in flight before it gives up on them.
    pub drain_timeout: Duration,
    /// Classes in each answer (TorchServe's image classifier: 5).
    pub top_k: usize,
    /// Convert images whose channels differ from the model's instead of refusing them (400).
    pub convert: bool,
}

impl ServeConfig {
    pub fn new(models: Vec<(String, PathBuf)>) -> ServeConfig {
        ServeConfig {
            models,
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue: 100,
            // TorchServe's max_request_size.
            max_body: 6_553_500,
            timeout: Duration::from_secs(120),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            drain_timeout: Duration::from_secs(30),
            top_k: 5,
            convert: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("no model to serve: name one with --models NAME=FILE.perch, or put .perch files in the model store")]
    NoModels,
    #[error("model name `{0}` is used twice")]
    DuplicateName(String),
    #[error("model name `{0}` cannot appear in a URL path: use letters, digits, `-`, `_` and `.`")]
    BadName(String),
    #[error("{path}: {error}")]
    Load { path: String, error: crate::RunError },
    #[error("{what} must be at least 1")]
    Zero { what: &'static str },
    #[error("cannot listen on {addr}: {error}{hint}")]
    Bind { addr: SocketAddr, error: std::io::Error, hint: &'static str },
    #[error("cannot start the server: {0}")]
    Start(std::io::Error),
}

/// A model as the server holds it.
pub(crate) struct Model {
    pub name: String,
    pub path: PathBuf,
    pub classifier: Classifier,
}

/// What a worker answers for one job.
pub(crate) enum Outcome {
    Classified(Vec<Prediction>),
    /// The body is not an image this model can take (client error).
    BadImage(String),
    /// Inference failed (server error).
    Failed(String),
}

/// State shared by every request.
pub(crate) struct App {
    pub models: Arc<Vec<Model>>,
    pub pool: workers::Pool,
    pub metrics: Arc<Metrics>,
    pub config: ServeConfig,
    pub started: SystemTime,
}

/// A bound server, ready to run. Models are loaded and optimized, workers started, the port is open.
pub struct Server {
    app: Arc<App>,
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
}

/// Names from `--models`/the model store end up in URLs and metric labels: keep them plain.
fn check_name(name: &str) -> Result<(), ServeError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != "..";
    if ok { Ok(()) } else { Err(ServeError::BadName(name.to_string())) }
}

/// The `.perch` files of a model store directory, named by file stem, sorted.
pub fn model_store(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut models = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "perch") {
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            models.push((name, path));
        }
    }
    models.sort();
    Ok(models)
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local_addr", &self.local_addr).field("models", &self.model_names()).finish()
    }
}

impl Server {
    /// Loads every model, starts the workers and binds the address.
    pub fn start(config: ServeConfig) -> Result<Server, ServeError> {
        if config.models.is_empty() {
            return Err(ServeError::NoModels);
        }
        for (what, n) in [
            ("--workers", config.workers),
            ("--queue", config.queue),
            ("--max-body", config.max_body),
            ("--top", config.top_k),
            ("--max-connections", config.max_connections),
            ("--max-headers", config.max_headers),
            ("--max-header-bytes", config.max_header_bytes),
        ] {
            if n == 0 {
                return Err(ServeError::Zero { what });
            }
        }
        for (i, (name, _)) in config.models.iter().enumerate() {
            check_name(name)?;
            if config.models[..i].iter().any(|(n, _)| n == name) {
                return Err(ServeError::DuplicateName(name.clone()));
            }
        }
        let mut models: Vec<Model> = Vec::new();
        for (name, path) in &config.models {
            let load_err = |error| ServeError::Load { path: path.display().to_string(), error };
            let plan = Plan::load(path).map_err(|e| load_err(e.into()))?;
            // Requests are single images: a plan fixed to another batch size runs padded.
            let batch = plan.manifest.input.fixed_batch().unwrap_or(1);
            let classifier = Classifier::new(plan, batch).map_err(load_err)?;
            models.push(Model { name: name.clone(), path: path.clone(), classifier });
        }
        let models = Arc::new(models);
        let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
        let metrics = Arc::new(Metrics::new(&names, config.workers, config.queue));
        let policy = if config.convert { crate::ChannelPolicy::Convert } else { crate::ChannelPolicy::Strict };
        let listener = std::net::TcpListener::bind(config.addr).map_err(|error| ServeError::Bind {
            addr: config.addr,
            hint: match error.kind() {
                std::io::ErrorKind::AddrInUse => " (another server has that port: pick another with --port)",
                std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges: use a higher --port)",
                _ => "",
            },
            error,
        })?;
        listener.set_nonblocking(true).map_err(ServeError::Start)?;
        let local_addr = listener.local_addr().map_err(ServeError::Start)?;
        let pool = workers::Pool::start(models.clone(), config.workers, config.queue, policy, config.top_k, metrics.clone())
            .map_err(ServeError::Start)?;
        let app = Arc::new(App { models, pool, metrics, config, started: SystemTime::now() });
        Ok(Server { app, listener, local_addr })
    }

    /// The address the server listens on (with the port picked when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The routes without the listener: they answer requests in-process (tests, fuzzing) as they do
    /// over TCP, with this server's models, workers and metrics.
    pub fn router(&self) -> axum::Router {
        api::router(self.app.clone())
    }

    /// The served models' names, in order.
    pub fn model_names(&self) -> Vec<String> {
        self.app.models.iter().map(|m| m.name.clone()).collect()
    }

    /// Serves until `shutdown` completes, then stops accepting connections, lets the requests in flight
    /// finish (up to the drain timeout), stops the workers and returns how many connections were still
    /// open when it gave up waiting (0 when all drained).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<usize, ServeError> {
        let listener = tokio::net::TcpListener::from_std(self.listener).map_err(ServeError::Start)?;
        let left = connections::serve(listener, self.app.clone(), shutdown).await;
        // Every request has its answer (or was abandoned): nothing more will be queued.
        // Connections that outlived the drain timeout still hold the app; their workers end with the process.
        if let Ok(app) = Arc::try_unwrap(self.app) {
            app.pool.shutdown()
        }
        Ok(left)
    }

    /// [`Server::run`] on a Tokio runtime of its own (one thread: HTTP is light, inference runs on the
    /// worker threads).
    pub fn run_blocking(self, shutdown: impl Future<Output = ()>) -> Result<usize, ServeError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ServeError::Start)?;
        runtime.block_on(self.run(shutdown))
    }
}

/// Resolves when the process gets SIGTERM or SIGINT (Ctrl-C), as `perch-run serve` stops.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            // Without signal handlers the default action (exit) still applies: wait forever.
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_url_safe() {
        for good in ["fashion-cnn-s", "resnet_18", "m.v2", "A1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "a b", "..", "é", "a?b", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_errors_are_reported_before_loading() {
        assert!(matches!(Server::start(ServeConfig::new(vec![])), Err(ServeError::NoModels)));
        let mut c = ServeConfig::new(vec![("m".into(), "a.perch".into()), ("m".into(), "b.perch".into())]);
        assert!(matches!(Server::start(c.clone()), Err(ServeError::DuplicateName(_))));
        c.models = vec![("a b".into(), "a.perch".into())];
        assert!(matches!(Server::start(c), Err(ServeError::BadName(_))));
        let mut c = ServeConfig::new(vec![("m".into(), "/nonexistent.perch".into())]);
        c.workers = 0;
        assert!(matches!(Server::start(c.clone()), Err(ServeError::Zero { what: "--workers" })));
        c.workers = 1;
        let err = Server::start(c).unwrap_err().to_string();
        assert!(err.starts_with("/nonexistent.perch: "), "{err}");
    }
}
