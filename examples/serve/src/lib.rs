//! An OpenAI-compatible HTTP server on the rkllm crate: `POST /v1/chat/completions` and
//! `POST /v1/completions` (streamed or not), `POST /v1/embeddings`, `GET /v1/models`,
//! `GET /health`, `GET /metrics`.
//!
//! The shape of it:
//! * one [`ChatSession`] for the whole server, in a [`FairMutex`], so the rolling prompt
//!   cache carries over from request to request (the runtime runs one inference at a time
//!   anyway);
//! * every check that can fail (parameters, token ids against the vocabulary, lengths against
//!   the context) runs before a request queues;
//! * each request waits for the session in turn (first come, first served), at most
//!   [`Config::queue_timeout`]; beyond [`Config::max_queue`] waiters a request gets 429, and
//!   one that waited too long 503, both with `Retry-After`;
//! * the turn runs as an async stream that holds the session's guard (all contact with the
//!   library's stream types is in `turn.rs`); the next request gets the session when it is
//!   dropped, and a client that goes away drops it, which aborts the run without blocking
//!   the executor (the next request's run waits for it);
//! * connections are bounded (`server.rs`): a head timeout that also closes idle keep-alive
//!   connections, a cap on open connections at which the oldest idle one makes room, and a
//!   graceful shutdown on SIGTERM/SIGINT.

mod body;
mod chat;
pub mod cli;
mod completions;
mod embed;
#[cfg(feature = "template")]
mod hf;
mod log;
mod metrics;
mod openai;
mod reply;
pub mod server;
mod stall;
mod turn;

pub use openai::base64_f32;
pub use server::{start, Server, ShutdownHandle};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rkllm::chat::{ChatSession, SystemStyle};
use rkllm::wait::FairMutex;
use rkllm::{Model, Runtime};
use serde_json::json;
use tokio::sync::watch;

use crate::openai::ApiError;

/// OpenAI's limit on the inputs of one embeddings request.
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// How the server bounds connections and requests.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most (lowered to fit the process's open-files limit). At the cap,
    /// a new connection closes the oldest one that has no request in flight.
    pub max_connections: usize,
    /// How long a connection may take to send a request head, counted from when the server
    /// starts waiting for it: on a new connection and between keep-alive requests alike, so
    /// it also closes idle connections.
    pub header_timeout: Duration,
    /// How long a client may take to send a request body (then 408).
    pub body_timeout: Duration,
    /// How long a response may wait for the client to read anything, before the connection
    /// is closed (a client that stops reading mid-stream).
    pub write_timeout: Duration,
    /// The largest request body (then 413).
    pub max_body_bytes: usize,
    /// Tokens one embeddings request may bring, all inputs together.
    pub max_embedding_tokens: usize,
    /// On shutdown, how long the running reply may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_body_bytes: 4 * 1024 * 1024,
            max_embedding_tokens: 65_536,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// How the server is set up (the example's flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// The `.rkllm` model (a mock model file with `mock`); `None` runs a built-in mock.
    pub model: Option<PathBuf>,
    /// The runtime library, instead of the default search.
    pub lib: Option<PathBuf>,
    /// The model's `tokenizer.json` (Gemma 2's, or with `tokenizer_config` any family's):
    /// prompts go as token ids, prompt counts are exact.
    pub tokenizer: Option<PathBuf>,
    /// The model's `tokenizer_config.json`: chat with its own template (feature
    /// `template`) instead of the built-in Gemma 2 one.
    pub tokenizer_config: Option<PathBuf>,
    /// Control-token texts the model's files do not mark special, added to the template's
    /// (with `tokenizer_config`): a message holding one is refused, in text and token mode.
    pub special_tokens: Vec<String>,
    /// Run on the mock runtime.
    pub mock: bool,
    /// Mock: the replies, in order (the last repeats); empty echoes the user.
    pub mock_replies: Vec<String>,
    /// Mock: seconds per prompt token.
    pub mock_prefill_seconds: f64,
    /// Mock: seconds per generated token.
    pub mock_decode_seconds: f64,
    /// The system prompt used when a request has none.
    pub system: Option<String>,
    /// Where the system prompt goes in Gemma's template.
    pub style: SystemStyle,
    /// Context length, prompt and reply.
    pub max_context: u32,
    /// Reply length when a request sets none (and the most it may ask for).
    pub max_new_tokens: u32,
    /// Directory of the prompt cache; `None` turns it off.
    pub prompt_cache: Option<PathBuf>,
    /// Requests that may wait for the model at once.
    pub max_queue: usize,
    /// How long a request waits for the model.
    pub queue_timeout: Duration,
    /// SSE keep-alive comment interval (sent while a long prefill runs).
    pub keep_alive: Duration,
    /// The model id clients name and `/v1/models` lists.
    pub served_model_name: String,
    /// Connection and request bounds.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            model: None,
            lib: None,
            tokenizer: None,
            tokenizer_config: None,
            special_tokens: Vec::new(),
            mock: false,
            mock_replies: Vec::new(),
            mock_prefill_seconds: 0.0,
            mock_decode_seconds: 0.0,
            system: None,
            style: SystemStyle::Merge,
            max_context: 4096,
            max_new_tokens: 512,
            prompt_cache: None,
            max_queue: 16,
            queue_timeout: Duration::from_secs(120),
            keep_alive: Duration::from_secs(10),
            served_model_name: "gemma-2".into(),
            limits: Limits::default(),
        }
    }
}

