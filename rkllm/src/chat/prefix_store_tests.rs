//! The prefix store's behaviour as the chat session relies on it: longest match, eviction
//! within the budget, reuse across a restart, no reuse across a model or template change,
//! damaged files and indexes refused, tmpfs refused, and the cost-aware decision.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{
    CacheContext, ModelFileIdentity, Prefix, PrefixStore, PromptRef, ReuseCost, StoreOptions,
};

/// A directory of the build's target directory (never a tmpfs `/tmp`): the one that holds
/// the test binary's `deps` directory.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    deps.parent().unwrap_or(deps).join("tmp")
}

/// A fresh directory on disk (the target directory, never a tmpfs `/tmp`).
fn fresh_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = target_dir().join(format!(
        "prefix-store-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Fixture {
    root: PathBuf,
    store_dir: PathBuf,
    model: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let root = fresh_dir(name);
        let model = root.join("model.rkllm");
        std::fs::write(&model, b"model weights").unwrap();
        Fixture {
            store_dir: root.join("caches"),
            root,
            model,
        }
    }

    fn context(&self, template: &str) -> CacheContext {
        CacheContext::new(
            ModelFileIdentity::of_file(&self.model).unwrap(),
            "1.1.1",
            template,
        )
    }

    fn open(&self, budget: u64) -> PrefixStore {
        self.open_with(self.context("gemma2/merge"), budget)
    }

    fn open_with(&self, context: CacheContext, budget: u64) -> PrefixStore {
        PrefixStore::open(&self.store_dir, context, StoreOptions::new(budget)).unwrap()
    }

    /// The files of the store's directory, index excluded.
    fn cache_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.store_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cache"))
            .collect();
        files.sort();
        files
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.root).ok();
    }
}

/// Stores `tokens` as the runtime would: a file of `bytes` at the path the store names.
fn put(store: &mut PrefixStore, tokens: &[u32], bytes: usize) -> Option<PathBuf> {
    let pending = store.prepare_save(Prefix::Tokens(tokens.to_vec()));
    let mut content = format!("cache of {tokens:?}").into_bytes();
    content.resize(bytes, 0xab);
    std::fs::write(pending.path(), content).unwrap();
    store.commit(pending).unwrap().map(|s| s.path)
}

#[test]
fn the_longest_stored_prefix_wins() {
    let f = Fixture::new("longest");
    let mut store = f.open(1 << 20);
    put(&mut store, &[2, 106], 100);
    let long = put(&mut store, &[2, 106, 1645, 108], 100).unwrap();
    put(&mut store, &[9, 9, 9, 9, 9, 9], 100);

    let hit = store
        .lookup(PromptRef::Tokens(&[2, 106, 1645, 108, 4521]))
        .unwrap();
    assert_eq!((hit.prefix_len, hit.path), (4, long));
    assert_eq!(hit.bytes, 100);
    let short = store.lookup(PromptRef::Tokens(&[2, 106, 7])).unwrap();
    assert_eq!(short.prefix_len, 2);
    assert_eq!(store.lookup(PromptRef::Tokens(&[3, 2, 106])), None);
    assert_eq!(
        store.lookup(PromptRef::Text("<bos>")),
        None,
        "token entries only match ids"
    );

    // Text prefixes work the same way.
    let pending = store.prepare_save(Prefix::Text("<bos><start_of_turn>user\n".into()));
    std::fs::write(pending.path(), b"text cache").unwrap();
    store.commit(pending).unwrap();
    let hit = store
        .lookup(PromptRef::Text("<bos><start_of_turn>user\nHello"))
        .unwrap();
    assert_eq!(hit.prefix_len, "<bos><start_of_turn>user\n".len());
}

#[test]
fn eviction_keeps_the_files_within_the_budget_least_recently_used_first() {
    let f = Fixture::new("evict");
    let mut store = f.open(10_000);
    let a = put(&mut store, &[1], 3_000).unwrap();
    let b = put(&mut store, &[2], 3_000).unwrap();
    let c = put(&mut store, &[3], 3_000).unwrap();
    // `a` is used, so `b` is now the least recently used.
    assert!(store.lookup(PromptRef::Tokens(&[1, 5])).is_some());
    let d = put(&mut store, &[4], 3_000).unwrap();
    assert_eq!(store.len(), 3);
    assert!(store.total_bytes() <= 10_000);
    assert!(!b.exists(), "the evicted entry's file is deleted");
    assert_eq!(f.cache_files(), {
        let mut v = vec![a.clone(), c.clone(), d.clone()];
        v.sort();
        v
    });
    assert_eq!(store.lookup(PromptRef::Tokens(&[2])), None);

    // A file larger than the whole budget is not stored, and not left behind.
    assert_eq!(put(&mut store, &[5], 20_000), None);
    assert_eq!(f.cache_files().len(), 3);
    assert!(store.total_bytes() <= 10_000);

    // A smaller budget on reopening evicts down to it.
    drop(store);
    let store = f.open(6_500);
    assert_eq!(store.len(), 2);
    assert!(store.total_bytes() <= 6_500);
    assert_eq!(f.cache_files().len(), 2);
    assert!(d.exists(), "the most recently used entries stay");
}

