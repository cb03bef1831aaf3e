//! The command line (clap, derive), in the flag vocabulary every example shares.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rkllm::chat::SystemStyle;

use crate::{Config, Limits};

/// An OpenAI-compatible server for a model on the RKLLM runtime: Gemma 2 with its built-in
/// template, or any family with its own (--model-dir, --tokenizer-config).
///
/// Endpoints: POST /v1/chat/completions and POST /v1/completions (streamed or not),
/// POST /v1/embeddings, GET /v1/models, GET /health, GET /metrics.
#[derive(Debug, Parser)]
#[command(name = "serve", version, long_about = None)]
#[command(after_help = "\
Without --model the server runs a built-in mock model (echoing the user, or the --mock-reply \
texts). SIGTERM or SIGINT (Ctrl-C) stops it gracefully: no new connections, queued requests \
get 503, the running reply gets --shutdown-grace seconds to finish.")]
pub struct Args {
    /// .rkllm model, run on the board's librkllmrt.so (with --mock: a mock model file)
    #[arg(long, value_name = "PATH", help_heading = "Model")]
    pub model: Option<PathBuf>,
    /// The runtime library (default: $RKLLM_LIB_PATH, then the system's library search path)
    #[arg(long, value_name = "PATH", help_heading = "Model")]
    pub lib: Option<PathBuf>,
    /// The model's tokenizer.json (Gemma 2's; with --tokenizer-config, any family's): exact
    /// token counts, prompts sent as token ids
    #[arg(long, value_name = "PATH", help_heading = "Model")]
    pub tokenizer: Option<PathBuf>,
    /// The model's tokenizer_config.json: chat with its own chat template (any family)
    /// instead of the built-in Gemma 2 one; prompts go as text unless --tokenizer is given
    #[arg(long, value_name = "PATH", help_heading = "Model")]
    pub tokenizer_config: Option<PathBuf>,
    /// A directory holding the model's tokenizer_config.json and tokenizer.json (the
    /// Hugging Face model's files): --tokenizer-config DIR/tokenizer_config.json, and
    /// --tokenizer DIR/tokenizer.json when that file is there
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "tokenizer_config",
        help_heading = "Model"
    )]
    pub model_dir: Option<PathBuf>,
    /// A control token's text that the model's files do not mark special (ChatGLM3's
    /// <|user|>, ...): with --tokenizer-config or --model-dir, a message holding it is
    /// refused (repeatable)
    #[arg(long, value_name = "TEXT", help_heading = "Model")]
    pub special_token: Vec<String>,
    /// Run on the mock runtime (the default without --model)
    #[arg(long, help_heading = "Model")]
    pub mock: bool,
    /// Mock: the reply of each request, in order (repeatable; the last one repeats); without
    /// it the mock echoes the user's message
    #[arg(long, value_name = "TEXT", help_heading = "Model")]
    pub mock_reply: Vec<String>,
    /// Mock: seconds per prompt token (simulated prefill time)
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 0.0,
        value_parser = parse_seconds,
        allow_negative_numbers = true,
        help_heading = "Model"
    )]
    pub mock_prefill_seconds: f64,
    /// Mock: seconds per generated token (simulated decode time)
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 0.0,
        value_parser = parse_seconds,
        allow_negative_numbers = true,
        help_heading = "Model"
    )]
    pub mock_decode_seconds: f64,
    /// The model id clients name and /v1/models lists
    #[arg(
        long,
        value_name = "NAME",
        default_value = "gemma-2",
        alias = "model-name",
        help_heading = "Model"
    )]
    pub served_model_name: String,

    /// System prompt for requests that bring none
    #[arg(long, value_name = "TEXT", help_heading = "Chat")]
    pub system: Option<String>,
    /// Where the system prompt goes: merge, systemgemma2, turn, strict (no system prompt)
    #[arg(long, value_name = "STYLE", default_value = "merge", value_parser = parse_style, help_heading = "Chat")]
    pub style: SystemStyle,
    /// Context length in tokens, prompt and reply
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Chat")]
    pub max_context: u32,
    /// Reply length when a request sets none, and the most it may ask for
    #[arg(long, value_name = "N", default_value_t = 512, alias = "max-tokens", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Chat")]
    pub max_new_tokens: u32,
    /// Keep conversations' prefill in a prompt cache in DIR (a RAM directory such as
    /// /dev/shm/rkllm-serve spares the board's eMMC)
    #[arg(long, value_name = "DIR", help_heading = "Chat")]
    pub prompt_cache: Option<PathBuf>,

    /// Address to listen on
    #[arg(
        long,
        value_name = "HOST",
        default_value = "127.0.0.1",
        help_heading = "Server"
    )]
    pub host: String,
    /// Port (0 picks a free one)
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 8080,
        help_heading = "Server"
    )]
    pub port: u16,
    /// Requests that may wait for the model; beyond, 429
    #[arg(long, value_name = "N", default_value_t = 16, help_heading = "Server")]
    pub max_queue: usize,
    /// Seconds a request waits for the model; then 503
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 120,
        help_heading = "Server"
    )]
    pub queue_timeout: u64,
    /// Open connections at most; at the cap, the oldest idle connection is closed for a new
    /// one (lowered to fit the open-files limit)
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections, value_parser = clap::value_parser!(usize), help_heading = "Limits")]
    pub max_connections: usize,
    /// Seconds a connection may take to send a request head, and may stay idle between
    /// requests
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().header_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub header_timeout: u64,
    /// Seconds a client may take to send a request body
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().body_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub body_timeout: u64,
    /// Seconds a response may wait for the client to read anything; then the connection is
    /// closed
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().write_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub write_timeout: u64,
    /// Largest request body in bytes; beyond, 413
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_body_bytes, help_heading = "Limits")]
    pub max_body_bytes: usize,
    /// Most tokens one embeddings request may bring, all inputs together
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_embedding_tokens, help_heading = "Limits")]
    pub max_embedding_tokens: usize,
    /// On SIGTERM/SIGINT, seconds the running reply may take to finish before it is ended
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().shutdown_grace.as_secs(), help_heading = "Limits")]
    pub shutdown_grace: u64,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds (0 or more)")),
    }
}