/// What every request shares.
pub struct AppState {
    chat: FairMutex<ChatSession>,
    config: Config,
    #[cfg(feature = "tokenizer")]
    tokenizer: Option<Arc<rkllm::chat::GemmaTokenizer>>,
    /// The model's own chat template, when configured (else Gemma 2's built-in one).
    #[cfg(feature = "template")]
    hf: Option<hf::HfChat>,
    /// The model's vocabulary size: token ids are checked against it before they queue.
    /// `None` when it is not known (a family's template without its `tokenizer.json`):
    /// token-id input is then refused, since an id past the vocabulary would make the
    /// runtime read past its embedding table.
    vocab_size: Option<u32>,
    /// The embedding size, measured at load (`None` when the runtime could not tell).
    embedding_size: Option<usize>,
    created: u64,
    fingerprint: String,
    metrics: metrics::Metrics,
    /// `None` while serving; on shutdown, when the running reply's grace period ends.
    shutdown: watch::Sender<Option<Instant>>,
    /// Keeps the built-in mock model's file until the server is gone.
    #[cfg(feature = "mock")]
    _mock_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Whether a shutdown has begun.
    fn shutting_down(&self) -> bool {
        self.shutdown.borrow().is_some()
    }

    /// Resolves when a shutdown begins.
    async fn shutdown_started(&self) {
        shutdown_begun(&mut self.shutdown.subscribe()).await;
    }

    /// Resolves when a shutdown's grace period for running work is over.
    async fn grace_expired(&self) {
        let mut rx = self.shutdown.subscribe();
        let deadline = rx.wait_for(Option::is_some).await.ok().and_then(|d| *d);
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
            None => std::future::pending().await,
        }
    }

    /// Whether the grace period is over (for blocking loops).
    fn grace_over(&self) -> bool {
        self.shutdown.borrow().is_some_and(|d| Instant::now() >= d)
    }

    /// An unknown `model` name gets 404 `model_not_found`, as OpenAI answers.
    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(name) if name != self.config.served_model_name => Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!(
                    "The model `{name}` does not exist; this server serves `{}`",
                    self.config.served_model_name
                ),
                "invalid_request_error",
            )
            .with_param("model")
            .with_code("model_not_found")),
            _ => Ok(()),
        }
    }
}

