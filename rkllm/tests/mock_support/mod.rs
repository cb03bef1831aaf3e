//! Helpers shared by the mock runtime's tests: a handle that destroys itself, a recording
//! callback, runs through the raw C table, and fd-level log capture.
#![allow(dead_code)]

use std::ffi::{c_void, CString};
use std::io::Read;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use rkllm::mock::{raw_api, MockModel, MockModelFile};
use rkllm_sys::{
    LLMCallState, LLMHandle, RKLLMInferParam, RKLLMInput, RKLLMParam, RKLLMResult, RkllmApi,
    RKLLM_INPUT_PROMPT,
};

pub fn api() -> RkllmApi {
    raw_api()
}

/// One callback as the test saw it.
#[derive(Debug, Clone)]
pub struct Event {
    pub state: LLMCallState,
    pub text: Option<Vec<u8>>,
    pub token_id: i32,
    pub thread: ThreadId,
    /// (values, embd_size, num_tokens) of a hidden-layer callback.
    pub hidden: Option<(Vec<f32>, i32, i32)>,
    pub hidden_ptr: usize,
}

/// Called inside the callback with the event and the number of events so far.
pub type Hook = Box<dyn Fn(&Event, usize) + Send + Sync>;

/// What a run's `userdata` points at.
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<Event>>,
    /// Called inside the callback after recording (e.g. to abort or probe the handle).
    pub hook: Option<Hook>,
}

impl Recorder {
    pub fn with_hook(hook: impl Fn(&Event, usize) + Send + Sync + 'static) -> Recorder {
        Recorder {
            events: Mutex::new(Vec::new()),
            hook: Some(Box::new(hook)),
        }
    }
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
    pub fn len(&self) -> usize {
        self.events.lock().unwrap().len()
    }
}

/// The callback registered at init: records into the `Recorder` behind `userdata`.
pub unsafe extern "C" fn record(
    result: *mut RKLLMResult,
    userdata: *mut c_void,
    state: LLMCallState,
) {
    // SAFETY: every run in these tests passes a live `Recorder` as userdata, and the runtime
    // passes a result valid for the duration of the call.
    let (rec, result) = unsafe { (&*(userdata as *const Recorder), &*result) };
    let text = (!result.text.is_null()).then(|| {
        // SAFETY: a non-null text is a NUL-terminated string valid during the callback.
        unsafe { std::ffi::CStr::from_ptr(result.text) }
            .to_bytes()
            .to_vec()
    });
    let h = result.last_hidden_layer;
    let hidden = (!h.hidden_states.is_null()).then(|| {
        let n = (h.embd_size as usize) * (h.num_tokens as usize);
        // SAFETY: the runtime states `num_tokens × embd_size` floats, valid during the call.
        (
            unsafe { std::slice::from_raw_parts(h.hidden_states, n) }.to_vec(),
            h.embd_size,
            h.num_tokens,
        )
    });
    let event = Event {
        state,
        text,
        token_id: result.token_id,
        thread: std::thread::current().id(),
        hidden,
        hidden_ptr: h.hidden_states as usize,
    };
    let n = {
        let mut events = rec.events.lock().unwrap();
        events.push(event.clone());
        events.len()
    };
    if let Some(hook) = &rec.hook {
        hook(&event, n);
    }
}

/// A mock handle, destroyed on drop.
pub struct Handle {
    pub raw: LLMHandle,
    pub model: PathBuf,
    /// The model file, removed after the handle is destroyed (when the test wrote it).
    pub file: Option<MockModelFile>,
}

// SAFETY: the handle is a registry id, never dereferenced; the mock's functions may be
// called on it from any thread.
unsafe impl Send for Handle {}
// SAFETY: as for Send: sharing the id across threads is sharing an integer.
unsafe impl Sync for Handle {}

impl Handle {
    pub fn addr(&self) -> usize {
        self.raw as usize
    }
    /// The raw handle (a method, so closures capture the whole `Sync` handle).
    pub fn ptr(&self) -> LLMHandle {
        self.raw
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: destroying a mock handle (even twice) is always defined.
        unsafe { (api().destroy)(self.raw) };
    }
}

/// Default parameters for `model`, edited by `edit`.
pub fn params(model: &CString, edit: impl FnOnce(&mut RKLLMParam)) -> RKLLMParam {
    // SAFETY: the mock's createDefaultParam takes nothing.
    let mut p = unsafe { (api().create_default_param)() };
    p.model_path = model.as_ptr();
    edit(&mut p);
    p
}

/// Calls `rkllm_init` with `param` and the recording callback.
pub fn init_raw(param: &mut RKLLMParam) -> (i32, LLMHandle) {
    let mut h: LLMHandle = std::ptr::null_mut();
    // SAFETY: valid out-pointer and param (its strings outlive the call).
    let rc = unsafe { (api().init)(&mut h, param, Some(record)) };
    (rc, h)
}

/// Writes `model` and opens it, panicking on failure.
pub fn open(model: MockModel) -> Handle {
    open_with(model, |_| {})
}

