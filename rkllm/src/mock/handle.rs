//! Handles: the registry that maps an `LLMHandle` to a loaded model, and each handle's worker
//! thread.
//!
//! A handle is a registry id cast to a pointer, never a pointer to memory: a call on a
//! destroyed, NULL or made-up handle finds nothing in the registry and returns -1 instead of
//! touching freed memory.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use rkllm_sys::{LLMHandle, LLMResultCallback};

use super::input::{Infer, Input};
use super::memory::Reservation;
use super::model_file::MockModel;
use super::tokenizer::Tokenize;

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical
/// section here is a handful of plain assignments).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A model file as loaded by `rkllm_init`.
pub(crate) struct LoadedModel {
    /// The file, made absolute when possible.
    pub(crate) path: PathBuf,
    /// Its contents.
    pub(crate) spec: MockModel,
    /// Its tokenizer.
    pub(crate) tokenizer: Box<dyn Tokenize>,
    /// What prompt caches record to refuse another model's cache.
    pub(crate) identity: String,
}

/// The `RKLLMParam` values the runtime keeps (it copies them at init; the caller's struct
/// may die right after).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) max_context_len: usize,
    /// `None` = unlimited (any negative `max_new_tokens`).
    pub(crate) max_new_tokens: Option<usize>,
    pub(crate) skip_special_token: bool,
    pub(crate) log_level: u32,
}

/// What a handle accumulates between runs.
#[derive(Debug, Default)]
pub(crate) struct HandleState {
    /// Loaded LoRA adapters by name: (path, scale).
    pub(crate) loras: BTreeMap<String, (PathBuf, f32)>,
    /// The loaded prompt cache's token ids.
    pub(crate) prompt_cache: Option<Vec<i32>>,
    /// Runs that got past their input checks.
    pub(crate) runs: u64,
    /// Runs that generated an answer (for scripted turns).
    pub(crate) answered: u64,
}

/// One loaded model: what a handle stands for.
pub(crate) struct Instance {
    /// The handle's value.
    pub(crate) id: usize,
    pub(crate) model: LoadedModel,
    pub(crate) settings: Settings,
    /// The callback bound at init.
    pub(crate) callback: LLMResultCallback,
    /// A task is in flight (from `rkllm_run`'s start to the end of its last callback).
    pub(crate) running: AtomicBool,
    /// `rkllm_abort` was called during the task in flight.
    pub(crate) abort: AtomicBool,
    /// `rkllm_destroy` was called; queued work is dropped.
    pub(crate) destroyed: AtomicBool,
    pub(crate) state: Mutex<HandleState>,
    /// Held while a run executes, so `rkllm_destroy` can wait for it.
    pub(crate) run_gate: Mutex<()>,
    worker: Mutex<Option<Worker>>,
    memory: Mutex<Option<Reservation>>,
}

/// A handle's worker thread and its job queue.
struct Worker {
    jobs: Sender<Job>,
    thread: JoinHandle<()>,
}

/// A caller's `userdata`, carried to the worker thread.
#[derive(Clone, Copy)]
pub(crate) struct UserData(pub(crate) *mut libc::c_void);

// SAFETY: the mock never dereferences `userdata`; it only hands it back to the caller's
// callback, which the C contract allows to run on any thread of the runtime.
unsafe impl Send for UserData {}

/// A run for the worker.
pub(crate) struct Job {
    pub(crate) instance: Arc<Instance>,
    pub(crate) input: Input,
    pub(crate) infer: Infer,
    pub(crate) userdata: UserData,
    /// Where to send `rkllm_run`'s return code; `None` for `rkllm_run_async`.
    pub(crate) reply: Option<Sender<i32>>,
}

static REGISTRY: Mutex<Option<HashMap<usize, Arc<Instance>>>> = Mutex::new(None);
/// Handle values start high and step by 16 so they look like (and never collide with) small
/// integers a caller might pass by mistake; they are never reused.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0x10_0000);

