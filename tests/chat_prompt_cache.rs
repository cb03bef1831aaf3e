//! The chat session's prompt cache on the prefix store, through the public API: the longest
//! stored prefix is loaded, interleaved conversations keep their reuse, the budget holds, a
//! stored system prefix serves a restart, a changed model or template and a damaged file are
//! never used, a tmpfs directory is refused, and the cost model skips a disk too slow to pay.
//! Every check reads the mock's record of its runs (tokens reused and prefilled), never a
//! clock.

mod common;

use std::path::{Path, PathBuf};

use rkllm::chat::{ChatSession, Conversation, PromptCacheConfig, SystemStyle};
use rkllm::mock::{runs_of_model, KvGeometry, MockModel, RunStats};
use rkllm::{GenerateOptions, Model, Runtime};

const SYSTEM: &str = "You are a careful assistant. Answer in one short sentence, plainly.";

/// 256 cache bytes per prompt token: small files of the real shape.
const SMALL_KV: KvGeometry = KvGeometry::new(1, 1, 64);

fn model_at(path: &Path) -> Model {
    Model::builder(path)
        .runtime(Runtime::mock())
        .max_context_len(4096)
        .build()
        .unwrap()
}

fn write_model(mock: MockModel, path: &Path) -> PathBuf {
    mock.write_to(path).unwrap()
}

/// A cache that always loads and saves (the subject here is the store, not the cost model);
/// the temporary directory may be a tmpfs, allowed for tests.
fn always(dir: &Path) -> PromptCacheConfig {
    PromptCacheConfig::new(dir)
        .allow_tmpfs(true)
        .cost_aware(false)
}

fn conversation() -> Conversation {
    let mut c = Conversation::new(SystemStyle::Merge);
    c.set_system(SYSTEM);
    c
}

fn turn(session: &mut ChatSession, chat: &mut Conversation, user: &str) {
    session
        .chat(chat, user, &GenerateOptions::new())
        .unwrap()
        .complete()
        .unwrap();
}

/// The cache files in `dir` and their total size.
fn cache_files(dir: &Path) -> (Vec<PathBuf>, u64) {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "cache"))
                .collect()
        })
        .unwrap_or_default();
    let total = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    (files, total)
}

fn last_run(model: &Path) -> RunStats {
    runs_of_model(model).pop().expect("a run")
}

#[test]
fn interleaved_conversations_each_reuse_their_own_latest_turn() {
    let dir = common::temp_path("store-interleaved");
    let model_file = common::temp_path("store-interleaved-model");
    let path = write_model(MockModel::new().answer("Fine."), &model_file);
    let run = |config: PromptCacheConfig| -> Vec<Vec<RunStats>> {
        let mut session = ChatSession::new(model_at(&path).into_session().unwrap());
        session.enable_prompt_cache(config).unwrap();
        let mut chats: Vec<Conversation> = (0..3).map(|_| conversation()).collect();
        let mut runs = vec![Vec::new(); 3];
        for round in 0..4 {
            for (i, chat) in chats.iter_mut().enumerate() {
                turn(
                    &mut session,
                    chat,
                    &format!("conversation {i}, question {round}"),
                );
                runs[i].push(last_run(&path));
            }
        }
        runs
    };
    let store = run(always(&dir));
    for (i, runs) in store.iter().enumerate() {
        for t in 1..runs.len() {
            assert_eq!(
                runs[t].reused_tokens,
                runs[t - 1].prompt_tokens,
                "conversation {i}, turn {t}: the whole previous prompt is reused: {runs:?}"
            );
        }
    }
    // The single rolling cache loses each conversation's cache to the next one.
    let rolling_dir = common::temp_path("store-interleaved-rolling");
    let rolling = run(PromptCacheConfig::rolling(&*rolling_dir).allow_tmpfs(true));
    assert!(
        rolling.iter().flatten().all(|r| r.reused_tokens == 0),
        "{rolling:?}"
    );
}

