//! What the async face costs per token against the blocking iterator, in one run of the
//! same 2,000-token answer from the mock at zero latency.
//!
//! * `sync iterator`: `Session::into_generate`, iterated (blocking `next`).
//! * `async stream`: the same owned stream `into_async()`, polled by a minimal executor that
//!   parks its thread on `Pending` and is unparked by the run's waker (what any executor
//!   does, minus its scheduling).
//!
//! After criterion's lines it prints its own summary: medians of interleaved runs, per token,
//! and the difference (target: at most 1 µs per token).
//!
//! `cargo bench --bench async_stream --features async`

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use futures_core::Stream;
use rkllm::mock::MockModel;
use rkllm::{GenerateOptions, Model, Runtime, Session};

/// Callbacks per run: 1,999 pieces `the` (one token each for the mock; asserted below) and
/// the end.
const TOKENS: usize = 2_000;
const PROMPT: &str = "Tell me a long story.";

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on this thread, parking it while the future is pending.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

fn sync_run(session: Session) -> (usize, Session) {
    let mut stream = session
        .into_generate(PROMPT, &GenerateOptions::new())
        .expect("the run starts");
    let mut n = 0;
    for token in stream.by_ref() {
        token.expect("a token");
        n += 1;
    }
    (n, stream.into_session())
}

fn async_run(session: Session) -> (usize, Session) {
    let mut stream = session
        .into_generate(PROMPT, &GenerateOptions::new())
        .expect("the run starts")
        .into_async();
    let n = block_on(async {
        let mut n = 0;
        while let Some(token) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await
        {
            token.expect("a token");
            n += 1;
        }
        n
    });
    (n, stream.into_inner().into_session())
}

/// Runs `run` on the session in `slot`, putting the session back.
fn with(slot: &mut Option<Session>, run: fn(Session) -> (usize, Session)) -> usize {
    let (n, session) = run(slot.take().expect("the session is back"));
    *slot = Some(session);
    n
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let dir = tempfile::tempdir().unwrap();
    let path = MockModel::new()
        .answer("the".repeat(TOKENS - 1))
        .write_to(dir.path().join("long-answer.rkllm"))
        .unwrap();
    let model = Model::builder(&path)
        .runtime(Runtime::mock())
        .max_context_len(4_096)
        .build()
        .expect("the mock model loads");
    let mut slot = Some(model.session().unwrap());
    // Every token but `<end_of_turn>`, whose text is empty (skipped by both forms).
    assert_eq!(
        with(&mut slot, sync_run),
        TOKENS - 1,
        "the iterator yields every token"
    );
    assert_eq!(
        with(&mut slot, async_run),
        TOKENS - 1,
        "the stream yields every token"
    );

    let mut group = c.benchmark_group("async_stream");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(TOKENS as u64));
    group.bench_function("sync iterator", |b| b.iter(|| with(&mut slot, sync_run)));
    group.bench_function("async stream", |b| b.iter(|| with(&mut slot, async_run)));
    group.finish();

    // Interleaved, so both see the same machine noise.
    const RUNS: usize = 41;
    let (mut sync, mut asynch) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        with(&mut slot, sync_run);
        sync.push(t.elapsed());
        let t = Instant::now();
        with(&mut slot, async_run);
        asynch.push(t.elapsed());
    }
    let (sync, asynch) = (median(&mut sync), median(&mut asynch));
    let per_token = |d: Duration| d.as_nanos() as f64 / TOKENS as f64;
    println!(
        "\nasync_stream summary (own measurement: median of {RUNS} interleaved runs of \
         {TOKENS} tokens, mock at zero latency)"
    );
    println!(
        "  sync iterator: {:>8.3} ms/run  {:>7.0} ns/token",
        sync.as_secs_f64() * 1e3,
        per_token(sync)
    );
    println!(
        "  async stream:  {:>8.3} ms/run  {:>7.0} ns/token",
        asynch.as_secs_f64() * 1e3,
        per_token(asynch)
    );
    println!(
        "  async - sync:  {:>7.0} ns/token (target: at most 1,000 ns)\n",
        per_token(asynch) - per_token(sync)
    );
    c.final_summary();
}
