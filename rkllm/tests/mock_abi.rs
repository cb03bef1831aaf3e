//! The mock runtime through its raw C table: defaults, handles, runs, callbacks, threads.

mod mock_support;

use std::ffi::{c_void, CStr, CString};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use mock_support::*;
use rkllm::mock::{
    last_run_stats, live_handles_of_model, AfterLastTurn, BuiltinTokenizer, MockModel,
    DEFAULT_ANSWER, END_OF_TURN_ID, NO_TOKEN,
};
use rkllm::settings::{CallbackThread, FinishText, RunningSense};
use rkllm_sys::{
    RKLLMInferParam, RKLLMInput, RKLLMLoraAdapter, RKLLM_RUN_FINISH, RKLLM_RUN_NORMAL,
};

#[test]
fn default_params_match_the_runtime() {
    // SAFETY: takes nothing, returns a value.
    let p = unsafe { (api().create_default_param)() };
    assert!(p.model_path.is_null());
    assert_eq!(
        (p.max_context_len, p.max_new_tokens, p.top_k),
        (512, -1, 40)
    );
    assert_eq!((p.top_p, p.temperature, p.repeat_penalty), (0.9, 0.8, 1.1));
    assert_eq!(
        (p.frequency_penalty, p.presence_penalty, p.mirostat),
        (0.0, 0.0, 0)
    );
    assert_eq!((p.mirostat_tau, p.mirostat_eta), (5.0, 0.1));
    assert!(p.skip_special_token);
    assert!(!p.is_async);
    for s in [p.img_start, p.img_end, p.img_content] {
        assert!(!s.is_null());
        // SAFETY: non-null, a static NUL-terminated string.
        assert_eq!(unsafe { CStr::from_ptr(s) }.to_bytes(), b"");
    }
    assert_eq!(p.extend_param.base_domain_id, 0);
    assert!(p.extend_param.reserved.iter().all(|&b| b == 0));
}

#[test]
fn library_origin_names_the_mock() {
    let rt = rkllm::Runtime::mock();
    assert!(rt.is_mock());
    assert_eq!(rt.origin(), rkllm::mock::ORIGIN);
}