#[test]
fn the_longest_stored_prefix_is_loaded() {
    let dir = common::temp_path("store-longest");
    let model_file = common::temp_path("store-longest-model");
    let path = write_model(MockModel::new().answer("Fine."), &model_file);
    let mut session = ChatSession::new(model_at(&path).into_session().unwrap());
    session.enable_prompt_cache(always(&dir)).unwrap();
    let mut chat = conversation();
    let stored = session.store_system_prefix(&chat).unwrap();
    assert!(stored > SYSTEM.len(), "the prefix holds the system prompt");
    let prefix_run = last_run(&path);
    assert!(
        prefix_run.cache_save_bytes > 0 && prefix_run.reused_tokens == 0,
        "the prefix ran once and was saved: {prefix_run:?}"
    );
    turn(&mut session, &mut chat, "First question?");
    let first = last_run(&path);
    assert!(
        first.reused_tokens > 0 && first.reused_tokens <= prefix_run.prompt_tokens,
        "the first turn loads the system prefix: {first:?} after {prefix_run:?}"
    );
    turn(&mut session, &mut chat, "Second question?");
    let second = last_run(&path);
    assert_eq!(
        second.reused_tokens, first.prompt_tokens,
        "the second turn loads the first turn's prompt, the longer match: {second:?}"
    );
    // Storing it again runs nothing.
    let runs = runs_of_model(&path).len();
    assert_eq!(session.store_system_prefix(&chat).unwrap(), stored);
    assert_eq!(runs_of_model(&path).len(), runs);
}

#[test]
fn the_files_stay_within_the_budget() {
    let dir = common::temp_path("store-budget");
    let model_file = common::temp_path("store-budget-model");
    let path = write_model(
        MockModel::new().answer("Fine.").kv_geometry(SMALL_KV),
        &model_file,
    );
    let budget = 40_000;
    let mut session = ChatSession::new(model_at(&path).into_session().unwrap());
    session
        .enable_prompt_cache(always(&dir).budget_bytes(budget))
        .unwrap();
    let mut saved = 0;
    for i in 0..8 {
        let mut chat = conversation();
        for t in 0..2 {
            turn(&mut session, &mut chat, &format!("chat {i} turn {t}"));
            saved += u64::from(last_run(&path).cache_save_bytes > 0);
            let (files, total) = cache_files(&dir);
            assert!(total <= budget, "{total} bytes in {files:?}");
        }
    }
    let (files, total) = cache_files(&dir);
    assert!(
        (files.len() as u64) < saved && total > budget / 4,
        "{saved} saves, {} files of {total} bytes: old ones evicted, recent ones kept",
        files.len()
    );
}

#[test]
fn a_stored_system_prefix_serves_a_restart_but_not_another_model_or_template() {
    let dir = common::temp_path("store-restart");
    let model_file = common::temp_path("store-restart-model");
    let path = write_model(MockModel::new().answer("Fine."), &model_file);
    {
        let mut session = ChatSession::new(model_at(&path).into_session().unwrap());
        session.enable_prompt_cache(always(&dir)).unwrap();
        session.store_system_prefix(&conversation()).unwrap();
    } // the process ends: the store's files stay
    assert_eq!(cache_files(&dir).0.len(), 1);

    // A new model instance of the same file: the first turn starts from the stored prefix.
    let mut session = ChatSession::new(model_at(&path).into_session().unwrap());
    session.enable_prompt_cache(always(&dir)).unwrap();
    turn(&mut session, &mut conversation(), "Hello after a restart");
    let restarted = last_run(&path);
    assert!(restarted.reused_tokens > 0, "{restarted:?}");
    assert_eq!(session.cache_stats().unwrap().reused, 1);

    // Another template (the system prompt as its own turn): not reused.
    let mut other_template = Conversation::new(SystemStyle::Turn);
    other_template.set_system(SYSTEM);
    turn(&mut session, &mut other_template, "Hello after a restart");
    assert_eq!(last_run(&path).reused_tokens, 0);
    drop(session);

    // The model file replaced in place by another model: nothing stored is used.
    let replaced = write_model(
        MockModel::new().name("another model").answer("Other."),
        &model_file,
    );
    let mut session = ChatSession::new(model_at(&replaced).into_session().unwrap());
    session.enable_prompt_cache(always(&dir)).unwrap();
    turn(&mut session, &mut conversation(), "Hello after a restart");
    let other = last_run(&replaced);
    assert_eq!(other.reused_tokens, 0, "{other:?}");
    let stats = session.cache_stats().unwrap();
    assert_eq!((stats.reused, stats.rebuilt), (0, 1));
}

