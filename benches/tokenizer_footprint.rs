//! The Gemma 2 tokenizer's footprint: load time, resident memory after the load and peak
//! resident memory (`VmHWM`), each measured in a fresh child process so every peak is clean.
//!
//! `cargo bench --bench tokenizer_footprint` (the tokenizer is fetched by
//! `scripts/fetch-gemma-tokenizer.sh`). Cases:
//!
//! * `reference`: `tokenizers::Tokenizer::from_file`, the `tokenizers` crate's own load path;
//! * `chat`: `GemmaTokenizer::from_file`;
//! * `chat+mock`: `GemmaTokenizer::from_file`, then the mock runtime loading a model that
//!   tokenizes with the same file (as `examples/chat --tokenizer` does), measured after both;
//! * `empty`: nothing loaded, the process's own baseline.
//!
//! Each case runs `RUNS` times (`TOKENIZER_FOOTPRINT_RUNS` overrides); the medians are
//! printed, with the spread.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const RUNS: usize = 5;
const CASES: [&str; 4] = ["empty", "reference", "chat", "chat+mock"];

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn tokenizer_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/gemma2-tokenizer/tokenizer.json")
}

/// Loads a mock model tokenizing with `tokenizer` through the mock's C table, and keeps the
/// handle alive until the measurement is taken.
fn mock_handle(tokenizer: &Path, dir: &Path) -> (rkllm_sys::RkllmApi, rkllm_sys::LLMHandle) {
    let model = rkllm::mock::MockModel::new()
        .name("footprint")
        .tokenizer_json(tokenizer)
        .write_to(dir.join("footprint.rkllm"))
        .expect("the mock model is written");
    let api = rkllm::mock::raw_api();
    let path = CString::new(model.to_str().expect("a UTF-8 path")).expect("no NUL");
    // SAFETY: the mock's default-parameter function takes nothing and returns a value.
    let mut param = unsafe { (api.create_default_param)() };
    param.model_path = path.as_ptr();
    let mut handle: rkllm_sys::LLMHandle = std::ptr::null_mut();
    // SAFETY: `handle` and `param` are valid for the call; `path` outlives it (the runtime
    // copies what it keeps); no callback is needed for loading.
    let rc = unsafe { (api.init)(&mut handle, &mut param, None) };
    assert_eq!(rc, 0, "the mock model loads");
    (api, handle)
}

/// One measurement in this (child) process; prints `load_ms rss_kib hwm_kib`.
fn child(case: &str) {
    let path = tokenizer_path();
    let dir = std::env::temp_dir().join(format!("rkllm-footprint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let started = Instant::now();
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut handle = None;
    match case {
        "empty" => {}
        "reference" => {
            keep.push(Box::new(
                tokenizers::Tokenizer::from_file(&path).expect("the tokenizer loads"),
            ));
        }
        "chat" => {
            keep.push(Box::new(
                rkllm::chat::GemmaTokenizer::from_file(&path).expect("the tokenizer loads"),
            ));
        }
        "chat+mock" => {
            keep.push(Box::new(
                rkllm::chat::GemmaTokenizer::from_file(&path).expect("the tokenizer loads"),
            ));
            handle = Some(mock_handle(&path, &dir));
        }
        other => panic!("unknown case {other}"),
    }
    let load = started.elapsed();
    let (rss, hwm) = memory_kib();
    println!("{:.1} {rss} {hwm}", load.as_secs_f64() * 1e3);
    if let Some((api, h)) = handle {
        // SAFETY: a live handle of the mock, destroyed once.
        unsafe { (api.destroy)(h) };
    }
    drop(keep);
    std::fs::remove_dir_all(dir).ok();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(args.get(i + 1).map(String::as_str).unwrap_or("empty"));
        return;
    }
    if !tokenizer_path().exists() {
        eprintln!(
            "error: {} is missing; run scripts/fetch-gemma-tokenizer.sh first",
            tokenizer_path().display()
        );
        std::process::exit(1);
    }
    let runs = std::env::var("TOKENIZER_FOOTPRINT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS);
    let exe = std::env::current_exe().expect("the bench's own path");
    println!("tokenizer_footprint: Gemma 2 tokenizer.json, {runs} child processes per case, medians (min-max)");
    println!(
        "  {:<10} {:>18} {:>22} {:>22}",
        "case", "load ms", "RSS after MiB", "peak RSS MiB"
    );
    for case in CASES {
        let mut rows = Vec::new();
        for _ in 0..runs {
            let out = Command::new(&exe)
                .args(["--child", case])
                .output()
                .expect("the child runs");
            assert!(
                out.status.success(),
                "child {case} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().last().unwrap_or_default().to_owned();
            let v: Vec<f64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
            assert_eq!(v.len(), 3, "child {case} printed {line:?}");
            rows.push(v);
        }
        let col = |i: usize, scale: f64| {
            let v: Vec<f64> = rows.iter().map(|r| r[i] / scale).collect();
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            format!("{:.1} ({lo:.1}-{hi:.1})", median(v))
        };
        println!(
            "  {case:<10} {:>18} {:>22} {:>22}",
            col(0, 1.0),
            col(1, 1024.0),
            col(2, 1024.0)
        );
    }
}
