//! The connections: the accept loop, its limit of `max_connections` open at once, hyper's limits on
//! each (header timeout, head size, header count), and the graceful stop.
//!
//! When every place is taken, a new connection gets the place of the connection idle longest between
//! requests (answered, nothing read since), which is closed for it, as nginx reuses its keep-alive
//! connections. A connection that has not been answered yet, even a silent one, is never closed for
//! another: the header timeout ends those. With no idle connection the new one is refused: a canned
//! 503, then what the client sends is read and thrown away for a moment before the close. Closing a
//! socket with unread bytes sends a reset instead of a FIN, and a reset can destroy the 503 before
//! the client reads it, or fail the client's write of its request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

use super::{App, Metrics, api};

/// Refused connections read (and their requests thrown away) at once, at most. Beyond, a refused
/// connection gets the 503 and only what it has already sent is read before the close.
const LINGERING: usize = 64;
/// How long a refused connection is read at most before it is closed anyway.
const LINGER: Duration = Duration::from_secs(2);
/// What a refused connection beyond `LINGERING` has already sent is read up to this, without waiting.
const READ_AT_ONCE: usize = 64 << 10;
/// How long a new connection waits for the place of the idle connection closed for it. Idle, that
/// one closes at once, unless a request reached it meanwhile: then it answers that first.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// One of the `max_connections` places.
type Place = OwnedSemaphorePermit;

/// An admitted connection, as the accept loop sees it.
struct Connection {
    id: u64,
    /// When the connection went idle (an answer handed to hyper whole, not a byte read since), as an
    /// order (smaller: longer ago); 0 while it is not idle, before its first request, and once closed
    /// for another connection.
    idle_since: AtomicU64,
    /// Requests whose answers hyper has not yet taken whole.
    answering: AtomicUsize,
    /// Closes the connection and gives its place to whoever sends where: taken (once) by the accept loop.
    close_for: Mutex<Option<oneshot::Sender<oneshot::Sender<Place>>>>,
}

/// The admitted connections, to find the one idle longest.
#[derive(Default)]
struct Registry {
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    next_idle: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent whatever panicked while holding them.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    fn add(&self) -> (Arc<Connection>, oneshot::Receiver<oneshot::Sender<Place>>) {
        let (close_for, closing) = oneshot::channel();
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            idle_since: AtomicU64::new(0),
            answering: AtomicUsize::new(0),
            close_for: Mutex::new(Some(close_for)),
        });
        lock(&self.open).insert(connection.id, connection.clone());
        (connection, closing)
    }

    fn remove(&self, connection: &Connection) {
        lock(&self.open).remove(&connection.id);
    }

    /// Asks the connection idle longest to close; its place will come through the receiver.
    fn close_oldest_idle(&self) -> Option<oneshot::Receiver<Place>> {
        let open = lock(&self.open);
        loop {
            let (since, oldest) = open
                .values()
                .filter_map(|c| {
                    let since = c.idle_since.load(Ordering::Acquire);
                    (since != 0).then_some((since, c))
                })
                .min_by_key(|(since, _)| *since)?;
            // A request may have begun since the load: claim this very idle period, or look again.
            if oldest.idle_since.compare_exchange(since, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            let Some(close_for) = lock(&oldest.close_for).take() else { continue };
            let (give, place) = oneshot::channel();
            if close_for.send(give).is_ok() {
                return Some(place);
            }
        }
    }
}

/// Marks a connection as answering from a request's head until hyper has taken the whole answer.
struct Answering {
    connection: Arc<Connection>,
    registry: Arc<Registry>,
}

impl Answering {
    fn begin(connection: Arc<Connection>, registry: Arc<Registry>) -> Answering {
        connection.answering.fetch_add(1, Ordering::AcqRel);
        connection.idle_since.store(0, Ordering::Release);
        Answering { connection, registry }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if self.connection.answering.fetch_sub(1, Ordering::AcqRel) == 1 {
            let order = self.registry.next_idle.fetch_add(1, Ordering::Relaxed) + 1;
            self.connection.idle_since.store(order, Ordering::Release);
        }
    }
}

/// The socket of an admitted connection: a byte read means a request is arriving, so the connection is
/// no longer idle (hyper itself would close it mid-head, as idle, on a graceful shutdown).
struct Watched {
    stream: TcpStream,
    connection: Arc<Connection>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.connection.idle_since.store(0, Ordering::Release);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What every connection shares.
struct Shared {
    router: Router,
    http: http1::Builder,
    metrics: Arc<Metrics>,
    places: Arc<Semaphore>,
    lingering: Arc<Semaphore>,
    /// The most a refused connection is read, whatever the time: the largest request.
    linger_bytes: usize,
    refusal: Bytes,
    registry: Arc<Registry>,
    stopping: watch::Receiver<bool>,
}

impl Shared {
    fn admit(self: &Arc<Self>, stream: TcpStream) {
        if let Ok(place) = self.places.clone().try_acquire_owned() {
            self.open(stream, place);
        } else if let Some(place) = self.registry.close_oldest_idle() {
            self.metrics.reclaimed_connections.fetch_add(1, Ordering::Relaxed);
            let shared = self.clone();
            tokio::spawn(async move {
                let mut stopping = shared.stopping.clone();
                tokio::select! {
                    taken = tokio::time::timeout(TAKEOVER_WAIT, place) => match taken {
                        Ok(Ok(place)) if !*shared.stopping.borrow() => shared.open(stream, place),
                        _ => shared.refuse(stream),
                    },
                    _ = stopping.wait_for(|stop| *stop) => shared.refuse(stream),
                }
            });
        } else {
            self.refuse(stream);
        }
    }

