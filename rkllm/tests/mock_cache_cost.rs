//! The mock's prompt-cache cost model: files of the real KV size, save and load times from the
//! disk throughput, accounted in the run stats; damaged and foreign files refused; the
//! published timing presets.
#![cfg(feature = "mock")]

mod mock_support;

use std::ffi::CString;
use std::path::PathBuf;
use std::time::Duration;

use mock_support::*;
use rkllm::gemma::VOCAB_SIZE;
use rkllm::mock::{last_run_stats, BuiltinTokenizer, KvGeometry, MockModel, Timing};
use rkllm_sys::{RKLLMInferParam, RKLLMPromptCacheParam};

const PREFIX: &str = "<bos><start_of_turn>user\nYou are a helpful assistant. Answer briefly.\n\n";

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rkllm-mock-cost-{}-{name}", std::process::id()))
}

fn run_saving(h: &Handle, prompt: &str, save: &CString) -> i32 {
    let c = CString::new(prompt).unwrap();
    let mut input = prompt_input(&c);
    let mut cache = RKLLMPromptCacheParam {
        save_prompt_cache: 1,
        prompt_cache_path: save.as_ptr(),
    };
    let mut infer = RKLLMInferParam {
        prompt_cache_params: &mut cache,
        ..Default::default()
    };
    run_input(h, &mut input, &mut infer, &Recorder::default())
}

fn load_cache(h: &Handle, path: &CString) -> i32 {
    // SAFETY: a live handle and a NUL-terminated path.
    unsafe { (api().load_prompt_cache)(h.raw, path.as_ptr()) }
}

fn c_path(p: &std::path::Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

/// Bytes a saved file holds besides its KV payload, for a cache of `tokens` tokens of the
/// model named `name` with the built-in tokenizer (the mock's header layout).
fn header_bytes(name: &str, tokens: usize) -> u64 {
    let identity = format!("{name}/builtin");
    (24 + 4 + 8 + 4 + identity.len() + 4 + 4 * tokens + 8) as u64
}

#[test]
fn cache_files_have_the_real_kv_size_for_gemma2_2b_and_27b() {
    for (name, kv, per_token) in [
        ("gemma2-2b", KvGeometry::GEMMA2_2B, 106_496u64),
        ("gemma2-27b", KvGeometry::GEMMA2_27B, 376_832u64),
    ] {
        assert_eq!(kv.bytes_per_token(), per_token);
        let h = open(MockModel::new().name(name).kv_geometry(kv));
        let path = temp(&format!("{name}.bin"));
        assert_eq!(run_saving(&h, PREFIX, &c_path(&path)), 0);
        let tokens = BuiltinTokenizer.encode(PREFIX).len();
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(size, header_bytes(name, tokens) + tokens as u64 * per_token);
        let s = last_run_stats(h.raw).unwrap();
        assert_eq!(s.cache_save_bytes, size);
        // No disk speed set: saving is instant.
        assert_eq!(s.cache_save, Duration::ZERO);
        std::fs::remove_file(path).ok();
    }
}

#[test]
fn save_and_load_take_the_disks_time_and_the_stats_account_for_it() {
    // 100 tokens of Gemma2-2B KV at 100 MB/s: about 0.1 s each way.
    let disk = 100e6;
    let model = MockModel::new()
        .name("disk-timed")
        .kv_geometry(KvGeometry::GEMMA2_2B)
        .disk_bytes_per_second(disk)
        .prefill_seconds_per_token(0.001);
    let h = open(model);
    let path = temp("timed.bin");
    let prompt = "word ".repeat(60);
    assert_eq!(run_saving(&h, &prompt, &c_path(&path)), 0);
    let tokens = BuiltinTokenizer.encode(&prompt).len();
    let size = header_bytes("disk-timed", tokens) + tokens as u64 * 106_496;
    let saved = last_run_stats(h.raw).unwrap();
    assert_eq!(saved.cache_save_bytes, size);
    assert_eq!(
        saved.cache_save,
        Duration::from_secs_f64(size as f64 / disk)
    );
    assert_eq!(
        (saved.cache_load_bytes, saved.cache_load),
        (0, Duration::ZERO)
    );

    // The load's bytes and time are charged to the next run of the handle, once.
    let h2 = open_path(&h.model, |_| {});
    assert_eq!(load_cache(&h2, &c_path(&path)), 0);
    let question = format!("{prompt}and a question?");
    assert_eq!(run_prompt(&h2, &question).0, 0);
    let s = last_run_stats(h2.raw).unwrap();
    assert_eq!(s.cache_load_bytes, size);
    assert_eq!(s.cache_load, Duration::from_secs_f64(size as f64 / disk));
    assert_eq!(s.reused_tokens, tokens);
    assert_eq!(s.cache_save_bytes, 0);
    run_prompt(&h2, &question);
    let again = last_run_stats(h2.raw).unwrap();
    assert_eq!(
        (again.cache_load_bytes, again.cache_load),
        (0, Duration::ZERO)
    );
    assert_eq!(again.reused_tokens, tokens, "the cache stays loaded");
    std::fs::remove_file(path).ok();
}

#[test]
fn the_payload_is_sparse_size_real_blocks_not() {
    use std::os::unix::fs::MetadataExt;
    let h = open(
        MockModel::new()
            .name("sparse")
            .kv_geometry(KvGeometry::GEMMA2_27B),
    );
    let path = temp("sparse.bin");
    assert_eq!(run_saving(&h, PREFIX, &c_path(&path)), 0);
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.len() > 10_000_000, "{} bytes", meta.len());
    assert!(
        meta.blocks() * 512 < meta.len() / 100,
        "{} blocks for {} bytes",
        meta.blocks(),
        meta.len()
    );
    std::fs::remove_file(path).ok();
}

