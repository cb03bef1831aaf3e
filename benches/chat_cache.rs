//! Fast multi-turn chat: time to first token over a 20-turn chat, with the rolling prompt cache
//! (`ChatSession::enable_prompt_cache`) on and off.
//!
//! The 1.1.1 runtime keeps nothing between runs, so without the cache every turn prefills
//! the whole conversation and the time to first token grows with the history. The mock
//! simulates prefill at a fixed cost per uncached prompt token, the board's ~12 ms scaled
//! down to keep the run short (the ratios are what matter), and decodes at no cost, so the
//! time to first token is the prefill plus this crate's work. Each turn adds a user message
//! and a reply of similar length.
//!
//! Criterion measures turn 20's time to first token in each mode (one sample is one whole
//! chat; only turn 20 is reported). Every turn of every chat is recorded too, and the bench
//! prints the per-turn table (medians over the chats) with the ratios to quote.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use rkllm::chat::{ChatSession, Conversation, SystemStyle};
use rkllm::mock::{AfterLastTurn, MockModel, RunStats};
use rkllm::{GenerateOptions, Model, Runtime};

const TURNS: usize = 20;
/// Simulated prefill per uncached prompt token: 0.1 ms (an RK3588 takes ~12 ms).
const PREFILL_SECONDS_PER_TOKEN: f64 = 0.000_1;

/// A message of about 25 built-in-tokenizer tokens (50 characters), different per `seed`.
fn message(seed: usize, kind: &str) -> String {
    const TOPICS: &[&str] = &[
        "the NPU clock",
        "prompt caching",
        "the driver version",
        "context length",
        "quantization",
        "decode speed",
        "memory use",
        "LoRA adapters",
    ];
    let topic = TOPICS[seed % TOPICS.len()];
    let mut text = format!("{kind} {seed}: a few words about {topic}, then more");
    text.truncate(50);
    text
}

fn user_message(turn: usize) -> String {
    message(turn, "Question")
}

fn replies() -> Vec<String> {
    (0..TURNS).map(|t| message(t, "Answer")).collect()
}

/// One model and session per mode; the mock's scripted replies cycle, so every chat on the
/// session (20 runs) gets the same replies.
struct Chat {
    session: ChatSession,
    path: PathBuf,
    _cache_dir: Option<tempfile::TempDir>,
}

impl Chat {
    fn new(dir: &Path, cached: bool) -> Chat {
        let name = if cached { "cache-on" } else { "cache-off" };
        let path = MockModel::new()
            .name(name)
            .turns_then(replies(), AfterLastTurn::Cycle)
            .prefill_seconds_per_token(PREFILL_SECONDS_PER_TOKEN)
            .write_to(dir.join(format!("{name}.rkllm")))
            .unwrap();
        let model = Model::builder(&path)
            .runtime(Runtime::mock())
            .max_context_len(4096)
            .build()
            .expect("the mock model loads");
        let mut session = ChatSession::new(model.into_session().unwrap());
        let cache_dir = cached.then(|| tempfile::tempdir().unwrap());
        if let Some(dir) = &cache_dir {
            session.enable_prompt_cache(dir.path()).unwrap();
        }
        Chat {
            session,
            path,
            _cache_dir: cache_dir,
        }
    }

    /// A whole chat; returns each turn's time to first token as the user sees it (from
    /// sending the message, so the cache's load and release are included).
    fn run(&mut self) -> [Duration; TURNS] {
        let mut chat = Conversation::new(SystemStyle::Merge);
        // As long as a turn's new text, so turn 1 prefills about what later turns add.
        chat.set_system("You are terse. Keep each answer short and plain.");
        let options = GenerateOptions::new();
        let mut ttft = [Duration::ZERO; TURNS];
        for (turn, slot) in ttft.iter_mut().enumerate() {
            let sent = Instant::now();
            let mut stream = self
                .session
                .chat(&mut chat, user_message(turn), &options)
                .unwrap();
            stream.next().expect("a first token").expect("no error");
            *slot = sent.elapsed();
            for token in stream {
                token.unwrap();
            }
        }
        ttft
    }

