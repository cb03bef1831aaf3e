//! The chat prompt cache with its real cost: time to first token per turn with no cache, the
//! single rolling cache (`PromptCacheConfig::rolling`) and the cost-aware prefix store
//! (`PromptCacheConfig::new`).
//!
//! `cargo bench --bench chat_cache`. A bench binary: each scenario runs `RUNS` times
//! (`CHAT_CACHE_RUNS` overrides), every figure printed is the median over the runs, and every
//! ratio compares figures of the same run of this binary. The mock simulates:
//!
//! * prefill at a fixed cost per uncached prompt token: Gemma2-2B w8a8 on RK3588 takes 5.35 ms
//!   (`Timing::GEMMA2_2B_W8A8_RK3588`, the vendor's runtime 1.1 table), scaled down here to
//!   0.1 ms to keep the run short;
//! * cache files of the real size, 104 KiB per prompt token (`KvGeometry::GEMMA2_2B`, 16-bit
//!   KV), read and written at a disk speed scaled by the same factor, so the ratio of I/O to
//!   prefill is the board's;
//! * no decode cost, so the time to first token is the cache load plus the prefill plus this
//!   crate's work. A run's save happens after its last token: outside the time to first token,
//!   inside the turn (both are reported).
//!
//! Scenarios:
//!
//! 1. one conversation of 20 turns, disks of 100 MB/s and 20 MB/s: TTFT of turn 20 ÷ turn 1,
//!    and, per turn, the cost-aware store against no cache;
//! 2. four conversations interleaved, 10 turns each, 100 MB/s (and the store on a 1 GB/s
//!    NVMe drive): turn 10 ÷ turn 1 per conversation;
//! 3. the first turn of a new conversation behind a stored 300-token system prompt, 100 MB/s:
//!    tokens prefilled and time to first token, with and without the stored prefix.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rkllm::chat::{ChatSession, Conversation, PromptCacheConfig, SystemStyle};
use rkllm::mock::{runs_of_model, AfterLastTurn, KvGeometry, MockModel, RunStats, Timing};
use rkllm::{GenerateOptions, Model, Runtime};

const RUNS: usize = 5;
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Off,
    Rolling,
    Store,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Off => "no cache",
            Mode::Rolling => "rolling cache",
            Mode::Store => "prefix store, cost-aware",
        }
    }
}

/// A mock model file whose cache files are Gemma2-2B's size on a `disk` bytes/s disk.
fn model_file(dir: &Path, name: &str, disk: f64) -> PathBuf {
    let replies: Vec<String> = (0..20).map(|t| message(t, "Answer")).collect();
    MockModel::new()
        .name(name)
        .turns_then(replies, AfterLastTurn::Cycle)
        .prefill_seconds_per_token(PREFILL_SECONDS_PER_TOKEN)
        .kv_geometry(KvGeometry::GEMMA2_2B)
        .disk_bytes_per_second(disk * speedup())
        .write_to(dir.join(format!("{name}.rkllm")))
        .unwrap()
}

/// A fresh chat session on `path` with `mode`'s cache in `cache_dir` (files deleted when the
/// session ends, so every run starts cold). The store is configured as the probe's report
/// says: the disk speed (`disk`, scaled like the mock) and the cache bytes per token; the
/// prefill speed is the mock's. It measures all three as it runs.
fn session(path: &Path, mode: Mode, cache_dir: &Path, disk: f64) -> ChatSession {
    let model = Model::builder(path)
        .runtime(Runtime::mock())
        .max_context_len(4096)
        .build()
        .expect("the mock model loads");
    let mut session = ChatSession::new(model.into_session().unwrap());
    let config = match mode {
        Mode::Off => None,
        Mode::Rolling => Some(PromptCacheConfig::rolling(cache_dir)),
        Mode::Store => Some(
            PromptCacheConfig::new(cache_dir)
                .keep_files(false)
                .disk_bytes_per_second(disk * speedup())
                .prefill_seconds_per_token(PREFILL_SECONDS_PER_TOKEN)
                .cache_bytes_per_token(KvGeometry::GEMMA2_2B.bytes_per_token() as f64),
        ),
    };
    if let Some(config) = config {
        // The bench's temporary directory may be a tmpfs; the mock's disk time is simulated.
        session
            .enable_prompt_cache(config.allow_tmpfs(true))
            .unwrap();
    }
    session
}

