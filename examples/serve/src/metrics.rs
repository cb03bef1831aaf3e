//! `GET /metrics`: Prometheus' text format (OpenMetrics), built on `prometheus-client`.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rkllm::Timings;

use crate::AppState;

/// Where the RK3588's NPU driver reports its load (debugfs; readable as root).
const NPU_LOAD: &str = "/sys/kernel/debug/rknpu/load";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    path: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoreLabels {
    core: String,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    queue_depth: Gauge,
    queue_wait: Histogram,
    first_token: Histogram,
    prompt_tokens: Counter,
    generated_tokens: Counter,
    prefill_rate: Gauge<f64, AtomicU64>,
    decode_rate: Gauge<f64, AtomicU64>,
    connections: Gauge,
    stalled_connections: Counter,
    npu_load: Family<CoreLabels, Gauge<f64, AtomicU64>>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rkllm");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, path and status",
            requests.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Requests waiting for the model",
            queue_depth.clone(),
        );
        let queue_wait = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        registry.register(
            "queue_wait_seconds",
            "How long requests waited for the model",
            queue_wait.clone(),
        );
        let first_token = Histogram::new(exponential_buckets(0.01, 2.5, 12));
        registry.register(
            "time_to_first_token_seconds",
            "From a request's arrival to its first token",
            first_token.clone(),
        );
        let prompt_tokens = Counter::default();
        registry.register(
            "prompt_tokens",
            "Prompt tokens prefilled (estimated without a tokenizer)",
            prompt_tokens.clone(),
        );
        let generated_tokens = Counter::default();
        registry.register(
            "generated_tokens",
            "Tokens generated",
            generated_tokens.clone(),
        );
        let prefill_rate = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "prefill_tokens_per_second",
            "Prefill rate of the last run that reported one",
            prefill_rate.clone(),
        );
        let decode_rate = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "decode_tokens_per_second",
            "Decode rate of the last run that reported one",
            decode_rate.clone(),
        );
        let stalled_connections = Counter::default();
        registry.register(
            "stalled_connections",
            "Connections closed because the client read nothing for the write timeout",
            stalled_connections.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "open_connections",
            "Open HTTP connections",
            connections.clone(),
        );
        let npu_load = Family::<CoreLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "npu_load_ratio",
            "NPU load per core (0 to 1) from the rknpu driver, where readable",
            npu_load.clone(),
        );
        Metrics {
            registry,
            requests,
            queue_depth,
            queue_wait,
            first_token,
            prompt_tokens,
            generated_tokens,
            prefill_rate,
            decode_rate,
            connections,
            stalled_connections,
            npu_load,
        }
    }

    /// A request answered.
    pub fn record_request(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        first_token: Option<Duration>,
    ) {
        // Paths outside the routes are one label, so scanners cannot grow the family.
        let path = match path {
            "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings"
            | "/v1/models"
            | "/health"
            | "/metrics" => path,
            _ => "other",
        };
        let method = match *method {
            Method::GET | Method::POST | Method::HEAD | Method::PUT | Method::DELETE => {
                method.as_str()
            }
            _ => "other",
        };
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                path: path.to_owned(),
                status: status.as_u16(),
            })
            .inc();
        if let Some(t) = first_token {
            self.first_token.observe(t.as_secs_f64());
        }
    }

    /// A request's wait for the model.
    pub fn record_queue_wait(&self, wait: Duration) {
        self.queue_wait.observe(wait.as_secs_f64());
    }

    /// A run ended (or was ended).
    pub fn record_run(&self, timings: &Timings) {
        if let Some(n) = timings.prompt_tokens {
            self.prompt_tokens.inc_by(n as u64);
        }
        self.generated_tokens
            .inc_by(timings.generated_tokens as u64);
        if let Some(rate) = timings.prefill_tokens_per_second() {
            self.prefill_rate.set(rate);
        }
        if let Some(rate) = timings.decode_tokens_per_second() {
            self.decode_rate.set(rate);
        }
    }

    /// Prompt tokens of an embeddings request.
    pub fn record_prompt_tokens(&self, n: usize) {
        self.prompt_tokens.inc_by(n as u64);
    }

    /// A connection opened (`+1`) or closed (`-1`).
    pub fn connection(&self, delta: i64) {
        self.connections.inc_by(delta);
    }

    /// Counts a connection closed for its write timeout.
    pub fn stalled_connection(&self) {
        self.stalled_connections.inc();
    }
}

/// Parses the rknpu driver's load line: `NPU load:  Core0: 12%, Core1:  0%, Core2:  0%,`
/// (or `NPU load: 12%` on one-core drivers).
fn parse_npu_load(text: &str) -> Vec<(String, f64)> {
    let Some(rest) = text.trim().strip_prefix("NPU load:") else {
        return Vec::new();
    };
    let mut loads = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (core, value) = match part.split_once(':') {
            Some((name, value)) => (
                name.trim().trim_start_matches("Core").to_owned(),
                value.trim(),
            ),
            None => ("0".to_owned(), part),
        };
        if let Ok(percent) = value.trim_end_matches('%').trim().parse::<f64>() {
            loads.push((core, percent / 100.0));
        }
    }
    loads
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.metrics;
    m.queue_depth.set(state.chat.waiting() as i64);
    let load = tokio::task::spawn_blocking(|| std::fs::read_to_string(NPU_LOAD)).await;
    if let Ok(Ok(text)) = load {
        for (core, load) in parse_npu_load(&text) {
            m.npu_load.get_or_create(&CoreLabels { core }).set(load);
        }
    }
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &m.registry) {
        return crate::openai::ApiError::server(format!("encoding the metrics: {e}"))
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_npu_load;

    #[test]
    fn the_npu_load_line_parses_per_core() {
        assert_eq!(
            parse_npu_load("NPU load:  Core0: 12%, Core1:  0%, Core2: 100%,\n"),
            vec![("0".into(), 0.12), ("1".into(), 0.0), ("2".into(), 1.0)]
        );
        assert_eq!(parse_npu_load("NPU load: 40%"), vec![("0".into(), 0.4)]);
        assert!(parse_npu_load("garbage").is_empty());
    }
}
