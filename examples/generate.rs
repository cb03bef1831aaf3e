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
use std::process::ExitCode;

use rkllm::chat::{Conversation, SystemStyle};
use rkllm::{GenerateOptions, Timings, Token};

mod common;
use common::{Backend, Failure, Lengths, Pace, Scratch, TokenizerArg};

/// Generates one reply to a prompt on the RKLLM runtime, streaming it to stdout.
#[derive(clap::Parser, Debug)]
#[command(
    name = "generate",
    after_help = "\
The generated mock model takes the board's time while someone watches (stdout is a
terminal and no --fast)."
)]
struct Options {
    /// The prompt (default: read from stdin)
    #[arg(long, value_name = "TEXT", help_heading = "Prompt")]
    prompt: Option<String>,
    /// System prompt (merged into the user turn, as Gemma 2 expects)
    #[arg(long, value_name = "TEXT", help_heading = "Prompt")]
    system: Option<String>,
    /// Send the prompt as is, without the Gemma 2 chat format
    #[arg(long, help_heading = "Prompt", conflicts_with_all = ["system", "tokenizer"])]
    raw: bool,
    #[command(flatten, next_help_heading = MODEL_HEADING)]
    backend: Backend,
    #[command(flatten, next_help_heading = MODEL_HEADING)]
    tokenizer: TokenizerArg,
    #[command(flatten, next_help_heading = MODEL_HEADING)]
    pace: Pace,
    #[command(flatten, next_help_heading = MODEL_HEADING)]
    lengths: Lengths,
}

const MODEL_HEADING: &str = "Model (without --model, the mock runtime runs and echoes the prompt)";

/// How much faster than an RK3588 the mock runs when paced.
#[cfg(feature = "mock")]
const MOCK_SPEEDUP: f64 = 2.0;

fn check(options: &Options) -> Result<(), String> {
    options.backend.check()?;
    options.tokenizer.check()?;
    options.lengths.check()
}

fn main() -> ExitCode {
    common::main(check, run)
}

fn run(args: Options, scratch: &mut Scratch) -> Result<ExitCode, Failure> {
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
    let mut chat = Conversation::new(SystemStyle::Merge);
    #[cfg(feature = "tokenizer")]
    if let Some(tokenizer) = args.tokenizer.load()? {
        chat = chat.with_tokenizer(tokenizer);
    }
    if let Some(system) = &args.system {
        chat.set_system(system.clone());
    }

    let path = args.backend.model_path(&args, scratch)?;
    let model = args
        .backend
        .load(&path, |builder| args.lengths.apply(builder))?;
    let mut session = model.session()?;
    let mut stdout = io::stdout().lock();
    let timings = if args.raw {
        // Text as is: the runtime tokenizes it; no chat format, no stop token but its own.
        let mut stream = session.generate(prompt, &GenerateOptions::new())?;
        stream_to(&mut stdout, stream.by_ref())?;
        stream.timings()
    } else {
        // One user turn: `Session::chat` formats it for Gemma 2 and stops at <end_of_turn>.
        let mut stream = session.chat(&mut chat, prompt, &GenerateOptions::new())?;
        stream_to(&mut stdout, stream.by_ref())?;
        stream.timings()
    };
    eprintln!("{}", stats_line(&timings));
    Ok(ExitCode::SUCCESS)
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

impl common::MockModelSource for Options {
    /// Echoes the prompt, paced like Gemma 2 2B on an RK3588 when someone watches the reply
    /// come.
    #[cfg(feature = "mock")]
    fn mock_model(&self) -> Result<rkllm::mock::MockModel, Failure> {
        use std::io::IsTerminal;

        let mock = rkllm::mock::MockModel::new()
            .name("generate-example-mock")
            .echo();
        let paced = self.pace.paced(io::stdout().is_terminal());
        self.backend
            .finish_mock(mock, self.tokenizer.path(), paced, MOCK_SPEEDUP)
    }
}
