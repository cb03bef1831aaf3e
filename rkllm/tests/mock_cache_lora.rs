//! Prompt caches (save, load, prefix reuse, release, another model's cache) and LoRA
//! adapters (loading, selection, unknown names).

mod mock_support;

use std::ffi::CString;
use std::path::PathBuf;
use std::time::Duration;

use mock_support::*;
use rkllm::mock::{last_run_stats, runs_of_model, BuiltinTokenizer, MockModel};
use rkllm_sys::{RKLLMInferParam, RKLLMLoraAdapter, RKLLMLoraParam, RKLLMPromptCacheParam};

const PREFIX: &str = "<bos><start_of_turn>user\nYou are a helpful assistant. Answer briefly.\n\n";
const PER_TOKEN: f64 = 0.001;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rkllm-mock-{}-{name}", std::process::id()))
}

/// Runs `prompt`, saving its prompt cache to `save` when given.
fn run_saving(h: &Handle, prompt: &str, save: Option<&CString>) -> i32 {
    let c = CString::new(prompt).unwrap();
    let mut input = prompt_input(&c);
    let mut cache = RKLLMPromptCacheParam {
        save_prompt_cache: 1,
        prompt_cache_path: save.map_or(std::ptr::null(), |s| s.as_ptr()),
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

#[test]
fn a_saved_prefix_is_reused_by_later_prompts() {
    let model = MockModel::new().prefill_seconds_per_token(PER_TOKEN);
    let h = open(model.clone());
    let cache_path = temp("cache-reuse.bin");
    let c_path = CString::new(cache_path.to_str().unwrap()).unwrap();
    assert_eq!(run_saving(&h, PREFIX, Some(&c_path)), 0);
    assert!(cache_path.exists());

    let prefix_len = BuiltinTokenizer.encode(PREFIX).len();
    let question =
        format!("{PREFIX}What is the capital of France?<end_of_turn>\n<start_of_turn>model\n");
    let q_len = BuiltinTokenizer.encode(&question).len();
    // A fresh handle of the same model loads it; the shared prefix is not prefilled again.
    let h2 = open_path(&h.model, |_| {});
    assert_eq!(load_cache(&h2, &c_path), 0);
    let start = std::time::Instant::now();
    assert_eq!(run_prompt(&h2, &question).0, 0);
    let wall = start.elapsed();
    let s = last_run_stats(h2.raw).unwrap();
    assert_eq!(
        (s.prompt_tokens, s.reused_tokens, s.prefilled_tokens),
        (q_len, prefix_len, q_len - prefix_len)
    );
    assert_eq!(
        s.prefill,
        Duration::from_secs_f64((q_len - prefix_len) as f64 * PER_TOKEN)
    );
    assert!(
        wall >= s.prefill,
        "the simulated prefill was not waited for"
    );

    // A prompt that diverges early reuses only the common start.
    let other = "<bos><start_of_turn>user\nSomething else";
    run_prompt(&h2, other);
    let common = BuiltinTokenizer
        .encode(other)
        .iter()
        .zip(BuiltinTokenizer.encode(PREFIX))
        .take_while(|(a, b)| **a == *b)
        .count();
    assert_eq!(last_run_stats(h2.raw).unwrap().reused_tokens, common);

    // Released: nothing reused.
    // SAFETY: a live handle.
    assert_eq!(unsafe { (api().release_prompt_cache)(h2.raw) }, 0);
    run_prompt(&h2, &question);
    let s = last_run_stats(h2.raw).unwrap();
    assert_eq!((s.reused_tokens, s.prefilled_tokens), (0, q_len));
    // The process-wide log finds the runs by model file too.
    assert!(runs_of_model(&h.model).len() >= 4);
    std::fs::remove_file(cache_path).ok();
}

#[test]
fn prefix_reuse_can_be_switched_off() {
    let model = MockModel::new()
        .with_runtime(|r| r.prompt_cache_reuse = rkllm::settings::PromptCacheReuse::NotReused);
    let h = open(model);
    let cache_path = temp("cache-off.bin");
    let c_path = CString::new(cache_path.to_str().unwrap()).unwrap();
    assert_eq!(run_saving(&h, PREFIX, Some(&c_path)), 0);
    assert_eq!(load_cache(&h, &c_path), 0);
    run_prompt(&h, PREFIX);
    assert_eq!(last_run_stats(h.raw).unwrap().reused_tokens, 0);
    std::fs::remove_file(cache_path).ok();
}

#[test]
fn another_models_cache_and_missing_files_are_refused() {
    let cache_path = temp("cache-foreign.bin");
    let c_path = CString::new(cache_path.to_str().unwrap()).unwrap();
    let a = open(MockModel::new().name("model-a"));
    assert_eq!(run_saving(&a, PREFIX, Some(&c_path)), 0);
    let b = open(MockModel::new().name("model-b"));
    let _l = log_lock();
    let (rc, cap) = capture(|| load_cache(&b, &c_path));
    assert_eq!(rc, -1);
    assert!(
        cap.stderr.contains("E rkllm: prompt cache") && cap.stderr.contains("another model"),
        "{}",
        cap.stderr
    );
    assert_eq!(load_cache(&a, &c_path), 0);
    let missing = CString::new(temp("no-such-cache.bin").to_str().unwrap()).unwrap();
    let (rc, cap) = capture(|| load_cache(&a, &missing));
    assert_eq!(rc, -1);
    assert!(
        cap.stderr.contains("failed to open prompt cache file"),
        "{}",
        cap.stderr
    );
    // SAFETY: a NULL path, which the mock must refuse.
    let rc = unsafe { (api().load_prompt_cache)(a.raw, std::ptr::null()) };
    assert_eq!(rc, -1);
    std::fs::remove_file(cache_path).ok();
}

#[test]
fn a_null_cache_path_saves_to_the_default_file() {
    let default = PathBuf::from("./prompt_cache.bin");
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            std::fs::remove_file(&self.0).ok();
        }
    }
    let existed = default.exists();
    assert!(
        !existed,
        "./prompt_cache.bin already exists; refusing to overwrite it"
    );
    let _cleanup = Remove(default.clone());
    let h = open(MockModel::new());
    assert_eq!(run_saving(&h, PREFIX, None), 0);
    assert!(default.exists());
    let c = CString::new("./prompt_cache.bin").unwrap();
    assert_eq!(load_cache(&h, &c), 0);
}