#[test]
fn a_damaged_or_foreign_cache_file_is_refused_never_loaded() {
    let dir = common::temp_path("store-damaged");
    let model_file = common::temp_path("store-damaged-model");
    let path = write_model(MockModel::new().answer("Fine."), &model_file);
    {
        let mut session = ChatSession::new(model_at(&path).into_session().unwrap());
        session.enable_prompt_cache(always(&dir)).unwrap();
        session.store_system_prefix(&conversation()).unwrap();
    }
    let (files, _) = cache_files(&dir);
    assert_eq!(files.len(), 1);
    // Same size, other bytes at the start (where a runtime's header is).
    let mut bytes = std::fs::read(&files[0]).unwrap();
    for b in bytes.iter_mut().take(16) {
        *b = !*b;
    }
    std::fs::write(&files[0], &bytes).unwrap();
    // A file the store never recorded, named like its own.
    let foreign = dir.join("rkllm-prefix-00000000000000ff.cache");
    std::fs::write(&foreign, b"not a cache this store wrote").unwrap();

    let mut session = ChatSession::new(model_at(&path).into_session().unwrap());
    session.enable_prompt_cache(always(&dir)).unwrap();
    assert!(
        !foreign.exists(),
        "a file the index does not name is deleted"
    );
    turn(&mut session, &mut conversation(), "Hello");
    let run = last_run(&path);
    assert_eq!(
        (run.reused_tokens, run.cache_load_bytes),
        (0, 0),
        "nothing loaded: {run:?}"
    );
    assert!(!files[0].exists(), "the damaged file was removed");
    assert!(!run.errored);
}

#[test]
fn a_tmpfs_directory_is_refused_unless_allowed() {
    // /dev/shm is a tmpfs on Linux systems (glibc's shm_open needs it).
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "this test needs /dev/shm (a tmpfs)");
    let dir = shm.join(format!("rkllm-chat-cache-test-{}", std::process::id()));
    let model_file = common::temp_path("store-tmpfs-model");
    let path = write_model(MockModel::new().answer("Fine."), &model_file);
    let mut session = ChatSession::new(model_at(&path).into_session().unwrap());
    let err = session
        .enable_prompt_cache(PromptCacheConfig::new(&dir))
        .unwrap_err();
    assert!(err.to_string().contains("tmpfs"), "{err}");
    assert!(!dir.exists(), "a refused directory is not created");
    assert!(session.cache_stats().is_none());
    session
        .enable_prompt_cache(PromptCacheConfig::new(&dir).allow_tmpfs(true))
        .unwrap();
    assert!(session.cache_stats().is_some());
    session.disable_prompt_cache().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Four turns of one conversation on a mock that prefills 0.5 ms per token and stores