#[test]
fn a_stored_system_prefix_survives_a_restart() {
    let f = Fixture::new("restart");
    let system = [2, 106, 1645, 108, 1596, 708];
    let path = {
        let mut store = f.open(1 << 20);
        put(&mut store, &system, 4_096).unwrap()
    };
    // A new store object over the same directory: a new process.
    let mut store = f.open(1 << 20);
    assert_eq!(store.len(), 1);
    let prompt: Vec<u32> = system.iter().copied().chain([4521, 107]).collect();
    let hit = store.lookup(PromptRef::Tokens(&prompt)).unwrap();
    assert_eq!(
        (hit.path, hit.prefix_len, hit.bytes),
        (path, system.len(), 4_096)
    );
}

#[test]
fn a_cache_is_never_used_across_a_model_runtime_or_template_change() {
    let f = Fixture::new("mismatch");
    let prefix = [2, 106, 1645];
    {
        let mut store = f.open(1 << 20);
        put(&mut store, &prefix, 1_000).unwrap();
    }
    let prompt = [2, 106, 1645, 108];
    // Another template.
    let mut store = f.open_with(f.context("gemma2/systemgemma2"), 1 << 20);
    assert_eq!(store.lookup(PromptRef::Tokens(&prompt)), None);
    assert!(!store.contains(&Prefix::Tokens(prefix.to_vec())));
    drop(store);
    // Another runtime version.
    let other_runtime = CacheContext::new(
        ModelFileIdentity::of_file(&f.model).unwrap(),
        "1.2.0",
        "gemma2/merge",
    );
    assert_eq!(
        f.open_with(other_runtime, 1 << 20)
            .lookup(PromptRef::Tokens(&prompt)),
        None
    );
    // The same template again: still there.
    assert!(f.open(1 << 20).lookup(PromptRef::Tokens(&prompt)).is_some());
    // The model file replaced in place (same path, another size).
    std::fs::write(&f.model, b"other model weights, a different file").unwrap();
    assert_eq!(f.open(1 << 20).lookup(PromptRef::Tokens(&prompt)), None);
    // Another model path with the same content.
    let copy = f.root.join("copy.rkllm");
    std::fs::write(&copy, b"model weights").unwrap();
    let copied = CacheContext::new(
        ModelFileIdentity::of_file(&copy).unwrap(),
        "1.1.1",
        "gemma2/merge",
    );
    assert_eq!(
        f.open_with(copied, 1 << 20)
            .lookup(PromptRef::Tokens(&prompt)),
        None
    );
}

#[test]
fn a_changed_or_truncated_file_is_refused_and_removed() {
    let f = Fixture::new("corrupt");
    let mut store = f.open(1 << 20);
    let long = put(&mut store, &[1, 2, 3, 4], 8_192).unwrap();
    let short = put(&mut store, &[1, 2], 8_192).unwrap();

    // Same size, one byte changed in the header, the modification time put back: only the
    // checksum tells.
    let modified = std::fs::metadata(&long).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&long).unwrap();
    bytes[3] ^= 0x01;
    std::fs::write(&long, &bytes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&long).unwrap();
    file.set_modified(modified).unwrap();
    drop(file);
    assert_eq!(
        std::fs::metadata(&long).unwrap().modified().unwrap(),
        modified
    );
    let hit = store.lookup(PromptRef::Tokens(&[1, 2, 3, 4, 5])).unwrap();
    assert_eq!(hit.path, short, "the damaged longer entry is skipped");
    assert!(!long.exists(), "the damaged file is deleted");
    assert_eq!(store.len(), 1);

    // Truncated.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert_eq!(store.lookup(PromptRef::Tokens(&[1, 2, 3])), None);
    assert!(store.is_empty());
    assert!(f.cache_files().is_empty());
}

