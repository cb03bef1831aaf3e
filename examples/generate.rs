//! One prompt, one streamed reply, then a stats line.
//!
//! ```text
//! cargo run --example generate -- --prompt "Why is the sky blue?"        # the mock runtime
//! echo "Why is the sky blue?" | cargo run --release --example generate -- \
//!     --model gemma-2-2b-it-w8a8.rkllm --tokenizer tokenizer.json
//! cargo run --example generate -- --raw --prompt "<start_of_turn>user ..."
//! ```
//!
//! The prompt is formatted as one Gemma 2 user turn (token ids with `--tokenizer`), or sent
//! as is with `--raw`. The reply goes to stdout, the stats line to stderr.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
#[cfg(feature = "tokenizer")]
use std::sync::Arc;

use rkllm::chat::{Conversation, SystemStyle};
use rkllm::{GenerateOptions, Model, Runtime, Timings, Token};

const USAGE: &str = "\
Generates one reply to a prompt on the RKLLM runtime, streaming it to stdout.

Usage: generate [OPTIONS] [--prompt TEXT]

  --prompt TEXT         the prompt (default: read from stdin)
  --system TEXT         system prompt (merged into the user turn, as Gemma 2 expects)
  --raw                 send the prompt as is, without the Gemma 2 chat format
  --model PATH          .rkllm model, run on the board's librkllmrt.so
  --lib PATH            the runtime library (default: $RKLLM_LIB_PATH, then the system's
                        library search path)
  --tokenizer PATH      Gemma 2 tokenizer.json: the prompt is sent as token ids
  --mock                run on the mock runtime (the default without --model); with --model,
                        PATH is a mock model file. The mock echoes the prompt.
  --fast                mock: no simulated prefill and decode time (also the case when stdout
                        is not a terminal)
  --max-context N       context length in tokens (default 4096)
  --max-new-tokens N    reply length limit in tokens (default 512)
  -h, --help            this help";

/// How much faster than an RK3588 the mock runs when paced.
#[cfg(feature = "mock")]
const MOCK_SPEEDUP: f64 = 2.0;

struct Args {
    prompt: Option<String>,
    system: Option<String>,
    raw: bool,
    model: Option<PathBuf>,
    lib: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    mock: bool,
    fast: bool,
    max_context: u32,
    max_new_tokens: u32,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        prompt: None,
        system: None,
        raw: false,
        model: None,
        lib: None,
        tokenizer: None,
        mock: false,
        fast: false,
        max_context: 4096,
        max_new_tokens: 512,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--prompt" => args.prompt = Some(value("--prompt")?),
            "--system" => args.system = Some(value("--system")?),
            "--raw" => args.raw = true,
            "--model" => args.model = Some(value("--model")?.into()),
            "--lib" => args.lib = Some(value("--lib")?.into()),
            "--tokenizer" => args.tokenizer = Some(value("--tokenizer")?.into()),
            "--mock" => args.mock = true,
            "--fast" => args.fast = true,
            "--max-context" => args.max_context = parse_count("--max-context", value(&arg)?)?,
            "--max-new-tokens" => {
                args.max_new_tokens = parse_count("--max-new-tokens", value(&arg)?)?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.raw && (args.system.is_some() || args.tokenizer.is_some()) {
        return Err("--raw sends the prompt as is: it takes no --system or --tokenizer".into());
    }
    Ok(Some(args))
}

fn parse_count(name: &str, s: String) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name} takes a positive number, not {s:?}")),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\nRun with --help for the options.");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => {
            let mut text = String::new();
            io::stdin().read_to_string(&mut text)?;
            text.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if prompt.trim().is_empty() {
        return Err("the prompt is empty (give --prompt TEXT or pipe it on stdin)".into());
    }

    let (model, _mock_dir) = load_model(&args)?;
    let mut session = model.session()?;
    let mut stdout = io::stdout().lock();
    let timings = if args.raw {
        // Text as is: the runtime tokenizes it; no chat format, no stop token but its own.
        let mut stream = session.generate(prompt, &GenerateOptions::new())?;
        stream_to(&mut stdout, stream.by_ref())?;
        stream.timings()
    } else {
        // One user turn: `Session::chat` formats it for Gemma 2 and stops at <end_of_turn>.
        let mut chat = Conversation::new(SystemStyle::Merge);
        #[cfg(feature = "tokenizer")]
        if let Some(path) = &args.tokenizer {
            let tokenizer = rkllm::chat::GemmaTokenizer::from_file(path)?;
            chat = chat.with_tokenizer(Arc::new(tokenizer));
        }
        #[cfg(not(feature = "tokenizer"))]
        if args.tokenizer.is_some() {
            return Err("--tokenizer needs the `tokenizer` feature".into());
        }
        if let Some(system) = &args.system {
            chat.set_system(system.clone());
        }
        let mut stream = session.chat(&mut chat, prompt, &GenerateOptions::new())?;
        stream_to(&mut stdout, stream.by_ref())?;
        stream.timings()
    };
    eprintln!("{}", stats_line(&timings));
    Ok(())
}

