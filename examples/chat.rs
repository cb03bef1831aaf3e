//! An interactive chat that streams each reply as it is generated: Gemma 2 by default, any
//! model family with `--template` (its `tokenizer_config.json`).
//!
//! ```text
//! cargo run --example chat                                   # the mock runtime, echoing
//! cargo run --release --example chat -- --model gemma-2-2b-it-w8a8.rkllm \
//!     --tokenizer tokenizer.json --system "Answer briefly." --prompt-cache /tmp/rkllm-chat
//! cargo run --release --example chat -- --model qwen2.5-1.5b-instruct.rkllm \
//!     --template Qwen2.5-1.5B-Instruct/        # its tokenizer_config.json and tokenizer.json
//! printf 'Hello\nHow are you?\n' | cargo run --example chat  # scripted: replies on stdout
//! ```
//!
//! With `--template`, the prompt is the model's own chat template rendered as transformers
//! renders it; the directory's `tokenizer.json` (or `--tokenizer PATH`, a file or a
//! directory) sends it as token ids, and a reasoning model's `<think>` part is shown
//! between `[thinking]` and `[/thinking]` on stderr.
//!
//! Replies go to stdout; the prompt, the stats line after each reply and errors go to stderr,
//! so `chat < questions.txt > answers.txt` keeps only the replies (the runtime's own log
//! lines at load time go to stdout too, as librkllmrt.so prints them there).

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use rkllm::chat::{
    ChatSession, ContextBudget, Conversation, Message, Role, SystemStyle, TrimPolicy,
};
use rkllm::{AbortHandle, FinishReason, GenerateOptions, Timings};

mod common;
use common::{Backend, Failure, Lengths, Pace, Scratch, TokenizerArg};

const MODEL_HEADING: &str =
    "Model (without --model, the mock runtime runs and echoes your message)";

/// An interactive chat on the RKLLM runtime (Gemma 2, or any family with --template),
/// streaming each reply as it is generated.
#[derive(clap::Parser, Debug)]
#[command(
    name = "chat",
    after_help = "\
In the chat: /reset clears the history (the system prompt stays); /exit or end of input
quits. Ctrl-C stops the reply being generated; Ctrl-C while waiting for input, or twice
within a second, quits. The generated mock model takes the board's time while someone
watches (stdin is a terminal and no --fast)."
)]
struct Options {
    #[command(flatten, next_help_heading = MODEL_HEADING)]
    backend: Backend,
    #[command(flatten, next_help_heading = MODEL_HEADING)]
    tokenizer: TokenizerArg,
    #[arg(
        long,
        value_name = "PATH",
        help = "The model's chat template: its tokenizer_config.json, or the\n\
                directory holding it (and its tokenizer.json, used as --tokenizer)",
        help_heading = MODEL_HEADING,
        conflicts_with = "style"
    )]
    template: Option<PathBuf>,
    /// Generated mock model: the next turn's reply (repeatable; the last repeats)
    #[arg(
        long = "mock-reply",
        value_name = "TEXT",
        help_heading = MODEL_HEADING,
        conflicts_with = "model"
    )]
    mock_replies: Vec<String>,
    #[command(flatten, next_help_heading = MODEL_HEADING)]
    pace: Pace,
    /// System prompt
    #[arg(long, value_name = "TEXT", help_heading = "Chat")]
    system: Option<String>,
    #[arg(
        long,
        value_name = "STYLE",
        help = "Where the system prompt goes: merge (default), systemgemma2,\n\
                turn, strict (no system prompt allowed)",
        help_heading = "Chat",
        default_value = "merge",
        hide_default_value = true,
        hide_possible_values = true,
        value_parser = common::style_parser()
    )]
    style: SystemStyle,
    #[command(flatten, next_help_heading = "Chat")]
    lengths: Lengths,
    #[arg(
        long,
        value_name = "DIR",
        help = "Keep the prefill in a rolling prompt cache in DIR: a turn\n\
                prefills only what is new",
        help_heading = "Chat"
    )]
    prompt_cache: Option<PathBuf>,
}

fn check(options: &Options) -> Result<(), String> {
    options.backend.check()?;
    #[cfg(not(feature = "template"))]
    if let Some(path) = &options.template {
        return Err(format!(
            "--template {} needs the `template` feature",
            path.display()
        ));
    }
    options.tokenizer.check()?;
    options.lengths.check()
}