/// Gemma2-2B's KV (104 KiB per token) on a disk of `disk` bytes per second.
fn cost_aware_chat(name: &str, prefill: f64, disk: f64) -> (Vec<RunStats>, ChatSession) {
    let dir = common::temp_path(&format!("{name}-cache"));
    let model_file = common::temp_path(&format!("{name}-model"));
    let path = write_model(
        MockModel::new()
            .answer("Fine.")
            .prefill_seconds_per_token(prefill)
            .kv_geometry(KvGeometry::GEMMA2_2B)
            .disk_bytes_per_second(disk),
        &model_file,
    );
    let mut session = ChatSession::new(model_at(&path).into_session().unwrap());
    session
        .enable_prompt_cache(PromptCacheConfig::new(&*dir).allow_tmpfs(true))
        .unwrap();
    let mut chat = conversation();
    for t in 0..4 {
        turn(&mut session, &mut chat, &format!("Question {t}?"));
    }
    let runs = runs_of_model(&path);
    session.disable_prompt_cache().unwrap();
    (runs, session)
}

#[test]
fn the_cost_model_uses_a_fast_disk() {
    // Reading a token's cache takes 0.05 ms at 2 GB/s, prefilling it 0.5 ms.
    let (runs, session) = cost_aware_chat("cost-fast", 0.000_5, 2e9);
    for t in 1..runs.len() {
        assert_eq!(
            runs[t].reused_tokens,
            runs[t - 1].prompt_tokens,
            "turn {t}: {runs:?}"
        );
        assert!(runs[t].cache_save_bytes > 0, "turn {t} saves: {runs:?}");
    }
    let estimates = session.cache_estimates();
    assert!(estimates.is_none(), "the cache was turned off");
}

#[test]
fn the_cost_model_skips_a_slow_disk() {
    // Reading a token's cache takes 5.3 ms at 20 MB/s, prefilling it 0.1 ms: the first turn's
    // save measures the cache's size and the disk, then nothing is loaded or saved.
    let (runs, _) = cost_aware_chat("cost-slow", 0.000_1, 20e6);
    assert!(runs[0].cache_save_bytes > 0, "the measuring save: {runs:?}");
    for (t, run) in runs.iter().enumerate().skip(1) {
        assert_eq!(
            (
                run.reused_tokens,
                run.cache_load_bytes,
                run.cache_save_bytes
            ),
            (0, 0, 0),
            "turn {t}: no cache I/O on this disk: {runs:?}"
        );
        assert_eq!(run.prefilled_tokens, run.prompt_tokens);
    }
}

#[test]
fn the_cost_model_reports_what_it_measured() {
    let dir = common::temp_path("cost-estimates-cache");
    let model_file = common::temp_path("cost-estimates-model");
    let path = write_model(
        MockModel::new()
            .answer("Fine.")
            .prefill_seconds_per_token(0.000_5)
            .kv_geometry(KvGeometry::GEMMA2_2B)
            .disk_bytes_per_second(2e9),
        &model_file,
    );
    let mut session = ChatSession::new(model_at(&path).into_session().unwrap());
    session
        .enable_prompt_cache(PromptCacheConfig::new(&*dir).allow_tmpfs(true))
        .unwrap();
    let before = session.cache_estimates().unwrap();
    assert!(!before.prefill_measured && !before.write_measured && !before.read_measured);
    assert_eq!(
        before.write_bytes_per_second,
        rkllm::chat::DEFAULT_DISK_BYTES_PER_SECOND
    );
    assert_eq!(before.cache_bytes_per_unit, None);
    let mut chat = conversation();
    for t in 0..3 {
        turn(&mut session, &mut chat, &format!("Question {t}?"));
    }
    let after = session.cache_estimates().unwrap();
    assert!(after.prefill_measured && after.write_measured && after.read_measured);
    // Text mode counts bytes of prompt; the files hold 104 KiB per mock token.
    let runs = runs_of_model(&path);
    let stats = session.cache_stats().unwrap();
    assert_eq!(
        stats.saved_bytes,
        runs.iter().map(|r| r.cache_save_bytes).sum::<u64>()
    );
    assert_eq!(
        stats.loaded_bytes,
        runs.iter().map(|r| r.cache_load_bytes).sum::<u64>()
    );
    assert!(after.cache_bytes_per_unit.unwrap() > 1_000.0);
}