/// Resolves when `rx` says a shutdown has begun.
async fn shutdown_begun(rx: &mut watch::Receiver<Option<Instant>>) {
    let _ = rx.wait_for(Option::is_some).await.map(|_| ());
}

/// Loads the model and takes its one session.
pub fn load(config: Config) -> Result<Arc<AppState>, Box<dyn std::error::Error>> {
    #[cfg(not(feature = "tokenizer"))]
    if config.tokenizer.is_some() {
        return Err("--tokenizer needs the `tokenizer` feature".into());
    }
    #[cfg(not(feature = "template"))]
    if config.tokenizer_config.is_some() {
        return Err("--tokenizer-config and --model-dir need the `template` feature".into());
    }
    if config.tokenizer_config.is_none() && !config.special_tokens.is_empty() {
        return Err(
            "--special-token needs the model's template (--tokenizer-config or --model-dir); \
             the built-in Gemma 2 template knows its own"
                .into(),
        );
    }
    #[cfg(feature = "template")]
    let hf = match &config.tokenizer_config {
        Some(path) => Some(hf::HfChat::load(
            path,
            config.tokenizer.as_deref(),
            &config.special_tokens,
        )?),
        None => None,
    };
    #[cfg(feature = "template")]
    let gemma_tokenizer = hf.is_none();
    #[cfg(not(feature = "template"))]
    let gemma_tokenizer = true;
    #[cfg(feature = "tokenizer")]
    let tokenizer = match &config.tokenizer {
        Some(path) if gemma_tokenizer => {
            Some(Arc::new(rkllm::chat::GemmaTokenizer::from_file(path)?))
        }
        _ => None,
    };
    #[cfg(not(feature = "tokenizer"))]
    let _ = gemma_tokenizer;
    let use_mock = config.mock || config.model.is_none();
    #[cfg(feature = "mock")]
    let mut mock_dir = None;
    let (path, runtime) = if use_mock {
        #[cfg(feature = "mock")]
        {
            match &config.model {
                Some(path) => (path.clone(), Runtime::mock()),
                None => {
                    let (dir, path) = write_mock_model(&config)?;
                    mock_dir = Some(dir);
                    (path, Runtime::mock())
                }
            }
        }
        #[cfg(not(feature = "mock"))]
        return Err("no --model given, and the mock runtime needs the `mock` feature".into());
    } else {
        let runtime = match &config.lib {
            Some(lib) => Runtime::load_from(lib)?,
            None => Runtime::load()?,
        };
        (config.model.clone().expect("checked above"), runtime)
    };
    // Gemma 2's, with the built-in template; a family's from its tokenizer.json, else unknown.
    #[cfg(feature = "template")]
    let vocab_size = match &hf {
        Some(hf) => hf.vocab_size(),
        None => Some(rkllm::gemma::VOCAB_SIZE),
    };
    #[cfg(not(feature = "template"))]
    let vocab_size = Some(rkllm::gemma::VOCAB_SIZE);
    let mut builder = Model::builder(&path)
        .runtime(runtime)
        .max_context_len(config.max_context)
        .max_new_tokens(config.max_new_tokens);
    if let Some(size) = vocab_size {
        builder = builder.vocab_size(size);
    }
    let model = builder.build()?;
    let mut session = model.into_session()?;
    // Measured once (a one-token run), so `dimensions` is checked before a request queues.
    let embedding_size = session.embedding_size().ok();
    let mut chat = ChatSession::new(session);
    if let Some(dir) = &config.prompt_cache {
        // A prefix store: each client conversation keeps its reuse when requests interleave,
        // and a stored system prompt survives restarts. A RAM directory (/dev/shm) is what
        // the README suggests on a board, to spare its eMMC: allowed, with a warning, since
        // the files then take memory.
        let mut cache = rkllm::chat::PromptCacheConfig::new(dir);
        if on_ram(dir) {
            tracing::warn!(
                dir = %dir.display(),
                "the prompt cache is in RAM (tmpfs): its files take memory and go at reboot"
            );
            cache = cache.allow_tmpfs(true);
        }
        chat.enable_prompt_cache(cache)?;
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let fingerprint = fingerprint(&path, &config);
    let (shutdown, _) = watch::channel(None);
    Ok(Arc::new(AppState {
        chat: FairMutex::new(chat, config.max_queue),
        config,
        #[cfg(feature = "tokenizer")]
        tokenizer,
        #[cfg(feature = "template")]
        hf,
        vocab_size,
        embedding_size,
        created,
        fingerprint,
        metrics: metrics::Metrics::new(),
        shutdown,
        #[cfg(feature = "mock")]
        _mock_dir: mock_dir,
    }))
}

/// Whether `dir` (or, when it does not exist yet, its nearest existing parent) is on a RAM
/// file system. Read from /proc/self/mountinfo: the longest mount point that contains it.
fn on_ram(dir: &std::path::Path) -> bool {
    let mut path = dir.to_path_buf();
    if path.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            path = cwd.join(path);
        }
    }
    let mut existing = path.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    let resolved = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let mut best: Option<(usize, bool)> = None;
    for line in mounts.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(dash)) = (fields.get(4), fields.iter().position(|f| *f == "-"))
        else {
            continue;
        };
        let Some(fstype) = fields.get(dash + 1) else {
            continue;
        };
        let point = point.replace("\\040", " ");
        if resolved.starts_with(&point) && best.is_none_or(|(len, _)| point.len() >= len) {
            best = Some((point.len(), matches!(*fstype, "tmpfs" | "ramfs")));
        }
    }
    best.is_some_and(|(_, ram)| ram)
}

