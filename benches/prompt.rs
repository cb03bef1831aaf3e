//! Building a chat prompt: a 50-exchange Gemma 2 conversation rendered and tokenized from
//! scratch, against what `Conversation` does for one more turn (it caches each message's
//! token count, so a fit tokenizes only the new message).
//!
//! Needs the real Gemma 2 tokenizer: `$GEMMA2_TOKENIZER`, else
//! `testdata/gemma2-tokenizer/tokenizer.json` (scripts/fetch-gemma-tokenizer.sh).
//!
//! With the feature `template`, the same for a model family's own template: a 50-exchange
//! Qwen2.5 conversation rendered by `HfChatTemplate` and encoded by `TemplateTokenizer` from
//! scratch, against one more turn (render the whole conversation, encode only the text
//! after the previous turn's prompt). Needs `testdata/template-models/qwen2_5/`
//! (scripts/fetch-template-tokenizers.sh).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use rkllm::chat::{ContextBudget, Conversation, Gemma2Template, GemmaTokenizer, SystemStyle};

const EXCHANGES: usize = 50;
/// Large enough that nothing is trimmed: the work stays the same in every iteration.
const BUDGET: ContextBudget = ContextBudget::new(32_768, 512);

fn tokenizer() -> Arc<GemmaTokenizer> {
    let path = std::env::var_os("GEMMA2_TOKENIZER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/gemma2-tokenizer/tokenizer.json")
        });
    if !path.exists() {
        panic!(
            "the Gemma 2 tokenizer is missing at {}: run scripts/fetch-gemma-tokenizer.sh, or \
             point GEMMA2_TOKENIZER at a Gemma 2 tokenizer.json",
            path.display()
        );
    }
    let tokenizer = GemmaTokenizer::from_file(&path)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
    Arc::new(tokenizer)
}

/// A deterministic chat message of 25 to 60 words, varied enough to tokenize like prose.
fn message(seed: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "runs",
        "on",
        "an",
        "NPU",
        "with",
        "three",
        "cores",
        "and",
        "its",
        "memory",
        "is",
        "shared",
        "board",
        "token",
        "prompt",
        "cache",
        "reply",
        "quickly",
        "because",
        "weights",
        "are",
        "quantized",
        "to",
        "eight",
        "bits",
        "while",
        "context",
        "grows",
        "every",
        "turn",
        "so",
        "prefill",
        "takes",
        "longer",
        "unless",
        "reused",
        "Rockchip",
        "kernel",
        "driver",
        "version",
        "matters",
        "for",
        "allocation",
        "what",
        "about",
        "latency",
        "streaming",
        "users",
        "notice",
        "first",
        "second",
        "answer",
        "question",
        "détail",
        "naïve",
        "über",
        "2024",
        "42,",
        "hello!",
        "(really)",
    ];
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        state >> 33
    };
    let len = 25 + next() % 36;
    let mut text = String::new();
    for i in 0..len {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(WORDS[next() % WORDS.len()]);
    }
    text.push('.');
    text
}

/// A conversation of `EXCHANGES` exchanges with its token counts cached (it has been fit).
fn counted_conversation(tokenizer: &Arc<GemmaTokenizer>) -> Conversation {
    let mut chat = Conversation::new(SystemStyle::Merge)
        .with_budget(BUDGET)
        .with_tokenizer(Arc::clone(tokenizer));
    chat.set_system("You are a helpful assistant on a small board. Answer briefly.");
    for i in 0..EXCHANGES {
        chat.push_user(message(2 * i)).unwrap();
        chat.fit().unwrap();
        chat.push_assistant(message(2 * i + 1)).unwrap();
    }
    chat
}