thread_local! {
    /// The handle whose run this thread is executing (and calling back for), 0 if none.
    static CURRENT_RUN: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as executing a run of `id` until dropped.
pub(crate) struct RunScope {
    previous: usize,
}

impl RunScope {
    pub(crate) fn enter(id: usize) -> RunScope {
        RunScope {
            previous: CURRENT_RUN.with(|c| c.replace(id)),
        }
    }
}

impl Drop for RunScope {
    fn drop(&mut self) {
        CURRENT_RUN.with(|c| c.set(self.previous));
    }
}

/// Whether the current thread is inside a run (a callback) of `id`.
pub(crate) fn in_run_of(id: usize) -> bool {
    CURRENT_RUN.with(|c| c.get()) == id
}

impl Instance {
    /// Creates the instance with its worker thread, registers it and returns its handle.
    /// The worker runs each job with `execute` (the engine's, passed in by init so this
    /// module does not depend on the engine that depends on it).
    pub(crate) fn start(
        model: LoadedModel,
        settings: Settings,
        callback: LLMResultCallback,
        memory: Reservation,
        execute: fn(Job) -> i32,
    ) -> std::io::Result<LLMHandle> {
        let id = NEXT_ID.fetch_add(0x10, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let thread = std::thread::Builder::new()
            .name(format!("rkllm-mock-{id:x}"))
            .spawn(move || {
                // The worker holds no reference to its instance between jobs, so dropping
                // the sender (at destroy) ends this loop.
                for job in rx {
                    execute(job);
                }
            })?;
        let instance = Arc::new(Instance {
            id,
            model,
            settings,
            callback,
            running: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            destroyed: AtomicBool::new(false),
            state: Mutex::new(HandleState::default()),
            run_gate: Mutex::new(()),
            worker: Mutex::new(Some(Worker { jobs: tx, thread })),
            memory: Mutex::new(Some(memory)),
        });
        lock(&REGISTRY)
            .get_or_insert_with(HashMap::new)
            .insert(id, instance);
        Ok(id as LLMHandle)
    }

    /// Queues a job on the worker; false when the worker is gone (destroyed).
    pub(crate) fn submit(&self, job: Job) -> bool {
        match lock(&self.worker).as_ref() {
            Some(w) => w.jobs.send(job).is_ok(),
            None => false,
        }
    }

    /// `rkllm_destroy`: aborts the task in flight, waits for it (unless called from one of
    /// its own callbacks), stops the worker and gives the NPU memory back.
    fn shut_down(&self) {
        self.destroyed.store(true, Ordering::SeqCst);
        if self.running.load(Ordering::SeqCst) {
            self.abort.store(true, Ordering::SeqCst);
        }
        let own_callback = in_run_of(self.id);
        if !own_callback {
            drop(lock(&self.run_gate));
        }
        let worker = lock(&self.worker).take();
        if let Some(w) = worker {
            drop(w.jobs);
            if !own_callback && std::thread::current().id() != w.thread.thread().id() {
                // The worker only ends its loop; a panic there was already caught per job.
                let _ = w.thread.join();
            }
        }
        lock(&self.memory).take();
    }
}

/// The instance behind `handle`, if it is a live mock handle.
pub(crate) fn get(handle: LLMHandle) -> Option<Arc<Instance>> {
    lock(&REGISTRY).as_ref()?.get(&(handle as usize)).cloned()
}

/// `rkllm_destroy`: false when `handle` is not a live handle.
pub(crate) fn destroy(handle: LLMHandle) -> bool {
    let instance = lock(&REGISTRY)
        .as_mut()
        .and_then(|r| r.remove(&(handle as usize)));
    match instance {
        Some(i) => {
            i.shut_down();
            true
        }
        None => false,
    }
}

/// Handles alive in the process.
pub(crate) fn live_count() -> usize {
    lock(&REGISTRY).as_ref().map_or(0, HashMap::len)
}

/// Handles alive in this process for the model file at `path` (however the path is
/// spelled). A test can check with it that a wrapper destroyed every handle it created.
pub fn live_handles_of_model(path: impl AsRef<Path>) -> usize {
    let want = super::stats::normalise(path.as_ref());
    lock(&REGISTRY)
        .as_ref()
        .map_or(0, |r| r.values().filter(|i| i.model.path == want).count())
}