#[test]
fn a_damaged_or_foreign_index_is_refused_and_its_files_deleted() {
    let f = Fixture::new("index");
    let path = {
        let mut store = f.open(1 << 20);
        put(&mut store, &[7, 7, 7], 2_048).unwrap()
    };
    let index = f.store_dir.join("rkllm-prefix-store.index");
    let text = std::fs::read_to_string(&index).unwrap();
    // One digit of the entry changed: the checksum no longer matches.
    std::fs::write(&index, text.replacen("2048", "2049", 1)).unwrap();
    let mut store = f.open(1 << 20);
    assert!(store.is_empty());
    assert_eq!(store.lookup(PromptRef::Tokens(&[7, 7, 7, 7])), None);
    assert!(
        !path.exists(),
        "files of a refused index are deleted, never loaded"
    );

    // Something else entirely in the index's place.
    let path = put(&mut store, &[8], 10).unwrap();
    drop(store);
    std::fs::write(&index, b"{\"not\": \"an index\"}\n").unwrap();
    assert!(f.open(1 << 20).is_empty());
    assert!(!path.exists());

    // A stray cache file the index does not name (a crash before commit) is cleaned up.
    let stray = f.store_dir.join("rkllm-prefix-00000000000000ff.cache");
    std::fs::write(&stray, b"half written").unwrap();
    let unrelated = f.store_dir.join("notes.txt");
    std::fs::write(&unrelated, b"not ours").unwrap();
    let mut store = f.open(1 << 20);
    assert!(!stray.exists());
    assert!(
        unrelated.exists(),
        "files that are not the store's are left alone"
    );
    // New entries never reuse the stray's name.
    let next = put(&mut store, &[9], 10).unwrap();
    assert!(next.file_name().unwrap().to_str().unwrap() > "rkllm-prefix-00000000000000ff.cache");
}

#[test]
fn an_abandoned_save_leaves_nothing_behind() {
    let f = Fixture::new("abandon");
    let mut store = f.open(1 << 20);
    let pending = store.prepare_save(Prefix::Tokens(vec![1, 2, 3]));
    std::fs::write(pending.path(), b"partial").unwrap();
    store.abandon(pending);
    assert!(f.cache_files().is_empty());
    assert!(store.is_empty());
    // Removing an entry deletes its file.
    let path = put(&mut store, &[4], 10).unwrap();
    assert!(store.remove(&Prefix::Tokens(vec![4])).unwrap());
    assert!(!path.exists());
    assert!(!store.remove(&Prefix::Tokens(vec![4])).unwrap());
}

