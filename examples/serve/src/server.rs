//! The accept loop: bounded connections and a graceful shutdown.
//!
//! * Each connection is served by hyper with a head timeout
//!   ([`Limits::header_timeout`](crate::Limits::header_timeout)): the time from when the
//!   server starts waiting for a request head (on a new connection, and again after each
//!   response on a keep-alive connection) to the head's end. So a silent connection, a
//!   connection idle between requests and a head sent byte by byte are all closed after it.
//! * A response that the client reads nothing of for
//!   [`Limits::write_timeout`](crate::Limits::write_timeout) closes its connection (the
//!   reply itself never waits for the client: it is produced into a channel).
//! * Open connections are capped ([`Limits::max_connections`](crate::Limits::max_connections),
//!   lowered to fit the open-files limit). At the cap, a new connection closes the oldest
//!   connection that has no request in flight, so no number of idle or slow clients keeps a
//!   real one out; when every connection has a request in flight, the server stops accepting
//!   until one closes.
//! * On shutdown the listener closes, idle connections close, queued requests get 503, and
//!   the running reply gets [`Limits::shutdown_grace`](crate::Limits::shutdown_grace) to
//!   finish before it is ended with an error event.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::body::GuardedBody;
use crate::stall::WriteTimeout;
use crate::AppState;

/// Descriptors kept free for the model, the prompt cache and the runtime's own files when
/// the connection cap is fitted to the open-files limit.
const RESERVED_FDS: u64 = 64;

/// A bound listener with its model, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    addr: SocketAddr,
}

/// Starts a graceful shutdown of a [`Server`] from elsewhere.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    state: Arc<AppState>,
}

impl ShutdownHandle {
    /// Begins the shutdown (once; later calls do nothing).
    pub fn shut_down(&self) {
        let grace = self.state.config.limits.shutdown_grace;
        self.state.shutdown.send_if_modified(|deadline| {
            if deadline.is_some() {
                return false;
            }
            *deadline = Some(Instant::now() + grace);
            true
        });
    }
}

/// Binds `host:port` (port 0 picks a free one) and serves on a task of its own; returns the
/// address it listens on and the handle that shuts it down.
pub async fn start(
    state: Arc<AppState>,
    host: &str,
    port: u16,
) -> std::io::Result<(SocketAddr, ShutdownHandle)> {
    let server = Server::bind(state, host, port).await?;
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    tokio::spawn(server.run());
    Ok((addr, handle))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// One open connection, as the cap sees it.
struct Conn {
    in_flight: Arc<AtomicUsize>,
    close: Arc<Notify>,
    /// Asked to close already.
    closing: bool,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Conns {
    open: Mutex<BTreeMap<u64, Conn>>,
    closed: Notify,
}

impl Conns {
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn is_idle(c: &Conn) -> bool {
        !c.closing && c.in_flight.load(Ordering::SeqCst) == 0
    }

    /// Whether some connection has no request in flight (and is not closing already).
    fn has_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.values().any(Conns::is_idle)
    }

    /// Asks the oldest connection with no request in flight to close.
    fn close_oldest_idle(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = open.values_mut().find(|c| Conns::is_idle(c)) {
            c.closing = true;
            c.close.notify_one();
        }
    }
}

/// Counts a request in flight on its connection until its response body ends.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The process's open-files limit (soft), if it can be read.
fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid, exclusive pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    // (`rlim_t` is `u64` on Linux, but not on every target.)
    #[allow(clippy::unnecessary_cast)]
    let current = limit.rlim_cur as u64;
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(current)
}