/// One turn: (time to first token, time to the end of the turn), from sending the message.
fn turn(session: &mut ChatSession, chat: &mut Conversation, user: String) -> (Duration, Duration) {
    let sent = Instant::now();
    let mut stream = session.chat(chat, user, &GenerateOptions::new()).unwrap();
    stream.next().expect("a first token").expect("no error");
    let ttft = sent.elapsed();
    for token in stream {
        token.unwrap();
    }
    (ttft, sent.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn last_runs(path: &Path, n: usize) -> Vec<RunStats> {
    let runs = runs_of_model(path);
    runs[runs.len() - n..].to_vec()
}

const TURNS: usize = 20;

/// Per-turn medians of one mode on one disk.
struct Single {
    ttft: Vec<Duration>,
    turn: Vec<Duration>,
    runs: Vec<RunStats>,
}

fn single(dir: &Path, mode: Mode, disk: f64, runs: usize) -> Single {
    let path = model_file(dir, &format!("single-{mode:?}-{disk}"), disk);
    let cache_dir = dir.join(format!("cache-single-{mode:?}-{disk}"));
    let mut ttfts = vec![Vec::new(); TURNS];
    let mut turns = vec![Vec::new(); TURNS];
    for run in 0..runs {
        let mut session = session(&path, mode, &cache_dir, disk);
        let mut chat = Conversation::new(SystemStyle::Merge);
        // As long as a turn's new text, so turn 1 prefills about what later turns add.
        chat.set_system(format!("Chat {run}. You are terse. Keep answers plain."));
        for t in 0..TURNS {
            let (ttft, whole) = turn(&mut session, &mut chat, message(t, "Question"));
            ttfts[t].push(ttft);
            turns[t].push(whole);
        }
    }
    Single {
        ttft: ttfts.into_iter().map(median).collect(),
        turn: turns.into_iter().map(median).collect(),
        runs: last_runs(&path, TURNS),
    }
}

fn print_single(label: &str, s: &Single, off: Option<&Single>) {
    println!("\n  {label}");
    println!(
        "  turn  prompt tokens  prefilled  loaded MB  saved MB  load ms  save ms  TTFT ms  turn ms"
    );
    for t in 0..TURNS {
        let r = &s.runs[t];
        println!(
            "  {:>4}  {:>13}  {:>9}  {:>9.1}  {:>8.1}  {:>7.2}  {:>7.2}  {:>7.2}  {:>7.2}",
            t + 1,
            r.prompt_tokens,
            r.prefilled_tokens,
            r.cache_load_bytes as f64 / 1e6,
            r.cache_save_bytes as f64 / 1e6,
            ms(r.cache_load),
            ms(r.cache_save),
            ms(s.ttft[t]),
            ms(s.turn[t]),
        );
    }
    let sum = |v: &[Duration]| v.iter().sum::<Duration>();
    print!(
        "  TTFT turn {TURNS} / turn 1: {:.2}x; turn {TURNS} TTFT {:.2} ms (board, x{:.1}: {:.2} s); \
         sum of TTFT {:.0} ms, of turn times {:.0} ms",
        s.ttft[TURNS - 1].as_secs_f64() / s.ttft[0].as_secs_f64(),
        ms(s.ttft[TURNS - 1]),
        speedup(),
        s.ttft[TURNS - 1].as_secs_f64() * speedup(),
        ms(sum(&s.ttft)),
        ms(sum(&s.turn)),
    );
    if let Some(off) = off {
        let worst = |a: &[Duration], b: &[Duration]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| x.as_secs_f64() / y.as_secs_f64())
                .fold(0.0, f64::max)
        };
        print!(
            "; vs no cache: sum of turn times {:.0}%, worst turn TTFT {:.2}x, worst turn time \
             {:.2}x",
            100.0 * sum(&s.turn).as_secs_f64() / sum(&off.turn).as_secs_f64(),
            worst(&s.ttft, &off.ttft),
            worst(&s.turn, &off.turn),
        );
    }
    println!();
}

const CONVERSATIONS: usize = 4;
const INTERLEAVED_TURNS: usize = 10;

/// Turn 10 ÷ turn 1 TTFT per conversation (medians over the runs), and the median TTFT of
/// turn 1 and turn 10 over all conversations and runs.
fn interleaved(dir: &Path, mode: Mode, disk: f64, runs: usize) -> (Vec<f64>, Duration, Duration) {
    let path = model_file(dir, &format!("interleaved-{mode:?}-{disk}"), disk);
    let cache_dir = dir.join(format!("cache-interleaved-{mode:?}-{disk}"));
    let mut ratios = vec![Vec::new(); CONVERSATIONS];
    let (mut firsts, mut lasts) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let mut session = session(&path, mode, &cache_dir, disk);
        let mut chats: Vec<Conversation> = (0..CONVERSATIONS)
            .map(|c| {
                let mut chat = Conversation::new(SystemStyle::Merge);
                chat.set_system(format!(
                    "Chat {run}-{c}. You are terse. Keep answers plain."
                ));
                chat
            })
            .collect();
        let mut ttft = vec![Vec::new(); CONVERSATIONS];
        for t in 0..INTERLEAVED_TURNS {
            for (c, chat) in chats.iter_mut().enumerate() {
                let user = message(t * CONVERSATIONS + c, "Question");
                ttft[c].push(turn(&mut session, chat, user).0);
            }
        }
        for (c, t) in ttft.iter().enumerate() {
            let (first, last) = (t[0], t[INTERLEAVED_TURNS - 1]);
            ratios[c].push(last.as_secs_f64() / first.as_secs_f64());
            firsts.push(first);
            lasts.push(last);
        }
    }
    (
        ratios.into_iter().map(median_f).collect(),
        median(firsts),
        median(lasts),
    )
}