pub fn open_with(model: MockModel, edit: impl FnOnce(&mut RKLLMParam)) -> Handle {
    let file = model.write_temp_file().expect("write mock model");
    let mut handle = open_path(&file, edit);
    handle.file = Some(file);
    handle
}

pub fn open_path(path: &Path, edit: impl FnOnce(&mut RKLLMParam)) -> Handle {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut p = params(&c, edit);
    let (rc, h) = init_raw(&mut p);
    assert_eq!(rc, 0, "rkllm_init failed for {}", path.display());
    assert!(!h.is_null());
    Handle {
        raw: h,
        model: path.to_owned(),
        file: None,
    }
}

/// A prompt input (the CString must outlive the run).
pub fn prompt_input(prompt: &CString) -> RKLLMInput {
    let mut input = RKLLMInput {
        input_type: RKLLM_INPUT_PROMPT,
        ..Default::default()
    };
    input.__bindgen_anon_1.prompt_input = prompt.as_ptr();
    input
}

/// Runs `input` with `infer` on `h`, recording into `rec`.
pub fn run_input(
    h: &Handle,
    input: &mut RKLLMInput,
    infer: &mut RKLLMInferParam,
    rec: &Recorder,
) -> i32 {
    // SAFETY: input, infer and the recorder outlive the blocking call.
    unsafe { (api().run)(h.raw, input, infer, rec as *const Recorder as *mut c_void) }
}

/// Runs a text prompt in generate mode; returns the code and the events.
pub fn run_prompt(h: &Handle, prompt: &str) -> (i32, Vec<Event>) {
    let rec = Recorder::default();
    let rc = run_prompt_with(h, prompt, &rec);
    (rc, rec.events())
}

pub fn run_prompt_with(h: &Handle, prompt: &str, rec: &Recorder) -> i32 {
    let c = CString::new(prompt).unwrap();
    let mut input = prompt_input(&c);
    let mut infer = RKLLMInferParam::default();
    run_input(h, &mut input, &mut infer, rec)
}

/// The concatenated text of NORMAL and WAITING callbacks.
pub fn text_of(events: &[Event]) -> Vec<u8> {
    events
        .iter()
        .filter(|e| {
            e.state == rkllm_sys::RKLLM_RUN_NORMAL || e.state == rkllm_sys::RKLLM_RUN_WAITING
        })
        .flat_map(|e| e.text.clone().unwrap_or_default())
        .collect()
}

pub fn states(events: &[Event]) -> Vec<LLMCallState> {
    events.iter().map(|e| e.state).collect()
}

pub fn count(events: &[Event], state: LLMCallState) -> usize {
    events.iter().filter(|e| e.state == state).count()
}

/// Polls `cond` until it holds, panicking after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "condition not reached within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Serialises every test that captures descriptors 1 and 2 (or that must not write while
/// another captures).
static LOG_LOCK: Mutex<()> = Mutex::new(());

pub fn log_lock() -> MutexGuard<'static, ()> {
    LOG_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Text written to descriptors 1 and 2 while `f` ran.
pub struct Captured {
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Redirects descriptors 1 and 2 into pipes while `f` runs (restoring them on every path,
/// panics included) and returns what was written. Hold [`log_lock`] around it.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Captured) {
    struct Redirect {
        saved: [i32; 2],
        readers: Vec<std::thread::JoinHandle<String>>,
    }
    impl Redirect {
        fn restore(&mut self) -> Vec<String> {
            for (fd, saved) in [1, 2].into_iter().zip(self.saved) {
                if saved >= 0 {
                    // SAFETY: `saved` is our duplicate of the original descriptor; putting it
                    // back closes the pipe's write end that sat on `fd`.
                    unsafe {
                        libc::dup2(saved, fd);
                        libc::close(saved);
                    }
                }
            }
            self.saved = [-1, -1];
            self.readers
                .drain(..)
                .map(|r| r.join().unwrap_or_default())
                .collect()
        }
    }
    impl Drop for Redirect {
        fn drop(&mut self) {
            self.restore();
        }
    }
    let mut redirect = Redirect {
        saved: [-1, -1],
        readers: Vec::new(),
    };
    for (i, fd) in [1, 2].into_iter().enumerate() {
        let mut pipe = [0i32; 2];
        // SAFETY: plain descriptor juggling on descriptors this function owns; `fd` is
        // duplicated before being replaced and restored by `Redirect`.
        unsafe {
            assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
            redirect.saved[i] = libc::dup(fd);
            assert!(redirect.saved[i] >= 0);
            assert!(libc::dup2(pipe[1], fd) >= 0);
            libc::close(pipe[1]);
        }
        // SAFETY: `pipe[0]` is a fresh descriptor this function owns; the File closes it.
        let mut reader = unsafe { std::fs::File::from_raw_fd(pipe[0]) };
        redirect.readers.push(std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = reader.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        }));
    }
    let r = f();
    let mut out = redirect.restore();
    let stderr = out.pop().unwrap_or_default();
    let stdout = out.pop().unwrap_or_default();
    (r, Captured { stdout, stderr })
}