/// How much faster than an RK3588 the mock runs when paced: the board's rhythm (slow
/// prefill, ~10 tokens/s decode) with shorter waits.
#[cfg(feature = "mock")]
const MOCK_SPEEDUP: f64 = 2.0;

/// Two Ctrl-C within this interval quit, even while a reply is being generated.
const DOUBLE_PRESS: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    common::main(check, run)
}

/// What the main loop waits for: a line of input, its end, or a Ctrl-C.
enum Event {
    Line(String),
    Eof,
    Interrupt {
        /// The Ctrl-C stopped a reply (rather than arriving while waiting for input).
        stopped_reply: bool,
        /// It came within [`DOUBLE_PRESS`] of the previous one.
        twice_quickly: bool,
    },
}

fn run(args: Options, scratch: &mut Scratch) -> Result<ExitCode, Failure> {
    let interactive = io::stdin().is_terminal();

    // Check the system prompt against the style before loading anything.
    let mut first_turn = Vec::new();
    if let Some(system) = &args.system {
        first_turn.push(Message::system(system.clone()));
    }
    first_turn.push(Message::user("Hello"));
    let budget = ContextBudget::new(args.lengths.max_context, args.lengths.max_new_tokens);
    let mut chat = match &args.template {
        #[cfg(feature = "template")]
        Some(_) => family_conversation(&args, first_turn)?.with_budget(budget),
        _ => {
            rkllm::chat::Gemma2Template::new(args.style).validate(&first_turn)?;
            let mut chat = Conversation::new(args.style).with_budget(budget);
            #[cfg(feature = "tokenizer")]
            if let Some(tokenizer) = args.tokenizer_arg().load()? {
                chat = chat.with_tokenizer(tokenizer);
            }
            chat
        }
    };

    let path = args.backend.model_path(&args, scratch)?;
    let model = args
        .backend
        .load(&path, |builder| args.lengths.apply(builder))?;
    let mut session = ChatSession::new(model.session()?);
    if let Some(dir) = &args.prompt_cache {
        session.enable_prompt_cache(dir)?;
        // Every trim changes the prompt's prefix and costs one full prefill: drop half the
        // history at once, so that happens rarely.
        chat = chat.with_trim_policy(TrimPolicy::Chunked { drop_fraction: 0.5 });
    }
    if let Some(system) = &args.system {
        chat.set_system(system.clone());
    }

    let (events_tx, events) = mpsc::channel();
    read_lines_into(events_tx.clone());
    install_sigint_handler()?;
    watch_interrupts(session.abort_handle(), events_tx);

    if interactive {
        let description = if !args.backend.generates_mock() {
            path.display().to_string()
        } else if args.mock_replies.is_empty() {
            "the mock model (it echoes you)".to_owned()
        } else {
            "the mock model (scripted replies)".to_owned()
        };
        eprintln!(
            "Chatting with {description} on {}. /reset clears the history, /exit or Ctrl-D \
             quits, Ctrl-C stops a reply.",
            session.model().runtime().origin()
        );
    }
    Ok(chat_loop(&mut session, &mut chat, &events, interactive))
}

impl Options {
    /// The `tokenizer_config.json` of `--template` (a file, or in the directory given).
    fn template_config(&self) -> Option<PathBuf> {
        let path = self.template.as_ref()?;
        Some(if path.is_dir() {
            path.join("tokenizer_config.json")
        } else {
            path.clone()
        })
    }

    /// The `tokenizer.json` to use: `--tokenizer` (a file, or in the directory given), else
    /// the one beside `--template`'s configuration, if there is one.
    fn tokenizer_file(&self) -> Option<PathBuf> {
        match (self.tokenizer.path(), &self.template) {
            (Some(path), _) if path.is_dir() => Some(path.join("tokenizer.json")),
            (Some(path), _) => Some(path.to_path_buf()),
            (None, Some(_)) => {
                let config = self.template_config()?;
                let beside = config.parent()?.join("tokenizer.json");
                beside.is_file().then_some(beside)
            }
            (None, None) => None,
        }
    }

    /// `--tokenizer`, resolved to a file.
    fn tokenizer_arg(&self) -> TokenizerArg {
        TokenizerArg {
            tokenizer: self.tokenizer_file(),
        }
    }
}