#[cfg(target_os = "linux")]
#[test]
fn a_tmpfs_directory_is_refused_unless_allowed() {
    // /dev/shm is a tmpfs on Linux systems (glibc's shm_open needs it).
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "this test needs /dev/shm (a tmpfs)");
    let dir = shm.join(format!("rkllm-prefix-store-test-{}", std::process::id()));
    let f = Fixture::new("tmpfs");
    let err =
        PrefixStore::open(&dir, f.context("gemma2/merge"), StoreOptions::new(1 << 20)).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("tmpfs"), "{message}");
    assert!(!dir.exists(), "a refused directory is not created");
    let store = PrefixStore::open(
        &dir,
        f.context("gemma2/merge"),
        StoreOptions::new(1 << 20).allow_tmpfs(true),
    )
    .unwrap();
    assert!(store.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_cost_model_reuses_and_saves_only_when_it_pays() {
    // Gemma2-2B w8a8 on RK3588: 5.35 ms of prefill per token, 104 KiB of KV per token.
    let prefill = 0.342_29 / 64.0;
    let per_token = 106_496.0;
    let nvme = ReuseCost::new(prefill, per_token, 400e6);
    assert!(nvme.should_reuse(300));
    assert!(nvme.should_save(300, 1.0));
    // A 10 MB/s SD card: reading 104 KiB takes 10.6 ms, twice the prefill it would save.
    let sd = ReuseCost::new(prefill, per_token, 10e6);
    assert!(!sd.should_reuse(300));
    assert!(!sd.should_save(300, 100.0));
    // 25 MB/s: a load pays (4.3 ms < 5.35 ms) but saves only ~1 ms per token, so saving for a
    // single reuse does not pay for the 4.3 ms write; for ten reuses it does.
    let card = ReuseCost::new(prefill, per_token, 25e6);
    assert!(card.should_reuse(300));
    assert!(!card.should_save(300, 1.0));
    assert!(card.should_save(300, 10.0));
    // The real file size decides when it is known: a file with a large header costs more.
    assert!(card.should_reuse_file(300, 300 * 106_496));
    assert!(!card.should_reuse_file(300, 300 * 200_000));
    // Nothing to reuse, or no disk speed: never.
    assert!(!nvme.should_reuse(0));
    assert!(!ReuseCost::new(prefill, per_token, 0.0).should_reuse(300));
}

/// The store's round trip in the order the chat session uses it: save a system prefix, find
/// it for a longer prompt.
#[test]
fn a_saved_system_prefix_is_found_for_a_longer_prompt() -> crate::Result<()> {
    let f = Fixture::new("example");
    let context = CacheContext::new(
        ModelFileIdentity::of_file(&f.model)?,
        "1.1.1",
        "gemma2/merge",
    );
    let mut store = PrefixStore::open(&f.store_dir, context, StoreOptions::new(1 << 30))?;
    let system: Vec<u32> = vec![2, 106, 1645, 108];
    let pending = store.prepare_save(Prefix::Tokens(system.clone()));
    // The runtime writes the file during the run (`save_prompt_cache`).
    std::fs::write(pending.path(), b"the runtime's cache").unwrap();
    store.commit(pending)?;
    let prompt = [2, 106, 1645, 108, 4521, 107];
    let hit = store
        .lookup(PromptRef::Tokens(&prompt))
        .expect("the system prefix is stored");
    assert_eq!(hit.prefix_len, 4);
    Ok(())
}

#[test]
fn an_sd_card_is_too_slow_for_the_cache() {
    // Gemma2-2B w8a8 on RK3588: 5.35 ms of prefill per token, 106,496 cache bytes per token.
    let fast = ReuseCost::new(0.005_35, 106_496.0, 100e6);
    assert!(fast.should_reuse(300));
    assert!(fast.should_save(300, 1.0));
    // On a 10 MB/s SD card, reading a token's cache (10.6 ms) costs more than prefilling it.
    let slow = ReuseCost::new(0.005_35, 106_496.0, 10e6);
    assert!(!slow.should_reuse(300));
    assert!(!slow.should_save(300, 5.0));
}

/// The store with the mock runtime: a 300-token system prompt saved by one "process", found
/// and loaded by the next; the runtime then prefills only the new part, and the load costs what
/// the file's real size says.
#[cfg(feature = "mock")]
mod with_the_mock {
    use std::time::Duration;

    use super::super::{Prefix, PromptRef, ReuseCost};
    use super::Fixture;
    use crate::mock::{runs_of_model, BuiltinTokenizer, KvGeometry, MockModel};
    use crate::{GenerateOptions, Model, Runtime};

    #[test]
    fn a_stored_system_prompt_is_loaded_by_the_runtime_after_a_restart() {
        let f = Fixture::new("mock");
        let disk = 100e6;
        let per_token_prefill = 0.342_29 / 64.0;
        MockModel::new()
            .name("store-mock")
            .kv_geometry(KvGeometry::GEMMA2_2B)
            .disk_bytes_per_second(disk)
            .write_to(&f.model)
            .unwrap();
        // About 300 built-in tokens of system prompt.
        let system = format!(
            "<bos><start_of_turn>user\n{}\n\n",
            "You are terse and exact. ".repeat(20)
        );
        let system_tokens = BuiltinTokenizer.encode(&system).len();
        assert!((250..350).contains(&system_tokens), "{system_tokens}");
        let load = || {
            Model::builder(&f.model)
                .runtime(Runtime::mock())
                .build()
                .unwrap()
        };

        // First process: run the system prompt once, saving its cache into the store.
        {
            let mut store = f.open(1 << 30);
            let model = load();
            let mut session = model.session().unwrap();
            let pending = store.prepare_save(Prefix::Text(system.clone()));
            let options = GenerateOptions::default().save_prompt_cache(pending.path());
            session
                .generate(system.as_str(), &options)
                .unwrap()
                .complete()
                .unwrap();
            let saved = store.commit(pending).unwrap().unwrap();
            let run = runs_of_model(&f.model).pop().unwrap();
            assert_eq!(saved.bytes, run.cache_save_bytes);
        }

        // Second process: a new conversation behind the same system prompt.
        let mut store = f.open(1 << 30);
        let prompt = format!("{system}What is RK3588?<end_of_turn>\n<start_of_turn>model\n");
        let hit = store.lookup(PromptRef::Text(&prompt)).unwrap();
        let cost = ReuseCost::new(per_token_prefill, 106_496.0, disk);
        assert!(cost.should_reuse_file(system_tokens, hit.bytes));
        let model = load();
        let mut session = model.session().unwrap();
        let mut cached = session.load_prompt_cache(&hit.path).unwrap();
        cached
            .generate(prompt.as_str(), &GenerateOptions::default())
            .unwrap()
            .complete()
            .unwrap();
        let s = runs_of_model(&f.model).pop().unwrap();
        let prompt_tokens = BuiltinTokenizer.encode(&prompt).len();
        assert_eq!(s.reused_tokens, system_tokens);
        assert_eq!(s.prefilled_tokens, prompt_tokens - system_tokens);
        assert_eq!(s.cache_load_bytes, hit.bytes);
        assert_eq!(
            s.cache_load,
            Duration::from_secs_f64(hit.bytes as f64 / disk)
        );
    }
}
