//! What the safe layer costs per token, and how long a token takes to reach the consumer.
//!
//! * `streaming/*`: a 2,000-token answer from the mock at zero latency, through the public
//!   iterator (`Session::generate`, collected) and through the raw C ABI (`rkllm_run` with a
//!   callback that only counts): same model file, same answer. The difference is the safe
//!   layer's cost: its run thread, the callback's copy, the channel, UTF-8 assembly.
//! * `handoff/*`: with the mock pacing tokens like a decoding NPU, the time from the
//!   runtime's callback (`Token::delivered_at`) to the consumer holding the token.
//!
//! After criterion's lines each prints its own summary, labelled: medians of interleaved
//! runs for the overhead, percentiles of every hand-off for the latency.

use std::cell::RefCell;
use std::ffi::{c_void, CString};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use rkllm::mock::MockModel;
use rkllm::{GenerateOptions, Model, Runtime, Session, Token};
use rkllm_sys::{
    LLMCallState, RKLLMInferParam, RKLLMInput, RKLLMResult, RKLLM_INFER_GENERATE,
    RKLLM_INPUT_PROMPT, RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING,
};

/// Callbacks per run: 1,999 pieces `the` (the mock's built-in tokenizer makes one token of
/// each; the runs assert the count) and `<end_of_turn>`.
const TOKENS: usize = 2_000;
const CONTEXT: u32 = 4_096;
const PROMPT: &str = "Tell me a long story.";
/// The hand-off pace: faster than an RK3588 decodes (~100 ms/token) to keep the run short;
/// the consumer waits for each token either way, which is what is measured.
const PACE: Duration = Duration::from_millis(2);

fn answer(tokens: usize) -> String {
    "the".repeat(tokens - 1)
}

fn load(path: &Path) -> Model {
    Model::builder(path)
        .runtime(Runtime::mock())
        .max_context_len(CONTEXT)
        .build()
        .expect("the mock model loads")
}

/// One run through the public API; returns the tokens received.
fn safe_run(session: &mut Session) -> usize {
    let tokens: Vec<Token> = session
        .generate(PROMPT, &GenerateOptions::new())
        .expect("the run starts")
        .collect::<rkllm::Result<_>>()
        .expect("the run succeeds");
    tokens.len()
}