impl Server {
    /// Binds `host:port` (port 0 picks a free one).
    pub async fn bind(state: Arc<AppState>, host: &str, port: u16) -> std::io::Result<Server> {
        let listener = TcpListener::bind((host, port)).await?;
        let addr = listener.local_addr()?;
        Ok(Server {
            listener,
            state,
            addr,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that starts the graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// The connection cap in force: the configured one, lowered to fit the open-files limit.
    fn max_connections(&self) -> usize {
        let configured = self.state.config.limits.max_connections.max(1);
        match open_files_limit() {
            Some(limit) => {
                let fitting = limit.saturating_sub(RESERVED_FDS).max(1) as usize;
                if fitting < configured {
                    tracing::warn!(
                        configured,
                        open_files_limit = limit,
                        "lowering the connection cap to {fitting} to fit the open-files limit"
                    );
                }
                configured.min(fitting)
            }
            None => configured,
        }
    }

    /// Serves until the shutdown (see [`ShutdownHandle`]), then waits for the open
    /// connections to finish, at most the shutdown grace period and a few seconds more.
    pub async fn run(self) -> std::io::Result<()> {
        let max = self.max_connections();
        let state = self.state;
        let app = crate::router(Arc::clone(&state));
        let conns = Arc::new(Conns::default());
        let mut next_id = 0u64;
        let mut stop = state.shutdown.subscribe();
        loop {
            // At the cap with every connection busy: wait for one to close.
            while conns.len() >= max && !conns.has_idle() {
                let closed = conns.closed.notified();
                tokio::select! {
                    _ = closed => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = crate::shutdown_begun(&mut stop) => break,
                }
            }
            let (stream, _peer) = tokio::select! {
                _ = crate::shutdown_begun(&mut stop) => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors (or a connection reset before it was taken):
                        // make room and try again shortly.
                        tracing::warn!("accepting a connection: {e}");
                        conns.close_oldest_idle();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            if conns.len() >= max {
                conns.close_oldest_idle();
            }
            next_id += 1;
            spawn_connection(next_id, stream, &state, &app, &conns);
        }
        drop(self.listener);
        // Every connection task sees the shutdown too and closes its connection: an idle one
        // at once, the others after their response (within the grace period).
        let deadline = Instant::now() + state.config.limits.shutdown_grace + Duration::from_secs(5);
        while conns.len() > 0 && Instant::now() < deadline {
            let closed = conns.closed.notified();
            tokio::select! {
                _ = closed => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        Ok(())
    }
}

fn spawn_connection(
    id: u64,
    stream: TcpStream,
    state: &Arc<AppState>,
    app: &axum::Router,
    conns: &Arc<Conns>,
) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let close = Arc::new(Notify::new());
    conns.open.lock().unwrap_or_else(|e| e.into_inner()).insert(
        id,
        Conn {
            in_flight: Arc::clone(&in_flight),
            close: Arc::clone(&close),
            closing: false,
        },
    );
    state.metrics.connection(1);
    let _ = stream.set_nodelay(true);
    let state = Arc::clone(state);
    let app = app.clone();
    let conns = Arc::clone(conns);
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = InFlight::new(&in_flight);
            let app = app.clone();
            async move {
                let response = app
                    .oneshot(request.map(Body::new))
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                Ok::<_, Infallible>(response.map(|body| GuardedBody::wrap(body, guard)))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(state.config.limits.header_timeout)
            .keep_alive(true);
        let stalled = Arc::new(AtomicBool::new(false));
        let io = WriteTimeout::new(
            stream,
            state.config.limits.write_timeout,
            Arc::clone(&stalled),
        );
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut shutdown = state.shutdown.subscribe();
        tokio::select! {
            _ = connection.as_mut() => {}
            _ = close.notified() => {
                connection.as_mut().graceful_shutdown();
                // An idle connection closes at once; one mid-head within a second.
                let _ = tokio::time::timeout(Duration::from_secs(1), connection.as_mut()).await;
            }
            _ = crate::shutdown_begun(&mut shutdown) => {
                connection.as_mut().graceful_shutdown();
                let grace = state.config.limits.shutdown_grace + Duration::from_secs(2);
                let _ = tokio::time::timeout(grace, connection.as_mut()).await;
            }
        }
        if stalled.load(Ordering::Relaxed) {
            tracing::info!(
                "closed a connection whose client read nothing for {} s",
                state.config.limits.write_timeout.as_secs_f64()
            );
            state.metrics.stalled_connection();
        }
        conns
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        conns.closed.notify_waiters();
        state.metrics.connection(-1);
    });
}