fn prompt(c: &mut Criterion) {
    let started = Instant::now();
    let tokenizer = tokenizer();
    println!(
        "tokenizer loaded in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let template = Gemma2Template::new(SystemStyle::Merge);
    let base = counted_conversation(&tokenizer);
    let next_user = message(10_000);

    // The conversation of the next turn, as a caller without Conversation would hold it.
    let mut with_next = base.clone();
    with_next.push_user(next_user.clone()).unwrap();
    let messages = with_next.messages().to_vec();
    let from_scratch = || {
        let text = template.render(&messages, true).unwrap();
        let ids = tokenizer.encode(&template, &messages, true).unwrap();
        (text, ids)
    };
    let (text, ids) = from_scratch();
    let fit = with_next.fit().unwrap();
    assert_eq!(
        fit.prompt_tokens as usize,
        ids.len(),
        "incremental count is exact"
    );
    assert_eq!(fit.dropped_messages, 0);
    println!(
        "conversation: system + {EXCHANGES} exchanges + 1 user message = {} messages, {} \
         bytes of prompt text, {} tokens",
        messages.len(),
        text.len(),
        ids.len()
    );

    let mut group = c.benchmark_group("prompt");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("from scratch: render + encode 50 exchanges", |b| {
        b.iter(from_scratch)
    });
    group.bench_function("from scratch: render only", |b| {
        b.iter(|| template.render(&messages, true).unwrap())
    });
    group.bench_function("incremental: push_user + fit (count one message)", |b| {
        b.iter_batched(
            || base.clone(),
            |mut chat| {
                chat.push_user(next_user.clone()).unwrap();
                let fit = chat.fit().unwrap();
                (chat, fit) // dropped outside the timing
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("incremental: push_user + Conversation::encode", |b| {
        b.iter_batched(
            || base.clone(),
            |mut chat| {
                chat.push_user(next_user.clone()).unwrap();
                let ids = chat.encode(true).unwrap();
                (chat, ids)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // Interleaved medians of the two workloads that matter, for one ratio from one run.
    const RUNS: usize = 31;
    let (mut scratch, mut incremental) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        std::hint::black_box(from_scratch());
        scratch.push(t.elapsed());
        let mut chat = base.clone();
        let t = Instant::now();
        chat.push_user(next_user.clone()).unwrap();
        std::hint::black_box(chat.fit().unwrap());
        incremental.push(t.elapsed());
    }
    scratch.sort_unstable();
    incremental.sort_unstable();
    let (s, i) = (scratch[RUNS / 2], incremental[RUNS / 2]);
    println!(
        "\nprompt summary (own measurement: median of {RUNS} interleaved runs)\n  \
         from scratch (render + encode, {} tokens): {:.1} µs\n  \
         incremental count of one more turn (push_user + fit): {:.1} µs\n  \
         ratio: {:.0}x\n",
        ids.len(),
        s.as_secs_f64() * 1e6,
        i.as_secs_f64() * 1e6,
        s.as_secs_f64() / i.as_secs_f64()
    );
}

/// The 50-exchange conversation as chat messages (system first).
#[cfg(feature = "template")]
fn qwen_messages(exchanges: usize) -> Vec<rkllm::chat::Message> {
    use rkllm::chat::Message;
    let mut messages = vec![Message::system(
        "You are a helpful assistant on a small board. Answer briefly.",
    )];
    for i in 0..exchanges {
        messages.push(Message::user(message(2 * i)));
        messages.push(Message::assistant(message(2 * i + 1)));
    }
    messages
}

#[cfg(feature = "template")]
fn qwen_prompt(c: &mut Criterion) {
    use rkllm::chat::{HfChatTemplate, Message, TemplateInput, TemplateTokenizer};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/template-models/qwen2_5");
    if !dir.join("tokenizer.json").exists() {
        panic!(
            "the Qwen2.5 tokenizer files are missing in {}: run \
             scripts/fetch-template-tokenizers.sh",
            dir.display()
        );
    }
    let template = HfChatTemplate::from_config_file(&dir).unwrap();
    let started = Instant::now();
    let tokenizer = TemplateTokenizer::from_file(&dir).unwrap();
    println!(
        "Qwen2.5 tokenizer loaded in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let history = qwen_messages(EXCHANGES);
    let mut next = history.clone();
    next.push(Message::user(message(10_000)));
    let input = TemplateInput::new(&next);
    let from_scratch = || tokenizer.encode(&template, &input).unwrap();
    let full = from_scratch();

    // The previous turn's prompt, as a chat that keeps it would hold it.
    let previous = TemplateInput::new(&history).add_generation_prompt(false);
    let previous_text = template.render(&previous).unwrap();
    let previous_ids = tokenizer.encode(&template, &previous).unwrap().token_ids;
    let one_more_turn = || {
        let text = template.render(&input).unwrap();
        let suffix = text
            .strip_prefix(previous_text.as_str())
            .expect("the previous prompt is a prefix of the next");
        let mut ids = previous_ids.clone();
        ids.extend(tokenizer.encode_prompt_text(suffix).unwrap());
        (text, ids)
    };
    // The new text is tokenized as a prompt text: right here, where its message holds no
    // special-token text (a chat would encode the new turn in token mode); the ids must then
    // be the from-scratch ones.
    assert_eq!(
        one_more_turn().1,
        full.token_ids,
        "prefix + suffix ids equal the whole prompt's"
    );
    println!(
        "Qwen2.5 conversation: system + {EXCHANGES} exchanges + 1 user message = {} messages, \
         {} bytes of prompt text, {} tokens",
        next.len(),
        full.text.len(),
        full.token_ids.len()
    );

    let mut group = c.benchmark_group("qwen2_5 template");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("from scratch: render + encode 50 exchanges", |b| {
        b.iter(from_scratch)
    });
    group.bench_function("from scratch: render only", |b| {
        b.iter(|| template.render(&input).unwrap())
    });
    group.bench_function("one more turn: render all + encode the new text", |b| {
        b.iter(one_more_turn)
    });
    group.finish();

    const RUNS: usize = 31;
    let (mut scratch, mut render, mut more) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        std::hint::black_box(from_scratch());
        scratch.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(template.render(&input).unwrap());
        render.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(one_more_turn());
        more.push(t.elapsed());
    }
    for v in [&mut scratch, &mut render, &mut more] {
        v.sort_unstable();
    }
    println!(
        "\nqwen2_5 template summary (own measurement: median of {RUNS} interleaved runs)\n  \
         from scratch (render + encode, {} tokens): {:.1} µs\n  \
         render only: {:.1} µs\n  \
         one more turn (render all + encode the new text): {:.1} µs\n",
        full.token_ids.len(),
        scratch[RUNS / 2].as_secs_f64() * 1e6,
        render[RUNS / 2].as_secs_f64() * 1e6,
        more[RUNS / 2].as_secs_f64() * 1e6,
    );
}

// Criterion's `criterion_group!` defines an undocumented `pub fn`, which the workspace's
// `missing_docs = "deny"` refuses: the same, spelled out.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    prompt(&mut c);
    #[cfg(feature = "template")]
    qwen_prompt(&mut c);
    c.final_summary();
}