    /// The mock's record of the last chat's runs.
    fn last_chat_runs(&self) -> Vec<RunStats> {
        let runs = rkllm::mock::runs_of_model(&self.path);
        runs[runs.len() - TURNS..].to_vec()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn chat_cache(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut off = Chat::new(dir.path(), false);
    let mut on = Chat::new(dir.path(), true);
    let chats_off = RefCell::new(Vec::new());
    let chats_on = RefCell::new(Vec::new());

    let mut group = c.benchmark_group("chat_cache");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500));
    // A chat takes ~1.3 s without the cache and ~0.15 s with it: about ten and thirty chats.
    for (label, chat, record, seconds) in [
        ("off", &mut off, &chats_off, 13),
        ("on", &mut on, &chats_on, 3),
    ] {
        group.measurement_time(Duration::from_secs(seconds));
        group.bench_function(
            format!("TTFT of turn {TURNS}, rolling cache {label}"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let ttft = chat.run();
                        total += ttft[TURNS - 1];
                        record.borrow_mut().push(ttft);
                    }
                    total
                })
            },
        );
    }
    group.finish();

    let (chats_off, chats_on) = (chats_off.into_inner(), chats_on.into_inner());
    let per_turn = |chats: &[[Duration; TURNS]]| -> Vec<Duration> {
        (0..TURNS)
            .map(|t| median(chats.iter().map(|c| c[t]).collect()))
            .collect()
    };
    let (t_off, t_on) = (per_turn(&chats_off), per_turn(&chats_on));
    let (runs_off, runs_on) = (off.last_chat_runs(), on.last_chat_runs());

    println!(
        "\nchat_cache summary (own measurement: median time to first token per turn over {} \
         chats without and {} with the cache; prefill {} ms per uncached token, decode free)",
        chats_off.len(),
        chats_on.len(),
        PREFILL_SECONDS_PER_TOKEN * 1e3
    );
    println!(
        "  turn  prompt tokens | cache off: prefilled  TTFT ms | cache on: prefilled  TTFT ms"
    );
    for t in 0..TURNS {
        println!(
            "  {:>4}  {:>13} | {:>20}  {:>7.2} | {:>19}  {:>7.2}",
            t + 1,
            runs_off[t].prompt_tokens,
            runs_off[t].prefilled_tokens,
            ms(t_off[t]),
            runs_on[t].prefilled_tokens,
            ms(t_on[t]),
        );
    }
    let ratio = |t: &[Duration]| t[TURNS - 1].as_secs_f64() / t[0].as_secs_f64();
    let sum = |t: &[Duration]| t.iter().sum::<Duration>();
    let simulated = |runs: &[RunStats]| runs.iter().map(|r| r.prefill).sum::<Duration>();
    println!(
        "  turn {TURNS} / turn 1 TTFT: {:.2}x with the cache (target: within 1.5x), {:.2}x \
         without",
        ratio(&t_on),
        ratio(&t_off)
    );
    println!(
        "  sum of TTFT over the {TURNS} turns: {:.0} ms without, {:.0} ms with the cache: \
         {:.0} ms saved ({:.0}%)",
        ms(sum(&t_off)),
        ms(sum(&t_on)),
        ms(sum(&t_off).saturating_sub(sum(&t_on))),
        100.0 * (1.0 - sum(&t_on).as_secs_f64() / sum(&t_off).as_secs_f64())
    );
    println!(
        "  simulated prefill of one chat (mock's RunStats): {} tokens / {:.0} ms without, {} \
         tokens / {:.0} ms with the cache\n",
        runs_off.iter().map(|r| r.prefilled_tokens).sum::<usize>(),
        ms(simulated(&runs_off)),
        runs_on.iter().map(|r| r.prefilled_tokens).sum::<usize>(),
        ms(simulated(&runs_on)),
    );
    let stats = on.session.cache_stats().expect("the cache is on");
    assert_eq!(
        stats.rebuilt as usize,
        chats_on.len(),
        "the cache is rebuilt once per chat (its first turn) and reused on every other turn"
    );
}

// Criterion's `criterion_group!` defines an undocumented `pub fn`, which the workspace's
// `missing_docs = "deny"` refuses: the same, spelled out.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    chat_cache(&mut c);
    c.final_summary();
}