/// A system prompt of about 300 built-in-tokenizer tokens.
fn long_system_prompt() -> String {
    let words = [
        "Answer",
        "questions",
        "about",
        "the",
        "board",
        "and",
        "its",
        "NPU",
        "plainly,",
        "citing",
        "figures",
        "where",
        "known.",
    ];
    let mut text = String::from("You are the support assistant of an RK3588 board. ");
    for i in 0..88 {
        text.push_str(words[i % words.len()]);
        text.push(' ');
    }
    text
}

/// The first turn of a new conversation, with or without its system prefix stored (by an
/// earlier session on the same directory): (prompt tokens, tokens prefilled, TTFT), medians.
fn system_prefix(dir: &Path, stored: bool, disk: f64, runs: usize) -> (usize, usize, Duration) {
    let path = model_file(dir, &format!("system-{stored}"), disk);
    let mut ttft = Vec::new();
    let mut prefilled = Vec::new();
    let mut prompt = Vec::new();
    for run in 0..runs {
        let cache_dir = dir.join(format!("cache-system-{stored}-{run}"));
        let mut system = Conversation::new(SystemStyle::Merge);
        system.set_system(long_system_prompt());
        if stored {
            let mut earlier = session(&path, Mode::Store, &cache_dir, disk);
            // The earlier session keeps its files: it is the one that stored the prefix.
            earlier.disable_prompt_cache().unwrap();
            earlier
                .enable_prompt_cache(
                    PromptCacheConfig::new(&cache_dir)
                        .allow_tmpfs(true)
                        .disk_bytes_per_second(disk * speedup())
                        .prefill_seconds_per_token(PREFILL_SECONDS_PER_TOKEN)
                        .cache_bytes_per_token(KvGeometry::GEMMA2_2B.bytes_per_token() as f64),
                )
                .unwrap();
            earlier.store_system_prefix(&system).unwrap();
        }
        let mut session = session(&path, Mode::Store, &cache_dir, disk);
        let mut chat = system.clone();
        ttft.push(turn(&mut session, &mut chat, message(run, "Question")).0);
        let r = last_runs(&path, 1).remove(0);
        prefilled.push(r.prefilled_tokens);
        prompt.push(r.prompt_tokens);
        drop(session);
        std::fs::remove_dir_all(&cache_dir).ok();
    }
    prefilled.sort_unstable();
    prompt.sort_unstable();
    (prompt[runs / 2], prefilled[runs / 2], median(ttft))
}

fn main() {
    let runs = std::env::var("CHAT_CACHE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS)
        .max(1);
    let dir = tempfile::tempdir().unwrap();
    println!(
        "chat_cache: medians of {runs} runs; prefill {} ms per uncached token, {:.1}x faster than \
         the board (5.35 ms); cache files of Gemma2-2B's KV size (104 KiB per token), disk \
         speeds scaled alike; decode free",
        PREFILL_SECONDS_PER_TOKEN * 1e3,
        speedup()
    );

    println!("\n1. One conversation, {TURNS} turns");
    let off = single(dir.path(), Mode::Off, 100e6, runs);
    print_single("no cache", &off, None);
    for disk in [100e6, 20e6] {
        for mode in [Mode::Rolling, Mode::Store] {
            let s = single(dir.path(), mode, disk, runs);
            print_single(
                &format!("{}, {:.0} MB/s disk", mode.label(), disk / 1e6),
                &s,
                Some(&off),
            );
        }
    }

    println!(
        "\n2. {CONVERSATIONS} conversations interleaved, {INTERLEAVED_TURNS} turns each: TTFT turn \
         {INTERLEAVED_TURNS} / turn 1 per conversation"
    );
    for (mode, disk) in [
        (Mode::Off, 100e6),
        (Mode::Rolling, 100e6),
        (Mode::Store, 100e6),
        (Mode::Store, 1000e6),
    ] {
        let (ratios, first, last) = interleaved(dir.path(), mode, disk, runs);
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
        println!(
            "  {:<26} {:>5.0} MB/s  {}  (TTFT turn 1 {:.2} ms, turn {INTERLEAVED_TURNS} {:.2} ms)",
            mode.label(),
            disk / 1e6,
            shown.join("  "),
            ms(first),
            ms(last),
        );
    }

    println!("\n3. First turn of a new conversation behind a long system prompt, 100 MB/s disk");
    for stored in [false, true] {
        let (prompt, prefilled, ttft) = system_prefix(dir.path(), stored, 100e6, runs);
        println!(
            "  {:<28} prompt {prompt} tokens, prefilled {prefilled}, TTFT {:.2} ms (board: {:.0} \
             ms)",
            if stored {
                "system prefix stored"
            } else {
                "nothing stored"
            },
            ms(ttft),
            ttft.as_secs_f64() * speedup() * 1e3,
        );
    }
}
