//! One log line per request (through `tracing`), written when its response body ends, and
//! the request counters of `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::body::GuardedBody;
use crate::AppState;

/// Sets up the log output: `tracing` lines on stderr, the library's `log` records included.
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .try_init();
}

/// What a handler learns about its request, for the log line and the metrics.
#[derive(Debug)]
pub struct RequestStats {
    started: Instant,
    inner: Mutex<Figures>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    queue_wait: Option<Duration>,
    first_token: Option<Duration>,
    tokens_in: Option<usize>,
    tokens_out: Option<usize>,
}

impl RequestStats {
    fn new() -> RequestStats {
        RequestStats {
            started: Instant::now(),
            inner: Mutex::new(Figures::default()),
        }
    }

    fn figures(&self) -> Figures {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Figures)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The request waited `wait` for the model.
    pub fn queue_wait(&self, wait: Duration) {
        self.update(|s| s.queue_wait = Some(wait));
    }

    /// The first token arrived now.
    pub fn first_token(&self) {
        let since = self.started.elapsed();
        self.update(|s| s.first_token = Some(since));
    }

    /// Prompt tokens (when known) and generated tokens.
    pub fn tokens(&self, tokens_in: Option<usize>, tokens_out: usize) {
        self.update(|s| {
            s.tokens_in = tokens_in;
            s.tokens_out = Some(tokens_out);
        });
    }

    /// Prompt tokens of a request that generates nothing (embeddings).
    pub fn tokens_in(&self, tokens_in: usize) {
        self.update(|s| s.tokens_in = Some(tokens_in));
    }
}

/// The middleware: gives each request its [`RequestStats`], and logs and counts it when its
/// response body ends (for a stream, when the stream does).
pub async fn log_request(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let stats = Arc::new(RequestStats::new());
    request.extensions_mut().insert(Arc::clone(&stats));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let (parts, body) = response.into_parts();
    let line = LogLine {
        state,
        method,
        path,
        status,
        stats,
    };
    Response::from_parts(parts, GuardedBody::wrap(body, line))
}

struct LogLine {
    state: Arc<AppState>,
    method: Method,
    path: String,
    status: StatusCode,
    stats: Arc<RequestStats>,
}

fn ms(d: Option<Duration>) -> tracing::field::DisplayValue<String> {
    tracing::field::display(
        d.map_or_else(|| "-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
    )
}

fn count(n: Option<usize>) -> tracing::field::DisplayValue<String> {
    tracing::field::display(n.map_or_else(|| "-".into(), |n| n.to_string()))
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let f = self.stats.figures();
        let duration = self.stats.started.elapsed();
        tracing::info!(
            target: "rkllm_serve::request",
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            queue_wait_ms = ms(f.queue_wait),
            first_token_ms = ms(f.first_token),
            tokens_in = count(f.tokens_in),
            tokens_out = count(f.tokens_out),
            duration_ms = ms(Some(duration)),
            "request"
        );
        self.state
            .metrics
            .record_request(&self.method, &self.path, self.status, f.first_token);
    }
}