#[test]
fn a_run_delivers_one_normal_per_token_then_one_finish() {
    let h = open(MockModel::new().answer("Hello there, world!"));
    let (rc, events) = run_prompt(&h, "Hi");
    assert_eq!(rc, 0);
    let expected: Vec<i32> = BuiltinTokenizer
        .encode("Hello there, world!")
        .into_iter()
        .chain([END_OF_TURN_ID])
        .collect();
    let tokens: Vec<_> = events
        .iter()
        .filter(|e| e.state == RKLLM_RUN_NORMAL)
        .collect();
    assert_eq!(
        tokens.iter().map(|e| e.token_id).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(text_of(&events), b"Hello there, world!");
    // skip_special_token (default true) hides <end_of_turn>'s text but not its id.
    assert_eq!(tokens.last().unwrap().text.as_deref(), Some(&b""[..]));
    assert_eq!(count(&events, RKLLM_RUN_FINISH), 1);
    let finish = events.last().unwrap();
    assert_eq!(finish.state, RKLLM_RUN_FINISH);
    assert_eq!(finish.text, None);
    assert_eq!(finish.token_id, NO_TOKEN);
    let stats = last_run_stats(h.raw).unwrap();
    assert_eq!(stats.prompt_tokens, BuiltinTokenizer.encode("Hi").len());
    assert_eq!(stats.generated_tokens, expected.len());
    assert!(stats.finished);
}

#[test]
fn special_token_text_shows_without_skip_special_token() {
    let h = open_with(MockModel::new().answer("ok"), |p| {
        p.skip_special_token = false
    });
    let (_, events) = run_prompt(&h, "x");
    assert_eq!(text_of(&events), b"ok<end_of_turn>");
}

#[test]
fn callbacks_come_from_a_runtime_thread_and_userdata_is_passed_through() {
    let h = open(MockModel::new());
    let rec = Recorder::default();
    let rc = run_prompt_with(&h, "hello", &rec);
    assert_eq!(rc, 0);
    let events = rec.events();
    assert!(events.len() > 2);
    let me = std::thread::current().id();
    assert!(
        events.iter().all(|e| e.thread != me),
        "a callback ran on the caller's thread"
    );
    assert!(
        events.iter().all(|e| e.thread == events[0].thread),
        "callbacks from several threads"
    );
    // A second run uses the same worker.
    let rec2 = Recorder::default();
    run_prompt_with(&h, "again", &rec2);
    assert_eq!(rec2.events()[0].thread, events[0].thread);
}

#[test]
fn caller_thread_knob_calls_back_on_the_caller() {
    let h = open(MockModel::new().with_runtime(|r| r.callback_thread = CallbackThread::Caller));
    let (rc, events) = run_prompt(&h, "hello");
    assert_eq!(rc, 0);
    let me = std::thread::current().id();
    assert!(!events.is_empty() && events.iter().all(|e| e.thread == me));
}

#[test]
fn max_new_tokens_and_context_limit_stop_generation() {
    let answer = "one two three four five six seven eight";
    let n_answer = BuiltinTokenizer.encode(answer).len() + 1;
    let h = open_with(MockModel::new().answer(answer), |p| p.max_new_tokens = 3);
    let (rc, events) = run_prompt(&h, "q");
    assert_eq!(
        (
            rc,
            count(&events, RKLLM_RUN_NORMAL),
            count(&events, RKLLM_RUN_FINISH)
        ),
        (0, 3, 1)
    );

    let h = open_with(MockModel::new().answer("x"), |p| p.max_new_tokens = 0);
    let (rc, events) = run_prompt(&h, "q");
    assert_eq!((rc, states(&events)), (0, vec![RKLLM_RUN_FINISH]));

    // The prompt (4 tokens) plus the answer may not exceed max_context_len (10).
    let prompt = "aaaa bbbb"; // "aaaa", " ", "bbbb" = 3 tokens
    let p_len = BuiltinTokenizer.encode(prompt).len();
    let h = open_with(MockModel::new().answer(answer), |p| p.max_context_len = 10);
    let (_, events) = run_prompt(&h, prompt);
    assert_eq!(count(&events, RKLLM_RUN_NORMAL), (10 - p_len).min(n_answer));

    // A prompt exactly the context's size leaves no room: FINISH only.
    let h = open_with(MockModel::new(), |p| p.max_context_len = p_len as i32);
    let (rc, events) = run_prompt(&h, prompt);
    assert_eq!((rc, states(&events)), (0, vec![RKLLM_RUN_FINISH]));
}

#[test]
fn without_stopping_at_end_of_turn_the_model_runs_on() {
    let model = MockModel::new()
        .answer("ab")
        .with_runtime(|r| r.stops_at_end_of_turn = false);
    let h = open_with(model.clone(), |p| p.max_new_tokens = 7);
    let (_, events) = run_prompt(&h, "q");
    let ids: Vec<i32> = events
        .iter()
        .filter(|e| e.state == RKLLM_RUN_NORMAL)
        .map(|e| e.token_id)
        .collect();
    let ab = BuiltinTokenizer.encode("ab")[0];
    assert_eq!(
        ids,
        vec![
            ab,
            END_OF_TURN_ID,
            ab,
            END_OF_TURN_ID,
            ab,
            END_OF_TURN_ID,
            ab
        ]
    );
    // Unlimited tokens: until the context is full.
    let h = open_with(model, |p| p.max_context_len = 20);
    let (_, events) = run_prompt(&h, "q");
    assert_eq!(count(&events, RKLLM_RUN_NORMAL), 19);
}

#[test]
fn scripted_turns_repeat_or_cycle() {
    let answers = |model: MockModel| {
        let h = open(model);
        (0..4)
            .map(|_| String::from_utf8(text_of(&run_prompt(&h, "q").1)).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        answers(MockModel::new().turns(["a", "b"])),
        ["a", "b", "b", "b"]
    );
    assert_eq!(
        answers(MockModel::new().turns_then(["a", "b"], AfterLastTurn::Cycle)),
        ["a", "b", "a", "b"]
    );
}

#[test]
fn echo_answers_the_last_user_turn_or_the_whole_prompt() {
    let h = open(MockModel::new().echo());
    let prompt = "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nWhat is 2+2? Ça va?<end_of_turn>\n<start_of_turn>model\n";
    let (_, events) = run_prompt(&h, prompt);
    assert_eq!(
        String::from_utf8(text_of(&events)).unwrap(),
        "What is 2+2? Ça va?"
    );
    let (_, events) = run_prompt(&h, "just text");
    assert_eq!(text_of(&events), b"just text");
}

#[test]
fn text_mode_adds_bos_only_when_the_knob_says_so() {
    let prompt = "<bos><start_of_turn>user\nHi<end_of_turn>\n";
    let n = BuiltinTokenizer.encode(prompt).len();
    let h = open(MockModel::new());
    run_prompt(&h, prompt);
    assert_eq!(last_run_stats(h.raw).unwrap().prompt_tokens, n);
    let h = open(MockModel::new().with_runtime(|r| r.adds_bos = rkllm::settings::AddsBos::Always));
    run_prompt(&h, prompt);
    assert_eq!(last_run_stats(h.raw).unwrap().prompt_tokens, n + 1);
}

#[test]
fn finish_text_can_be_empty() {
    let h = open(MockModel::new().with_runtime(|r| r.finish_text = FinishText::Empty));
    let (_, events) = run_prompt(&h, "q");
    assert_eq!(events.last().unwrap().text.as_deref(), Some(&b""[..]));
}

#[test]
fn is_running_is_zero_during_a_run_in_both_senses_as_configured() {
    for (sense, during, idle) in [
        (RunningSense::ZeroWhileRunning, 0, 1),
        (RunningSense::NonZeroWhileRunning, 1, 0),
    ] {
        let h = Arc::new(open(
            MockModel::new().with_runtime(|r| r.is_running_sense = sense),
        ));
        // SAFETY: a live mock handle.
        assert_eq!(unsafe { (api().is_running)(h.raw) }, idle);
        let seen = Arc::new(AtomicI32::new(-5));
        let (h2, seen2) = (Arc::clone(&h), Arc::clone(&seen));
        let rec = Recorder::with_hook(move |_, n| {
            if n == 1 {
                // SAFETY: a live mock handle.
                seen2.store(unsafe { (api().is_running)(h2.raw) }, Ordering::SeqCst);
            }
        });
        assert_eq!(run_prompt_with(&h, "q", &rec), 0);
        assert_eq!(seen.load(Ordering::SeqCst), during);
        // SAFETY: a live mock handle.
        assert_eq!(unsafe { (api().is_running)(h.raw) }, idle);
    }
}

#[test]
fn a_second_run_on_a_busy_handle_fails() {
    let h = Arc::new(open(MockModel::new()));
    let inner = Arc::new(AtomicI32::new(5));
    let (h2, inner2) = (Arc::clone(&h), Arc::clone(&inner));
    let rec = Recorder::with_hook(move |_, n| {
        if n == 1 {
            let nested = Recorder::default();
            inner2.store(run_prompt_with(&h2, "nested", &nested), Ordering::SeqCst);
        }
    });
    assert_eq!(run_prompt_with(&h, "q", &rec), 0);
    assert_eq!(inner.load(Ordering::SeqCst), -1);
}

#[test]
fn null_and_destroyed_handles_fail_every_call() {
    let h = open(MockModel::new());
    let raw = h.raw;
    let made_up = 0x1234usize as *mut c_void;
    let a = api();
    drop(h); // destroys
    let prompt = CString::new("q").unwrap();
    let path = CString::new("/").unwrap();
    for handle in [std::ptr::null_mut(), raw, made_up] {
        let mut input = prompt_input(&prompt);
        let mut infer = RKLLMInferParam::default();
        let mut lora = RKLLMLoraAdapter {
            lora_adapter_path: path.as_ptr(),
            lora_adapter_name: path.as_ptr(),
            scale: 1.0,
        };
        // SAFETY: every pointer is valid; the handles are NULL, destroyed or made up, which
        // the mock must reject without touching memory.
        unsafe {
            assert_eq!(
                (a.run)(handle, &mut input, &mut infer, std::ptr::null_mut()),
                -1
            );
            assert_eq!(
                (a.run_async)(handle, &mut input, &mut infer, std::ptr::null_mut()),
                -1
            );
            assert_eq!((a.abort)(handle), -1);
            assert_eq!((a.is_running)(handle), -1);
            assert_eq!((a.destroy)(handle), -1);
            assert_eq!((a.load_lora)(handle, &mut lora), -1);
            assert_eq!((a.load_prompt_cache)(handle, path.as_ptr()), -1);
            assert_eq!((a.release_prompt_cache)(handle), -1);
        }
    }
}

#[test]
fn destroy_joins_the_worker_and_forgets_the_handle() {
    let h = open(MockModel::new());
    assert_eq!(live_handles_of_model(&h.model), 1);
    let (_, events) = run_prompt(&h, "q");
    let worker = events[0].thread;
    let model = h.model.clone();
    drop(h);
    assert_eq!(live_handles_of_model(&model), 0);
    assert_ne!(worker, std::thread::current().id());
}

#[test]
fn run_async_returns_at_once_and_calls_back_from_the_worker() {
    let h = open(
        MockModel::new()
            .answer("a b c d e f")
            .decode_seconds_per_token(0.05),
    );
    let rec = Box::new(Recorder::default());
    let rc;
    let events_at_return;
    let running_at_return;
    {
        let prompt = CString::new("hello").unwrap();
        let mut input = prompt_input(&prompt);
        let mut infer = RKLLMInferParam::default();
        // SAFETY: the recorder outlives the run (we wait for idle below); input and infer
        // are copied before run_async returns, and die at the end of this block.
        rc = unsafe {
            (api().run_async)(
                h.raw,
                &mut input,
                &mut infer,
                &*rec as *const Recorder as *mut c_void,
            )
        };
        events_at_return = rec.len();
        // SAFETY: a live mock handle.
        running_at_return = unsafe { (api().is_running)(h.raw) };
    }
    assert_eq!(rc, 0);
    // 12 callbacks at 50 ms each: a blocking call would have delivered them all.
    assert!(
        events_at_return < 12,
        "run_async blocked until {events_at_return} callbacks"
    );
    assert_eq!(running_at_return, 0, "is_running: 0 while the task runs");
    wait_until(std::time::Duration::from_secs(60), || {
        // SAFETY: a live mock handle.
        unsafe { (api().is_running)(h.raw) == 1 }
    });
    let events = rec.events();
    assert_eq!(text_of(&events), b"a b c d e f");
    assert_eq!(count(&events, RKLLM_RUN_FINISH), 1);
    assert!(events
        .iter()
        .all(|e| e.thread != std::thread::current().id()));
}

#[test]
fn embed_answers_the_script_even_for_echo_models() {
    let dim = 4;
    let h = open(MockModel::new().echo().embed_dim(dim));
    let mut data = vec![0.5f32; 3 * dim];
    let mut input = RKLLMInput {
        input_type: rkllm_sys::RKLLM_INPUT_EMBED,
        ..Default::default()
    };
    input.__bindgen_anon_1.embed_input = rkllm_sys::RKLLMEmbedInput {
        embed: data.as_mut_ptr(),
        n_tokens: 3,
    };
    let rec = Recorder::default();
    assert_eq!(
        run_input(&h, &mut input, &mut RKLLMInferParam::default(), &rec),
        0
    );
    assert_eq!(text_of(&rec.events()), DEFAULT_ANSWER.as_bytes());
    assert_eq!(last_run_stats(h.raw).unwrap().prompt_tokens, 3);
}
