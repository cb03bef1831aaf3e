//! Fast multi-turn chat: time to first token over a 20-turn chat, with the rolling prompt cache
//! (`ChatSession::enable_prompt_cache`) on and off, with the cache's real cost.
//!
//! The 1.1.1 runtime keeps nothing between runs, so without the cache every turn prefills
//! the whole conversation and the time to first token grows with the history. With it, each
//! turn loads the previous turn's cache file and saves its own. The mock simulates:
//!
//! * prefill at a fixed cost per uncached prompt token: Gemma2-2B w8a8 on RK3588 takes 5.35 ms
//!   (`Timing::GEMMA2_2B_W8A8_RK3588`, the vendor's runtime 1.1 table), scaled down here to
//!   0.1 ms to keep the run short;
//! * cache files of the real size, 104 KiB per prompt token (`KvGeometry::GEMMA2_2B`, 16-bit
//!   KV), read and written at a disk speed scaled by the same factor, so the ratio of I/O to
//!   prefill is the board's: a 100 MB/s disk (eMMC, a good SD card) and a 20 MB/s one;
//! * no decode cost, so the time to first token is the cache load plus the prefill plus this
//!   crate's work. The save happens after each run, outside the time to first token but inside
//!   the turn.
//!
//! Each turn adds a user message and a reply of similar length. Criterion measures turn 20's
//! time to first token in each mode (one sample is one whole chat; only turn 20 is reported).
//! Every turn of every chat is recorded too, and the bench prints the per-turn table (medians
//! over the chats) with the ratios to quote.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use rkllm::chat::{ChatSession, Conversation, SystemStyle};
use rkllm::mock::{AfterLastTurn, KvGeometry, MockModel, RunStats, Timing};
use rkllm::{GenerateOptions, Model, Runtime};

const TURNS: usize = 20;
/// Simulated prefill per uncached prompt token: 0.1 ms (an RK3588 takes 5.35 ms).
const PREFILL_SECONDS_PER_TOKEN: f64 = 0.000_1;

/// How much faster than the board the simulation runs.
fn speedup() -> f64 {
    Timing::GEMMA2_2B_W8A8_RK3588.prefill_seconds_per_token / PREFILL_SECONDS_PER_TOKEN
}

/// A message of 50 characters (about 30 built-in-tokenizer tokens), different per `seed`.
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
    /// A chat without the cache (`disk` = `None`) or with it, the cache on a disk of `disk`
    /// bytes per second on the board.
    fn new(dir: &Path, name: &str, disk: Option<f64>) -> Chat {
        let path = MockModel::new()
            .name(name)
            .turns_then(replies(), AfterLastTurn::Cycle)
            .prefill_seconds_per_token(PREFILL_SECONDS_PER_TOKEN)
            .kv_geometry(KvGeometry::GEMMA2_2B)
            .disk_bytes_per_second(disk.unwrap_or(0.0) * speedup())
            .write_to(dir.join(format!("{name}.rkllm")))
            .unwrap();
        let model = Model::builder(&path)
            .runtime(Runtime::mock())
            .max_context_len(4096)
            .build()
            .expect("the mock model loads");
        let mut session = ChatSession::new(model.into_session().unwrap());
        let cache_dir = disk.map(|_| tempfile::tempdir().unwrap());
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

/// The modes measured: label, model name, board disk speed (`None` = no cache), seconds of
/// measurement (a chat takes about 1.3 s without the cache).
const MODES: [(&str, &str, Option<f64>, u64); 3] = [
    ("off", "cache-off", None, 13),
    ("on, 100 MB/s disk", "cache-100", Some(100e6), 8),
    ("on, 20 MB/s disk", "cache-20", Some(20e6), 25),
];

fn chat_cache(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut chats: Vec<Chat> = MODES
        .iter()
        .map(|(_, name, disk, _)| Chat::new(dir.path(), name, *disk))
        .collect();
    let records: Vec<RefCell<Vec<[Duration; TURNS]>>> =
        MODES.iter().map(|_| RefCell::new(Vec::new())).collect();

    let mut group = c.benchmark_group("chat_cache");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500));
    for (((label, _, _, seconds), chat), record) in MODES.iter().zip(&mut chats).zip(&records) {
        group.measurement_time(Duration::from_secs(*seconds));
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

    let per_turn = |chats: &[[Duration; TURNS]]| -> Vec<Duration> {
        (0..TURNS)
            .map(|t| median(chats.iter().map(|c| c[t]).collect()))
            .collect()
    };
    let ratio = |t: &[Duration]| t[TURNS - 1].as_secs_f64() / t[0].as_secs_f64();
    let sum = |t: &[Duration]| t.iter().sum::<Duration>();
    let simulated =
        |runs: &[RunStats], f: fn(&RunStats) -> Duration| -> Duration { runs.iter().map(f).sum() };
    println!(
        "\nchat_cache summary (own measurement: median time to first token per turn; prefill {} \
         ms per uncached token, {:.1}x faster than the board; cache files of Gemma2-2B's KV \
         size, disk speeds scaled alike; decode free)",
        PREFILL_SECONDS_PER_TOKEN * 1e3,
        speedup()
    );
    let off = per_turn(&records[0].borrow());
    for (((label, _, _, _), chat), record) in MODES.iter().zip(&chats).zip(&records) {
        let chats_run = record.borrow();
        let t = per_turn(&chats_run);
        let runs = chat.last_chat_runs();
        println!("\n  rolling cache {label} ({} chats)", chats_run.len());
        println!("  turn  prompt tokens  prefilled  cache loaded MB  load ms  save ms  TTFT ms");
        for turn in 0..TURNS {
            let r = &runs[turn];
            println!(
                "  {:>4}  {:>13}  {:>9}  {:>15.1}  {:>7.2}  {:>7.2}  {:>7.2}",
                turn + 1,
                r.prompt_tokens,
                r.prefilled_tokens,
                r.cache_load_bytes as f64 / 1e6,
                ms(r.cache_load),
                ms(r.cache_save),
                ms(t[turn]),
            );
        }
        println!(
            "  turn {TURNS} / turn 1 TTFT: {:.2}x; sum of TTFT over the turns {:.0} ms ({:.0}% \
             of no cache); simulated per chat: prefill {:.0} ms of {} tokens, cache load {:.0} \
             ms, save {:.0} ms ({:.0} MB written); on the board (x{:.1}): turn {TURNS} TTFT \
             {:.2} s",
            ratio(&t),
            ms(sum(&t)),
            100.0 * sum(&t).as_secs_f64() / sum(&off).as_secs_f64(),
            ms(simulated(&runs, |r| r.prefill)),
            runs.iter().map(|r| r.prefilled_tokens).sum::<usize>(),
            ms(simulated(&runs, |r| r.cache_load)),
            ms(simulated(&runs, |r| r.cache_save)),
            runs.iter().map(|r| r.cache_save_bytes).sum::<u64>() as f64 / 1e6,
            speedup(),
            t[TURNS - 1].as_secs_f64() * speedup(),
        );
    }
    println!();
    for ((_, _, disk, _), (chat, record)) in MODES.iter().zip(chats.iter().zip(&records)) {
        if disk.is_some() {
            let stats = chat.session.cache_stats().expect("the cache is on");
            assert_eq!(
                stats.rebuilt as usize,
                record.borrow().len(),
                "the cache is rebuilt once per chat (its first turn) and reused on every other \
                 turn"
            );
        }
    }
}

// Criterion's `criterion_group!` defines an undocumented `pub fn`, which the workspace's
// `missing_docs = "deny"` refuses: the same, spelled out.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    chat_cache(&mut c);
    c.final_summary();
}
