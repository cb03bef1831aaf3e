//! An OpenAI-compatible server for a Gemma 2 model on the RK3588 NPU.
//!
//! ```text
//! cargo run --release --example serve -- --mock            # the mock runtime, echoing
//! cargo run --release --example serve -- --model gemma-2-2b-it-w8a8.rkllm \
//!     --tokenizer tokenizer.json --prompt-cache /tmp/rkllm-serve --host 0.0.0.0
//! curl http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \
//!     -d '{"model":"gemma-2","messages":[{"role":"user","content":"Hello"}],"stream":true}'
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rkllm::chat::SystemStyle;
use rkllm_serve::Config;

const USAGE: &str = "\
An OpenAI-compatible server for a Gemma 2 model on the RKLLM runtime.

Usage: serve [OPTIONS]

Endpoints: POST /v1/chat/completions (stream or not), POST /v1/embeddings, GET /v1/models,
GET /health.

Model:
  --model PATH          .rkllm model, run on the board's librkllmrt.so
  --lib PATH            the runtime library (default: $RKLLM_LIB_PATH, then the system's
                        library search path)
  --tokenizer PATH      Gemma 2 tokenizer.json: exact token counts, prompts sent as token ids
  --mock                run on the mock runtime (the default without --model); with --model,
                        PATH is a mock model file
  --mock-reply TEXT     mock: the reply of each request, in order (repeatable; the last one
                        repeats); without it the mock echoes the user's message
  --model-name NAME     the model id /v1/models lists (default gemma-2)

Chat:
  --system TEXT         system prompt for requests that bring none
  --style STYLE         where the system prompt goes: merge (default), systemgemma2, turn,
                        strict (no system prompt allowed)
  --max-context N       context length in tokens, prompt and reply (default 4096)
  --max-tokens N        reply length when a request sets none, and the most it may ask for
                        (default 512)
  --prompt-cache DIR    keep the conversation's prefill in a rolling prompt cache in DIR

Server:
  --host HOST           address to listen on (default 127.0.0.1)
  --port PORT           port (default 8080; 0 picks a free one)
  --max-queue N         requests that may wait for the model (default 16); beyond, 429
  --queue-timeout SECS  how long a request waits for the model (default 120); then 503
  -h, --help            this help";

struct Args {
    config: Config,
    host: String,
    port: u16,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        config: Config::default(),
        host: "127.0.0.1".into(),
        port: 8080,
    };
    let c = &mut parsed.config;
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        fn number<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{name}: `{v}` is not a valid number"))
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--model" => c.model = Some(PathBuf::from(value("--model")?)),
            "--lib" => c.lib = Some(PathBuf::from(value("--lib")?)),
            "--tokenizer" => c.tokenizer = Some(PathBuf::from(value("--tokenizer")?)),
            "--mock" => c.mock = true,
            "--mock-reply" => c.mock_replies.push(value("--mock-reply")?),
            "--model-name" => c.model_name = value("--model-name")?,
            "--system" => c.system = Some(value("--system")?),
            "--style" => {
                let v = value("--style")?;
                c.style = v
                    .parse::<SystemStyle>()
                    .map_err(|e| format!("--style: {e}"))?;
            }
            "--max-context" => c.max_context = number("--max-context", value("--max-context")?)?,
            "--max-tokens" => c.max_new_tokens = number("--max-tokens", value("--max-tokens")?)?,
            "--prompt-cache" => c.prompt_cache = Some(PathBuf::from(value("--prompt-cache")?)),
            "--host" => parsed.host = value("--host")?,
            "--port" => parsed.port = number("--port", value("--port")?)?,
            "--max-queue" => c.max_queue = number("--max-queue", value("--max-queue")?)?,
            "--queue-timeout" => {
                let secs: u64 = number("--queue-timeout", value("--queue-timeout")?)?;
                c.queue_timeout = Duration::from_secs(secs);
            }
            other => return Err(format!("unknown flag `{other}` (see --help)")),
        }
    }
    Ok(Some(parsed))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match rkllm_serve::load(args.config) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("error: {e}");
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
    runtime.block_on(async move {
        let (addr, server) = match rkllm_serve::start(state, &args.host, args.port).await {
            Ok(started) => started,
            Err(e) => {
                eprintln!("error: listening on {}:{}: {e}", args.host, args.port);
                return ExitCode::FAILURE;
            }
        };
        println!("listening on http://{addr}");
        tokio::select! {
            result = server => match result {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        }
    })
}