/// Writes each token's text as it arrives, flushing so it shows at once.
fn stream_to(
    out: &mut impl Write,
    tokens: impl Iterator<Item = rkllm::Result<Token>>,
) -> Result<(), Box<dyn std::error::Error>> {
    for token in tokens {
        write!(out, "{}", token?.text)?;
        out.flush()?;
    }
    writeln!(out)?;
    Ok(())
}

/// `[12 tokens, first token 123.4 ms, 19.2 tokens/s, total 0.75 s]`
fn stats_line(t: &Timings) -> String {
    let mut parts = vec![format!("{} tokens", t.generated_tokens)];
    if let Some(ttft) = t.time_to_first_token {
        parts.push(format!("first token {:.1} ms", ttft.as_secs_f64() * 1000.0));
    }
    if let Some(rate) = t.decode_tokens_per_second() {
        parts.push(format!("{rate:.1} tokens/s"));
    }
    if let Some(n) = t.prompt_tokens {
        parts.push(format!("prompt {n} tokens"));
    }
    parts.push(format!("total {:.2} s", t.total.as_secs_f64()));
    format!("[{}]", parts.join(", "))
}

fn load_model(
    args: &Args,
) -> Result<(Model, Option<tempfile::TempDir>), Box<dyn std::error::Error>> {
    let (path, runtime, mock_dir) = if args.mock || args.model.is_none() {
        #[cfg(feature = "mock")]
        {
            match &args.model {
                Some(path) => (path.clone(), Runtime::mock(), None),
                None => {
                    use std::io::IsTerminal;
                    // Paced like the board when someone watches the reply come.
                    let paced = io::stdout().is_terminal() && !args.fast;
                    let (dir, path) = write_mock_model(args, paced)?;
                    (path, Runtime::mock(), Some(dir))
                }
            }
        }
        #[cfg(not(feature = "mock"))]
        return Err("no --model given, and the mock runtime needs the `mock` feature".into());
    } else {
        let runtime = match &args.lib {
            Some(lib) => Runtime::load_from(lib)?,
            None => Runtime::load()?,
        };
        (args.model.clone().expect("checked above"), runtime, None)
    };
    let model = Model::builder(&path)
        .runtime(runtime)
        .max_context_len(args.max_context)
        .max_new_tokens(args.max_new_tokens)
        .build()
        .map_err(|e| {
            format!(
                "{e}\n(for a full report: cargo run --example doctor -- --model {})",
                path.display()
            )
        })?;
    Ok((model, mock_dir))
}

/// Writes a mock model that echoes the prompt, paced like Gemma 2 2B on an RK3588.
#[cfg(feature = "mock")]
fn write_mock_model(
    args: &Args,
    paced: bool,
) -> Result<(tempfile::TempDir, PathBuf), Box<dyn std::error::Error>> {
    use rkllm::mock::{MockModel, Timing};

    let mut mock = MockModel::new().name("generate-example-mock").echo();
    if paced {
        let board = Timing::GEMMA2_2B_W8A8_RK3588;
        mock = mock.timing(Timing {
            prefill_seconds_per_token: board.prefill_seconds_per_token / MOCK_SPEEDUP,
            decode_seconds_per_token: board.decode_seconds_per_token / MOCK_SPEEDUP,
        });
    }
    if let Some(tokenizer) = &args.tokenizer {
        // In token mode the mock must decode the ids it receives with the same vocabulary.
        mock = mock.tokenizer_json(std::fs::canonicalize(tokenizer)?);
    }
    let dir = tempfile::Builder::new()
        .prefix("rkllm-generate-")
        .tempdir()?;
    let path = mock.write_to(dir.path().join("mock.rkllm"))?;
    Ok((dir, path))
}