/// The conversation for `--template`: the model's own chat template, with its tokenizer
/// for token mode when there is one. The system prompt is checked against the template first.
#[cfg(feature = "template")]
fn family_conversation(args: &Options, first_turn: Vec<Message>) -> Result<Conversation, Failure> {
    use std::sync::Arc;

    let config = args.template_config().expect("--template is given");
    let template = Arc::new(rkllm::chat::HfChatTemplate::from_config_file(&config)?);
    rkllm::chat::Conversation::from_messages_for(template.clone(), first_turn)?;
    #[allow(unused_mut)]
    let mut chat = Conversation::for_template(template);
    #[cfg(feature = "tokenizer")]
    if let Some(path) = args.tokenizer_file() {
        let tokenizer = rkllm::chat::TemplateTokenizer::from_file(&path)?;
        chat = chat.with_template_tokenizer(Arc::new(tokenizer));
    }
    Ok(chat)
}

fn chat_loop(
    session: &mut ChatSession,
    chat: &mut Conversation,
    events: &Receiver<Event>,
    interactive: bool,
) -> ExitCode {
    let options = GenerateOptions::new();
    let mut prompt_shown = false;
    loop {
        if interactive && !prompt_shown {
            eprint!("> ");
            prompt_shown = true;
        }
        let line = match events.recv() {
            Ok(Event::Line(line)) => line,
            // A reply was stopped; the prompt for the next message is already shown.
            Ok(Event::Interrupt {
                stopped_reply: true,
                twice_quickly: false,
            }) => continue,
            Ok(Event::Interrupt { .. }) => {
                eprintln!();
                return ExitCode::from(130);
            }
            Ok(Event::Eof) | Err(_) => {
                if interactive {
                    eprintln!();
                }
                return ExitCode::SUCCESS;
            }
        };
        prompt_shown = false;
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => return ExitCode::SUCCESS,
            "/reset" => {
                chat.clear();
                eprintln!("(history cleared)");
                continue;
            }
            _ if line.starts_with('/') => {
                eprintln!("unknown command {line}: use /reset or /exit");
                continue;
            }
            _ => {}
        }
        match turn(session, chat, line, &options) {
            Ok(true) => {}
            Ok(false) => return ExitCode::FAILURE, // stdout is gone (e.g. a closed pipe)
            Err(e) => eprintln!("error: {e}"),
        }
    }
}

/// One exchange: streams the reply to stdout, then prints the stats line to stderr. Returns
/// `Ok(false)` when stdout can no longer be written.
fn turn(
    session: &mut ChatSession,
    chat: &mut Conversation,
    user: &str,
    options: &GenerateOptions,
) -> rkllm::Result<bool> {
    let reused_before = session.cache_stats().map(|s| s.reused);
    let mut stdout = io::stdout().lock();
    let mut stream = session.chat(chat, user, options)?;
    let mut failure = None;
    // How much of the reply's answer and reasoning is shown (they differ from the tokens'
    // text for a reasoning model: its `<think>` part goes to stderr).
    let (mut answer_shown, mut reasoning_shown) = (0, 0);
    let mut thinking = false;
    while let Some(token) = stream.next() {
        match token {
            Ok(_) => {
                if let Some(reasoning) = stream.reasoning() {
                    if reasoning.len() > reasoning_shown {
                        if !thinking {
                            eprint!("[thinking] ");
                            thinking = true;
                        }
                        eprint!("{}", &reasoning[reasoning_shown..]);
                        reasoning_shown = reasoning.len();
                    }
                }
                let answer = stream.answer();
                if answer.len() > answer_shown {
                    if thinking {
                        eprintln!(" [/thinking]");
                        thinking = false;
                    }
                    // Flush per token: the point of streaming is to see the reply as it comes.
                    if write!(stdout, "{}", &answer[answer_shown..])
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        return Ok(false); // dropping the stream stops the run
                    }
                    answer_shown = answer.len();
                }
            }
            // Bytes that are not UTF-8 are skipped; a failed run ends the stream.
            Err(e) => failure = Some(e),
        }
    }
    // The end of the reply, held back while it might have been a tag, is decided now.
    if let Some(rest) = stream.reasoning().and_then(|r| r.get(reasoning_shown..)) {
        eprint!(
            "{}{rest}",
            if thinking || rest.is_empty() {
                ""
            } else {
                "[thinking] "
            }
        );
        thinking |= !rest.is_empty();
    }
    if thinking {
        eprintln!(" [/thinking]");
    }
    let rest = stream
        .answer()
        .get(answer_shown..)
        .unwrap_or_default()
        .to_owned();
    let timings = stream.timings();
    let finish = stream.finish_reason().cloned();
    drop(stream); // records the reply in the conversation
    if write!(stdout, "{rest}").is_err() {
        return Ok(false);
    }
    if writeln!(stdout).and_then(|()| stdout.flush()).is_err() {
        return Ok(false);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if finish == Some(FinishReason::Aborted) {
        eprintln!("[stopped]");
    }
    let cache = match (reused_before, session.cache_stats()) {
        (Some(before), Some(after)) if after.reused > before => Some("reused"),
        (Some(_), Some(_)) => Some("rebuilt"),
        _ => None,
    };
    eprintln!("{}", stats_line(&timings, chat, cache));
    Ok(true)
}