#[test]
fn damaged_truncated_and_foreign_files_are_refused() {
    let model = MockModel::new()
        .name("strict")
        .kv_geometry(KvGeometry::GEMMA2_2B);
    let h = open(model.clone());
    let path = temp("strict.bin");
    let cpath = c_path(&path);
    assert_eq!(run_saving(&h, PREFIX, &cpath), 0);
    assert_eq!(load_cache(&h, &cpath), 0);
    let good = std::fs::read(&path).unwrap();
    let _l = log_lock();

    // A flipped byte in the header (the token ids).
    let mut bad = good.clone();
    bad[80] ^= 0x40;
    std::fs::write(&path, &bad).unwrap();
    let (rc, cap) = capture(|| load_cache(&h, &cpath));
    assert_eq!(rc, -1);
    assert!(
        cap.stderr.contains("invalid prompt cache file"),
        "{}",
        cap.stderr
    );

    // Cut short.
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    let (rc, cap) = capture(|| load_cache(&h, &cpath));
    assert_eq!(rc, -1);
    assert!(
        cap.stderr.contains("invalid prompt cache file"),
        "{}",
        cap.stderr
    );

    // Not a cache at all.
    std::fs::write(&path, b"{\"format\": \"rkllm-mock-prompt-cache\"}").unwrap();
    assert_eq!(capture(|| load_cache(&h, &cpath)).0, -1);

    // Saved by a model of the same name with another KV shape.
    std::fs::write(&path, &good).unwrap();
    let other = open(model.kv_geometry(KvGeometry::GEMMA2_27B));
    let (rc, cap) = capture(|| load_cache(&other, &cpath));
    assert_eq!(rc, -1);
    assert!(cap.stderr.contains("another model"), "{}", cap.stderr);
    assert_eq!(load_cache(&h, &cpath), 0, "the intact file still loads");
    std::fs::remove_file(path).ok();
}

#[test]
fn invalid_cost_values_are_refused() {
    let err = MockModel::new()
        .disk_bytes_per_second(-1.0)
        .write_temp_file()
        .unwrap_err();
    assert!(err.to_string().contains("disk_bytes_per_second"), "{err}");
    let err = MockModel::new()
        .kv_geometry(KvGeometry::new(26, 0, 256))
        .write_temp_file()
        .unwrap_err();
    assert!(err.to_string().contains("KV geometry"), "{err}");
}

#[test]
fn the_presets_are_the_published_figures() {
    // rknn-llm runtime 1.1 benchmark table, RK3588, w8a8, prompt of 64 tokens.
    for (timing, ttft_64, tokens_per_second) in [
        (Timing::GEMMA2_2B_W8A8_RK3588, 0.342_29, 9.67),
        (Timing::LLAMA3_8B_W8A8_RK3588, 1.128, 3.79),
        (Timing::PHI3_3_8B_W8A8_RK3588, 0.516, 7.44),
    ] {
        assert!((timing.prefill_seconds_per_token * 64.0 - ttft_64).abs() < 1e-9);
        assert!((1.0 / timing.decode_seconds_per_token - tokens_per_second).abs() < 1e-9);
    }
    // About 5.35 ms per prompt token for Gemma2-2B (the table's 342.29 ms over 64 tokens).
    let per_token_ms = Timing::GEMMA2_2B_W8A8_RK3588.prefill_seconds_per_token * 1e3;
    assert!((5.34..5.36).contains(&per_token_ms), "{per_token_ms}");
}

#[test]
fn builtin_ids_stay_in_gemmas_vocabulary_end_to_end() {
    // Whatever the prompt and the answer, every id the runtime emits or accepts is < 256,000.
    let answer = "zzzzzz ZZZZ 9999 ~~~ \r\r\r\r tail";
    let h = open(MockModel::new().answer(answer));
    let (rc, events) = run_prompt(&h, "zzz ZZZ 999 ~~~~ \u{7f}");
    assert_eq!(rc, 0);
    let ids: Vec<i32> = events
        .iter()
        .map(|e| e.token_id)
        .filter(|&i| i >= 0)
        .collect();
    assert!(ids.len() > 5, "{ids:?}");
    assert!(ids.iter().all(|&i| i < VOCAB_SIZE), "{ids:?}");
    assert_eq!(text_of(&events), answer.as_bytes());
    let prompt_ids = BuiltinTokenizer.encode("zzz ZZZ 999 ~~~~ \u{7f}");
    assert!(prompt_ids.iter().all(|&i| (0..VOCAB_SIZE).contains(&i)));
}