fn parse_style(s: &str) -> Result<SystemStyle, String> {
    s.parse::<SystemStyle>().map_err(|e| e.to_string())
}

impl Args {
    /// The server's configuration from the flags.
    pub fn config(&self) -> Config {
        let (tokenizer_config, tokenizer) = match &self.model_dir {
            Some(dir) => {
                let json = dir.join("tokenizer.json");
                let tokenizer = self
                    .tokenizer
                    .clone()
                    .or_else(|| json.exists().then_some(json));
                (Some(dir.join("tokenizer_config.json")), tokenizer)
            }
            None => (self.tokenizer_config.clone(), self.tokenizer.clone()),
        };
        Config {
            model: self.model.clone(),
            lib: self.lib.clone(),
            tokenizer,
            tokenizer_config,
            special_tokens: self.special_token.clone(),
            mock: self.mock,
            mock_replies: self.mock_reply.clone(),
            mock_prefill_seconds: self.mock_prefill_seconds,
            mock_decode_seconds: self.mock_decode_seconds,
            system: self.system.clone(),
            style: self.style,
            max_context: self.max_context,
            max_new_tokens: self.max_new_tokens,
            prompt_cache: self.prompt_cache.clone(),
            max_queue: self.max_queue,
            queue_timeout: Duration::from_secs(self.queue_timeout),
            served_model_name: self.served_model_name.clone(),
            limits: Limits {
                max_connections: self.max_connections,
                header_timeout: Duration::from_secs(self.header_timeout),
                body_timeout: Duration::from_secs(self.body_timeout),
                write_timeout: Duration::from_secs(self.write_timeout),
                max_body_bytes: self.max_body_bytes,
                max_embedding_tokens: self.max_embedding_tokens,
                shutdown_grace: Duration::from_secs(self.shutdown_grace),
            },
            ..Config::default()
        }
    }
}

/// An error and its causes, `message: cause: cause`.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The example's `main`: parses the flags, loads the model, serves until SIGTERM or SIGINT.
pub fn main() -> ExitCode {
    let args = Args::parse();
    crate::log::init();
    let config = args.config();
    let state = match crate::load(config) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("error: {}", with_causes(&*e));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let server = match crate::Server::bind(state, &args.host, args.port).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("error: listening on {}:{}: {e}", args.host, args.port);
                return ExitCode::FAILURE;
            }
        };
        let addr: SocketAddr = server.local_addr();
        println!("listening on http://{addr}");
        let shutdown = server.shutdown_handle();
        tokio::spawn(async move {
            crate::server::termination_signal().await;
            shutdown.shut_down();
        });
        match server.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // Tasks still holding the model (a connection the grace period did not end) are dropped
    // here, so the model, its prompt cache and the built-in mock's file go before the exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}