/// `[12 tokens, first token 123.4 ms, 19.2 tokens/s, prompt 48 tokens, 4 messages in history]`
fn stats_line(timings: &Timings, chat: &Conversation, cache: Option<&str>) -> String {
    let mut parts = vec![format!("{} tokens", timings.generated_tokens)];
    if let Some(ttft) = timings.time_to_first_token {
        parts.push(format!("first token {:.1} ms", ttft.as_secs_f64() * 1000.0));
    }
    if let Some(rate) = timings.decode_tokens_per_second() {
        parts.push(format!("{rate:.1} tokens/s"));
    }
    if let Some(fit) = chat.last_fit() {
        // Without a tokenizer the count is an upper-bound estimate from the text's bytes.
        let approx = if fit.exact { "" } else { "~" };
        parts.push(format!("prompt {approx}{} tokens", fit.prompt_tokens));
        if fit.dropped_messages > 0 {
            parts.push(format!("dropped {} old messages", fit.dropped_messages));
        }
    }
    let kept = chat
        .messages()
        .iter()
        .filter(|m| m.role != Role::System)
        .count();
    parts.push(format!("{kept} messages in history"));
    if let Some(cache) = cache {
        parts.push(format!("prompt cache {cache}"));
    }
    format!("[{}]", parts.join(", "))
}

impl common::MockModelSource for Options {
    /// Echoes the user's message (or answers the `--mock-reply` texts in order), paced like
    /// Gemma 2 2B on an RK3588 when someone is watching.
    #[cfg(feature = "mock")]
    fn mock_model(&self) -> Result<rkllm::mock::MockModel, Failure> {
        let mock = rkllm::mock::MockModel::new().name("chat-example-mock");
        let mock = if self.mock_replies.is_empty() {
            mock.echo()
        } else {
            mock.turns(self.mock_replies.clone())
        };
        let paced = self.pace.paced(io::stdin().is_terminal());
        self.backend
            .finish_mock(mock, self.tokenizer_file().as_deref(), paced, MOCK_SPEEDUP)
    }
}

/// Reads stdin on its own thread, so the main loop can wait for a line and a Ctrl-C at once.
fn read_lines_into(events: Sender<Event>) {
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            match line {
                Ok(line) => {
                    if events.send(Event::Line(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("error: reading stdin: {e}");
                    break;
                }
            }
        }
        let _ = events.send(Event::Eof);
    });
}

/// Ctrl-C presses so far. The signal handler only increments it: an atomic add is
/// async-signal-safe, where locks, allocation and the runtime's abort are not.
static SIGINTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigint(_signal: libc::c_int) {
    SIGINTS.fetch_add(1, Ordering::Relaxed);
}

fn install_sigint_handler() -> io::Result<()> {
    // SAFETY: `sigaction` is a plain C struct for which all-zero bytes is a valid value
    // (no handler, empty mask, no flags); every field that matters is set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // Restart interrupted reads: the stdin thread just keeps waiting for input.
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid, exclusively borrowed sigset_t.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialised and outlives the call; the handler only touches
    // an atomic, which is async-signal-safe; a null old-action pointer is allowed.
    if unsafe { libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Turns Ctrl-C presses into aborts of the running reply and events for the main loop. The
/// abort happens here, on an ordinary thread, because the main thread is busy streaming.
fn watch_interrupts(abort: AbortHandle, events: Sender<Event>) {
    std::thread::spawn(move || {
        let mut seen = 0;
        let mut last: Option<Instant> = None;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let count = SIGINTS.load(Ordering::Relaxed);
            if count == seen {
                continue;
            }
            let presses = count - seen;
            seen = count;
            let stopped_reply = abort.abort();
            let twice_quickly = presses > 1 || last.is_some_and(|t| t.elapsed() < DOUBLE_PRESS);
            last = Some(Instant::now());
            let event = Event::Interrupt {
                stopped_reply,
                twice_quickly,
            };
            if events.send(event).is_err() {
                return;
            }
        }
    });
}