/// `system_fingerprint`: names the model file and the settings that shape answers.
fn fingerprint(path: &std::path::Path, config: &Config) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    if let Ok(meta) = std::fs::metadata(path) {
        meta.len().hash(&mut h);
    }
    config.max_context.hash(&mut h);
    config.system.hash(&mut h);
    format!("{:?}", config.style).hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("fp_{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// A mock model that echoes the user (or answers the configured replies).
#[cfg(feature = "mock")]
fn write_mock_model(
    config: &Config,
) -> Result<(tempfile::TempDir, PathBuf), Box<dyn std::error::Error>> {
    use rkllm::mock::{MockModel, Timing};
    let mut mock = MockModel::new().name("serve-example-mock").embed_dim(64);
    mock = if config.mock_replies.is_empty() {
        mock.echo()
    } else {
        mock.turns(config.mock_replies.clone())
    };
    mock = mock.timing(Timing {
        prefill_seconds_per_token: config.mock_prefill_seconds,
        decode_seconds_per_token: config.mock_decode_seconds,
    });
    if let Some(tokenizer) = &config.tokenizer {
        // In token mode the mock decodes the ids it receives with the same vocabulary.
        mock = mock.tokenizer_json(std::fs::canonicalize(tokenizer)?);
    }
    let dir = tempfile::Builder::new().prefix("rkllm-serve-").tempdir()?;
    let path = mock.write_to(dir.path().join("mock.rkllm"))?;
    Ok((dir, path))
}

/// The server's routes: every answer, errors included, in OpenAI's shape.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(embed::embeddings))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            log::log_request,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
        "invalid_request_error",
    )
    .with_code("not_found")
    .into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", method, uri.path()),
        "invalid_request_error",
    )
    .with_code("method_not_allowed")
    .into_response()
}

async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.config.served_model_name,
            "object": "model",
            "created": state.created,
            "owned_by": "rkllm",
        }],
    }))
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let status = if state.shutting_down() {
        "shutting_down"
    } else {
        "ok"
    };
    Json(json!({ "status": status, "waiting": state.chat.waiting() })).into_response()
}
