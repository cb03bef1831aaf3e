//! An OpenAI-compatible HTTP server on the rkllm crate: `POST /v1/chat/completions`
//! (streamed or not), `POST /v1/embeddings`, `GET /v1/models`, `GET /health`.
//!
//! The shape of it:
//! * one [`ChatSession`] for the whole server, in a [`FairMutex`], so the rolling prompt
//!   cache carries over from request to request (the runtime runs one inference at a time
//!   anyway);
//! * each request waits for it in turn (first come, first served), at most
//!   [`Config::queue_timeout`]; beyond [`Config::max_queue`] waiters a request gets 429, and
//!   one that waited too long 503, both with `Retry-After`;
//! * the turn runs as a [`ChatStream`](rkllm::chat::ChatStream) that holds the session's guard, polled as an
//!   async `Stream`; the next request gets the session when it is dropped;
//! * a client that goes away drops the stream, which aborts the run without blocking the
//!   executor (the next request's run waits for it).

mod chat;
mod openai;

pub use openai::base64_f32;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use rkllm::chat::{ChatSession, SystemStyle};
use rkllm::wait::FairMutex;
use rkllm::{Model, Runtime};
use serde_json::json;

/// How the server is set up (the example's flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// The `.rkllm` model (a mock model file with `mock`); `None` runs a built-in mock.
    pub model: Option<PathBuf>,
    /// The runtime library, instead of the default search.
    pub lib: Option<PathBuf>,
    /// Gemma 2 `tokenizer.json`: prompts go as token ids, prompt counts are exact.
    pub tokenizer: Option<PathBuf>,
    /// Run on the mock runtime.
    pub mock: bool,
    /// Mock: the replies, in order (the last repeats); empty echoes the user.
    pub mock_replies: Vec<String>,
    /// Mock: seconds per prompt token and per generated token.
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
    /// Directory of the rolling prompt cache; `None` turns it off.
    pub prompt_cache: Option<PathBuf>,
    /// Requests that may wait for the model at once.
    pub max_queue: usize,
    /// How long a request waits for the model.
    pub queue_timeout: Duration,
    /// SSE keep-alive comment interval (sent while a long prefill runs).
    pub keep_alive: Duration,
    /// The model id `/v1/models` lists.
    pub model_name: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            model: None,
            lib: None,
            tokenizer: None,
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
            model_name: "gemma-2".into(),
        }
    }
}

/// What every request shares.
pub struct AppState {
    chat: FairMutex<ChatSession>,
    config: Config,
    #[cfg(feature = "tokenizer")]
    tokenizer: Option<Arc<rkllm::chat::GemmaTokenizer>>,
    created: u64,
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

/// Loads the model and takes its one session.
pub fn load(config: Config) -> Result<Arc<AppState>, Box<dyn std::error::Error>> {
    #[cfg(not(feature = "tokenizer"))]
    if config.tokenizer.is_some() {
        return Err("--tokenizer needs the `tokenizer` feature".into());
    }
    #[cfg(feature = "tokenizer")]
    let tokenizer = match &config.tokenizer {
        Some(path) => Some(Arc::new(rkllm::chat::GemmaTokenizer::from_file(path)?)),
        None => None,
    };
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
    let model = Model::builder(&path)
        .runtime(runtime)
        .max_context_len(config.max_context)
        .max_new_tokens(config.max_new_tokens)
        .build()?;
    let mut chat = ChatSession::new(model.into_session()?);
    if let Some(dir) = &config.prompt_cache {
        // A prefix store: each client conversation keeps its reuse when requests interleave,
        // and a stored system prompt survives restarts.
        chat.enable_prompt_cache(rkllm::chat::PromptCacheConfig::new(dir))?;
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(Arc::new(AppState {
        chat: FairMutex::new(chat, config.max_queue),
        config,
        #[cfg(feature = "tokenizer")]
        tokenizer,
        created,
        #[cfg(feature = "mock")]
        _mock_dir: mock_dir,
    }))
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

/// The server's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/embeddings", post(chat::embeddings))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .with_state(state)
}

async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.config.model_name,
            "object": "model",
            "created": state.created,
            "owned_by": "rkllm",
        }],
    }))
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "waiting": state.chat.waiting() }))
}

/// Binds `host:port` (port 0 picks a free one) and serves until the task is dropped.
/// Returns the address it listens on once it accepts connections.
pub async fn start(
    state: Arc<AppState>,
    host: &str,
    port: u16,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind((host, port)).await?;
    let addr = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, task))
}
