//! `perch-run serve`: the command line of [`perch_runtime::serve`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use perch_runtime::serve::{ServeConfig, Server, model_store, termination_signal};

#[derive(clap::Args)]
pub struct Args {
    /// Directory of .perch plans. Without --models, every plan in it is served, named by its file name
    /// without `.perch`.
    #[arg(long, value_name = "DIR")]
    model_store: Option<PathBuf>,
    /// Models to serve, as NAME=FILE.perch (or FILE.perch, named by its stem; or `all`, the whole
    /// model store). A relative FILE is looked up in --model-store first. Repeat, or separate with commas.
    #[arg(long, value_name = "NAME=FILE", value_delimiter = ',')]
    models: Vec<String>,
    /// Address to listen on: 0.0.0.0 (or ::) to answer other machines.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    host: IpAddr,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Inference threads, each holding its own state per model. Default: one per CPU.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Requests that may wait for a free worker; the next ones get 503 (with Retry-After) at once.
    #[arg(long, value_name = "N", default_value_t = 100)]
    queue: usize,
    /// Largest request body in bytes; larger ones get 413. Default: TorchServe's max_request_size.
    #[arg(long, value_name = "BYTES", default_value_t = 6_553_500)]
    max_body: usize,
    /// Seconds a request may take from its headers to its answer (408 for a body still arriving,
    /// 503 for an image still waiting or running).
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    timeout: f64,
    /// Seconds a connection may take to send a whole request head (request line and headers),
    /// counted from its opening or from its previous answer: slow, silent, half-open and idle
    /// connections are closed then.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a request body may take to arrive after its headers (408 beyond; never more than
    /// --timeout). A slow upload holds a connection, not a worker.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    body_timeout: f64,
    /// Connections open at once. The next one takes the place of the connection idle longest
    /// between requests; with none idle, it gets a short 503 and is closed.
    #[arg(long, value_name = "N", default_value_t = 512)]
    max_connections: usize,
    /// Largest request head (request line and headers) in bytes; larger ones get 431.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024)]
    max_header_bytes: usize,
    /// Most header fields in a request; more get 431.
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_headers: usize,
    /// Seconds shutdown waits for requests in flight.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    drain_timeout: f64,
    /// Classes in each answer.
    #[arg(long, value_name = "K", default_value_t = 5)]
    top: usize,
    /// Convert images whose channels differ from the model's instead of answering 400.
    #[arg(long)]
    convert: bool,
}

fn seconds(what: &str, s: f64) -> Result<Duration> {
    if s.is_finite() && s > 0.0 && s <= 86_400.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        bail!("{what} must be a number of seconds between 0 and 86400, not {s}")
    }
}

fn models(args: &Args) -> Result<Vec<(String, PathBuf)>> {
    let store = || -> Result<Vec<(String, PathBuf)>> {
        let Some(dir) = &args.model_store else { bail!("`all` needs --model-store DIR") };
        let found = model_store(dir).with_context(|| format!("model store {}", dir.display()))?;
        if found.is_empty() {
            bail!("model store {} holds no .perch plans", dir.display());
        }
        Ok(found)
    };
    if args.models.is_empty() {
        if args.model_store.is_none() {
            bail!("nothing to serve: give --model-store DIR (every plan in it), or --models NAME=FILE.perch");
        }
        return store();
    }
    let mut out = Vec::new();
    for spec in &args.models {
        if spec == "all" {
            out.extend(store()?);
            continue;
        }
        let (name, file) = match spec.split_once('=') {
            Some((name, file)) => (name.to_string(), PathBuf::from(file)),
            None => {
                let file = PathBuf::from(spec);
                let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                (stem, file)
            }
        };
        let path = match &args.model_store {
            Some(dir) if file.is_relative() && dir.join(&file).is_file() => dir.join(&file),
            _ => file,
        };
        out.push((name, path));
    }
    Ok(out)
}

pub fn run(args: &Args) -> Result<()> {
    let mut config = ServeConfig::new(models(args)?);
    config.addr = SocketAddr::new(args.host, args.port);
    if let Some(w) = args.workers {
        config.workers = w;
    }
    config.queue = args.queue;
    config.max_body = args.max_body;
    config.timeout = seconds("--timeout", args.timeout)?;
    config.drain_timeout = seconds("--drain-timeout", args.drain_timeout)?;
    config.header_timeout = seconds("--header-timeout", args.header_timeout)?;
    config.body_timeout = seconds("--body-timeout", args.body_timeout)?;
    config.max_connections = args.max_connections;
    config.max_header_bytes = args.max_header_bytes;
    config.max_headers = args.max_headers;
    config.top_k = args.top;
    config.convert = args.convert;
    let workers = config.workers;
    let (queue, max_body) = (config.queue, config.max_body);
    let paths = config.models.clone();
    let server = Server::start(config)?;
    let addr = server.local_addr();
    for (name, path) in &paths {
        eprintln!("perch-run serve: model {name} from {}", path.display());
    }
    eprintln!("perch-run serve: {workers} worker(s), queue {queue}, bodies up to {max_body} bytes");
    let host = if addr.ip().is_unspecified() { "localhost".to_string() } else { addr.ip().to_string() };
    let example = paths.first().map(|(n, _)| n.as_str()).unwrap_or("MODEL");
    // Tests and scripts read this line for the port when --port 0 picked one.
    eprintln!(
        "perch-run serve: listening on http://{addr} (try: curl -T image.png http://{host}:{}/predictions/{example})",
        addr.port()
    );
    let left = server.run_blocking(async {
        termination_signal().await;
        eprintln!("perch-run serve: shutting down: no new connections, finishing the requests in flight");
    })?;
    if left > 0 {
        bail!("stopped with {left} connection(s) still open after --drain-timeout");
    }
    eprintln!("perch-run serve: stopped");
    Ok(())
}