    /// Serves a connection in its place until it ends, or until the server stops or closes it for
    /// another connection (then it finishes the request in flight, if any, first).
    fn open(self: &Arc<Self>, stream: TcpStream, place: Place) {
        let _ = stream.set_nodelay(true);
        let (connection, mut closing) = self.registry.add();
        let routes = TowerToHyperService::new(self.router.clone());
        let (registry, watched) = (self.registry.clone(), connection.clone());
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let answering = Answering::begin(watched.clone(), registry.clone());
            let answer = routes.call(request);
            async move {
                let response = answer.await?;
                // Answering until hyper drops the body, at its end (or when the client goes away).
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _ = &answering;
                        frame
                    }))
                }))
            }
        });
        let io = TokioIo::new(Watched { stream, connection: connection.clone() });
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        let shared = self.clone();
        tokio::spawn(async move {
            let served = shared.http.serve_connection(io, service);
            tokio::pin!(served);
            let mut stopping = shared.stopping.clone();
            let mut successor = None;
            let mut ending = false;
            loop {
                tokio::select! {
                    // Resets, malformed requests and timeouts end the connection too: hyper has answered
                    // what it could parse, and nothing else is affected.
                    _ = served.as_mut() => break,
                    Ok(give) = &mut closing, if !ending => {
                        successor = Some(give);
                        ending = true;
                        served.as_mut().graceful_shutdown();
                    }
                    Ok(_) = stopping.wait_for(|stop| *stop), if !ending => {
                        ending = true;
                        served.as_mut().graceful_shutdown();
                    }
                }
            }
            shared.registry.remove(&connection);
            // Asked to close as it ended by itself: the ask (sent under the registry's lock) is there now.
            if successor.is_none() {
                successor = closing.try_recv().ok();
            }
            shared.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            // Straight to the connection it was closed for (if that one still waits), so that no other
            // takes the place in between.
            if let Some(give) = successor {
                let _ = give.send(place);
            }
        });
    }

    fn refuse(&self, stream: TcpStream) {
        self.metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
        match self.lingering.clone().try_acquire_owned() {
            Ok(lingering) => {
                let (answer, most) = (self.refusal.clone(), self.linger_bytes);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(LINGER, refuse_and_linger(stream, &answer, most)).await;
                    drop(lingering);
                });
            }
            // A flood: answer and close now, reading only what has arrived. Through std, which tries the
            // socket itself: tokio's try_* answer WouldBlock until its driver has reported it ready.
            Err(_) => {
                if let Ok(mut stream) = stream.into_std() {
                    let _ = stream.write(&self.refusal);
                    let mut sink = [0u8; 4096];
                    let mut read = 0;
                    while read < READ_AT_ONCE {
                        match stream.read(&mut sink) {
                            Ok(n) if n > 0 => read += n,
                            _ => break,
                        }
                    }
                }
            }
        }
    }
}

/// The 503, the end of the answer (FIN), then the client's request read and thrown away until it
/// closes, so that the close cannot reset the answer away. (tokio's io-util is not linked: by hand.)
async fn refuse_and_linger(mut stream: TcpStream, answer: &[u8], most: usize) -> io::Result<()> {
    let mut written = 0;
    while written < answer.len() {
        match poll_fn(|cx| Pin::new(&mut stream).poll_write(cx, &answer[written..])).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => written += n,
        }
    }
    poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx)).await?;
    let mut sink = [0u8; 4096];
    let mut read = 0;
    while read <= most {
        let n = poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut sink);
            Pin::new(&mut stream).poll_read(cx, &mut buf).map_ok(|()| buf.filled().len())
        })
        .await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    Ok(())
}

/// Accepts connections until `shutdown`, then lets every open connection finish its request in flight.
/// Returns the connections still open when the drain timeout ran out.
pub(crate) async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) -> usize {
    let config = &app.config;
    let drain_timeout = config.drain_timeout;
    // The semaphore's own bound, and acquire_many's u32, are far above what file descriptors allow.
    let max = config.max_connections.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
    let mut http = http1::Builder::new();
    // A client that opens a connection and sends no complete request head (nothing, half of one, or
    // one a byte at a time) is dropped after this long; so is a connection idle between requests.
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_header_size(config.max_header_bytes)
        .max_headers(config.max_headers)
        // The read buffer holds a request head, then body chunks: hyper's floor is 8 KiB.
        .max_buf_size(config.max_header_bytes.max(8192) + 8192);
    let (stop, stopping) = watch::channel(false);
    let shared = Arc::new(Shared {
        router: api::router(app.clone()),
        http,
        metrics: app.metrics.clone(),
        places: Arc::new(Semaphore::new(max)),
        lingering: Arc::new(Semaphore::new(LINGERING)),
        linger_bytes: config.max_body.saturating_add(config.max_header_bytes),
        refusal: api::too_many_connections(),
        registry: Arc::default(),
        stopping,
    });
    drop(app);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) => shared.admit(stream),
                    Err(e) => {
                        // Out of file descriptors and the like: wait for connections to close.
                        eprintln!("perch-run serve: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                // With a backlog, accept never waits, so the loop would not let the connections that
                // ended meanwhile give their places back before it counts them for the next one.
                tokio::task::yield_now().await;
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    stop.send_replace(true);
    let open = max - shared.places.available_permits();
    if open > 0 {
        eprintln!("perch-run serve: stopped accepting; finishing the requests of {open} open connection(s)");
    }
    match tokio::time::timeout(drain_timeout, shared.places.acquire_many(max as u32)).await {
        Ok(_) => 0,
        Err(_) => {
            eprintln!(
                "perch-run serve: {} s drain timeout: closing the connections still open",
                drain_timeout.as_secs_f64()
            );
            (max - shared.places.available_permits()).max(1)
        }
    }
}