/// The baseline's callback: counts tokens into the `AtomicUsize` that `userdata` points at.
unsafe extern "C" fn count_tokens(
    _result: *mut RKLLMResult,
    userdata: *mut c_void,
    state: LLMCallState,
) {
    if state == RKLLM_RUN_NORMAL || state == RKLLM_RUN_WAITING {
        // SAFETY: `userdata` is the `AtomicUsize` the run was started with, which outlives
        // the run (`rkllm_run` returns only after its last callback).
        let count = unsafe { &*userdata.cast::<AtomicUsize>() };
        count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Loads `path` into the mock through its C ABI and returns a closure that does one run
/// (returning the tokens counted) and a closure that destroys the handle.
fn raw_runner(path: &Path) -> (impl FnMut() -> usize, impl FnOnce()) {
    let api = rkllm::mock::raw_api();
    let model_path = CString::new(path.to_str().expect("UTF-8 path")).unwrap();
    // SAFETY: rkllm_createDefaultParam takes nothing and returns the struct by value.
    let mut param = unsafe { (api.create_default_param)() };
    param.model_path = model_path.as_ptr();
    param.max_context_len = CONTEXT as i32;
    let mut handle: *mut c_void = std::ptr::null_mut();
    // SAFETY: `handle` and `param` are valid for the call, `model_path` outlives it, and the
    // callback accepts whatever the runtime passes (it reads only `userdata`, see run below).
    let rc = unsafe { (api.init)(&mut handle, &mut param, Some(count_tokens)) };
    assert!(rc == 0 && !handle.is_null(), "raw rkllm_init failed: {rc}");

    let prompt = CString::new(PROMPT).unwrap();
    let run = move || {
        let mut input = RKLLMInput {
            input_type: RKLLM_INPUT_PROMPT,
            ..Default::default()
        };
        input.__bindgen_anon_1.prompt_input = prompt.as_ptr();
        // Generate mode; no LoRA, no prompt cache (null pointers).
        let mut infer = RKLLMInferParam {
            mode: RKLLM_INFER_GENERATE,
            ..Default::default()
        };
        let count = AtomicUsize::new(0);
        // SAFETY: the handle is live (destroyed only by the closure below, after the last
        // run); `input`, `infer`, the prompt and `count` outlive the call, which blocks until
        // the run's last callback has returned.
        let rc = unsafe {
            (api.run)(
                handle,
                &mut input,
                &mut infer,
                std::ptr::from_ref(&count).cast_mut().cast(),
            )
        };
        assert_eq!(rc, 0, "raw rkllm_run failed");
        count.into_inner()
    };
    let destroy = move || {
        // SAFETY: the handle came from rkllm_init above; no run is in flight (runs block) and
        // it is destroyed once, after the last run.
        let rc = unsafe { (api.destroy)(handle) };
        assert_eq!(rc, 0, "raw rkllm_destroy failed");
        drop(model_path);
    };
    (run, destroy)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn streaming(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = MockModel::new()
        .answer(answer(TOKENS))
        .write_to(dir.path().join("long-answer.rkllm"))
        .unwrap();
    let model = load(&path);
    let mut session = model.session().unwrap();
    let (mut raw_run, destroy) = raw_runner(&path);
    assert_eq!(raw_run(), TOKENS, "the raw run delivers every token");
    // Every token but `<end_of_turn>`, whose text is empty (the stream skips such tokens;
    // its callback is still handled, and counted in the cost per token).
    assert_eq!(
        safe_run(&mut session),
        TOKENS - 1,
        "the stream yields every token with text"
    );

    let mut group = c.benchmark_group("streaming");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(TOKENS as u64));
    group.bench_function("raw C ABI (counting callback)", |b| b.iter(&mut raw_run));
    group.bench_function("Session::generate, collected", |b| {
        b.iter(|| safe_run(&mut session))
    });
    group.finish();

    // Interleaved, so both see the same machine noise.
    const RUNS: usize = 41;
    let (mut raw, mut safe) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        raw_run();
        raw.push(t.elapsed());
        let t = Instant::now();
        safe_run(&mut session);
        safe.push(t.elapsed());
    }
    destroy();
    let (raw, safe) = (median(&mut raw), median(&mut safe));
    let per_token = |d: Duration| d.as_nanos() as f64 / TOKENS as f64;
    println!(
        "\nstreaming summary (own measurement: median of {RUNS} interleaved runs of \
         {TOKENS} tokens, mock at zero latency)"
    );
    println!(
        "  raw C ABI:           {:>8.3} ms/run  {:>7.0} ns/token",
        raw.as_secs_f64() * 1e3,
        per_token(raw)
    );
    println!(
        "  Session::generate:   {:>8.3} ms/run  {:>7.0} ns/token",
        safe.as_secs_f64() * 1e3,
        per_token(safe)
    );
    println!(
        "  safe-layer overhead: {:>7.0} ns/token; safe/raw time ratio {:.2}\n",
        per_token(safe) - per_token(raw),
        safe.as_secs_f64() / raw.as_secs_f64()
    );
}

fn handoff(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let answer_tokens = 4_000;
    let path = MockModel::new()
        .answer(answer(answer_tokens))
        .decode_seconds_per_token(PACE.as_secs_f64())
        .write_to(dir.path().join("paced.rkllm"))
        .unwrap();
    let model = load(&path);
    let mut session = model.session().unwrap();
    let samples = RefCell::new(Vec::new());

    let mut group = c.benchmark_group("handoff");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function(
        format!("callback to consumer, tokens every {PACE:?}"),
        |b| {
            // One iteration is one token's hand-off; the time reported is the hand-off alone.
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let stream = session
                        .generate(PROMPT, &GenerateOptions::new())
                        .expect("the run starts");
                    for token in stream.take(left as usize) {
                        let token = token.expect("token");
                        let handoff = token.delivered_at.elapsed();
                        total += handoff;
                        samples.borrow_mut().push(handoff);
                        left -= 1;
                    }
                    // Dropping the stream ends the run: the next one starts fresh.
                }
                total
            })
        },
    );
    group.finish();

    let mut samples = samples.into_inner();
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "\nhand-off summary (own measurement: every token of the criterion run, warm-up \
         included, {} tokens paced at {PACE:?})",
        samples.len()
    );
    println!(
        "  callback -> consumer: median {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs \
         (target: median under 50 µs)\n",
        us(percentile(&samples, 0.5)),
        us(percentile(&samples, 0.9)),
        us(percentile(&samples, 0.99)),
        us(*samples.last().expect("samples"))
    );
}

// Criterion's `criterion_group!` defines an undocumented `pub fn`, which the workspace's
// `missing_docs = "deny"` refuses: the same, spelled out.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    streaming(&mut c);
    handoff(&mut c);
    c.final_summary();
}