fn load_lora(h: &Handle, path: &str, name: &str) -> i32 {
    let (p, n) = (CString::new(path).unwrap(), CString::new(name).unwrap());
    let mut adapter = RKLLMLoraAdapter {
        lora_adapter_path: p.as_ptr(),
        lora_adapter_name: n.as_ptr(),
        scale: 1.0,
    };
    // SAFETY: a live handle and a valid adapter whose strings outlive the call.
    unsafe { (api().load_lora)(h.raw, &mut adapter) }
}

fn run_with_lora(h: &Handle, name: &str) -> (i32, Vec<Event>) {
    let n = CString::new(name).unwrap();
    let mut lora = RKLLMLoraParam {
        lora_adapter_name: n.as_ptr(),
    };
    let mut infer = RKLLMInferParam {
        lora_params: &mut lora,
        ..Default::default()
    };
    let c = CString::new("hello").unwrap();
    let mut input = prompt_input(&c);
    let rec = Recorder::default();
    let rc = run_input(h, &mut input, &mut infer, &rec);
    (rc, rec.events())
}

#[test]
fn lora_adapters_are_loaded_selected_and_checked() {
    let adapter = temp("adapter.rkllm");
    std::fs::write(&adapter, b"lora").unwrap();
    let h = open(
        MockModel::new()
            .answer("Hello.")
            .lora_answer("pirate", "Arr, matey!"),
    );
    let _l = log_lock();
    let (rc, cap) = capture(|| load_lora(&h, "/no/such/adapter.rkllm", "pirate"));
    assert_eq!(rc, -1);
    assert!(
        cap.stderr
            .contains("E rkllm: failed to open lora adapter file /no/such/adapter.rkllm"),
        "{}",
        cap.stderr
    );
    // SAFETY: a NULL adapter, which the mock must refuse.
    let rc = unsafe { (api().load_lora)(h.raw, std::ptr::null_mut()) };
    assert_eq!(rc, -1);

    // Not loaded yet: a run selecting it fails without callbacks.
    let ((rc, events), cap) = capture(|| run_with_lora(&h, "pirate"));
    assert_eq!(rc, -1);
    assert!(events.is_empty());
    assert!(
        cap.stderr
            .contains("E rkllm: lora adapter pirate has not been loaded"),
        "{}",
        cap.stderr
    );

    assert_eq!(load_lora(&h, adapter.to_str().unwrap(), "pirate"), 0);
    assert_eq!(load_lora(&h, adapter.to_str().unwrap(), "plain"), 0);
    let (rc, events) = run_with_lora(&h, "pirate");
    assert_eq!(rc, 0);
    assert_eq!(text_of(&events), b"Arr, matey!");
    assert_eq!(
        last_run_stats(h.raw).unwrap().lora.as_deref(),
        Some("pirate")
    );
    // An adapter without a scripted answer answers as the base model; so does no adapter.
    assert_eq!(text_of(&run_with_lora(&h, "plain").1), b"Hello.");
    assert_eq!(text_of(&run_prompt(&h, "hi").1), b"Hello.");
    // Adapters are per handle.
    let h2 = open_path(&h.model, |_| {});
    assert_eq!(run_with_lora(&h2, "pirate").0, -1);
    std::fs::remove_file(adapter).ok();
}
