//! Injected and real failures, with the log lines the runtime prints for them. Every test here
//! holds the log lock, so no other test of this binary writes to descriptors 1 and 2 while one
//! captures them.

mod mock_support;

use std::ffi::CString;

use mock_support::*;
use rkllm::mock::{last_run_stats, InitFailure, LogStream, MockModel, RunFailure};
use rkllm::settings::{ContextOverflow, SecondModel};
use rkllm_sys::{LLMHandle, RKLLM_RUN_ERROR, RKLLM_RUN_FINISH, RKLLM_RUN_NORMAL};

const VERSION_LINE: &str =
    "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.8, platform: RK3588\n";

/// Inits `model` with fds captured; returns (rc, handle, captured).
fn init_captured(
    model: &MockModel,
    edit: impl FnOnce(&mut rkllm_sys::RKLLMParam),
) -> (i32, LLMHandle, Captured) {
    let path = model.write_temp_file().unwrap();
    init_path_captured(&path, edit)
}

fn init_path_captured(
    path: &std::path::Path,
    edit: impl FnOnce(&mut rkllm_sys::RKLLMParam),
) -> (i32, LLMHandle, Captured) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut p = params(&c, edit);
    let ((rc, h), cap) = capture(|| init_raw(&mut p));
    (rc, h, cap)
}

/// Asserts that `text` has a line matching `E RKNN: [hh:mm:ss.mmm] <msg>`.
fn assert_rknn_line(text: &str, msg: &str) {
    let found = text.lines().any(|l| {
        l.strip_prefix("E RKNN: [")
            .and_then(|r| r.split_once("] "))
            .is_some_and(|(ts, m)| {
                m == msg
                    && ts.len() == 12
                    && ts.chars().enumerate().all(|(i, c)| match i {
                        2 | 5 => c == ':',
                        8 => c == '.',
                        _ => c.is_ascii_digit(),
                    })
            })
    });
    assert!(found, "no `E RKNN: [ts] {msg}` line in:\n{text}");
}

#[test]
fn every_init_failure_prints_the_runtimes_lines_and_fails() {
    let _l = log_lock();
    let cases: Vec<(InitFailure, Vec<&str>)> = vec![
        (
            InitFailure::NpuOutOfMemory { requested_bytes: 232_128_512 },
            vec![
                "failed to allocate handle, ret: -1, errno: 14, errstr: Bad address",
                "failed to malloc npu memory, size: 232128512, flags: 0x2",
                "load model file error!",
            ],
        ),
        (
            InitFailure::TooManyOpenFiles,
            vec![
                "failed to convert handle(1020) to fd, ret: -1, errno: 24, errstr: Too many open files",
                "load model file error!",
            ],
        ),
        (InitFailure::InvalidModelMagic, vec!["invalid rknn llm model magic", "load model file error!"]),
        (
            InitFailure::WeightMemoryForDomain { domain: 1 },
            vec!["can not create weight memory for domain1"],
        ),
    ];
    for (failure, lines) in cases {
        let (rc, h, cap) = init_captured(&MockModel::new().fail_init(failure.clone()), |_| {});
        assert_eq!(rc, -1, "{failure:?}");
        assert!(h.is_null(), "{failure:?} left a handle");
        assert!(
            cap.stdout.contains(VERSION_LINE),
            "{failure:?}: {}",
            cap.stdout
        );
        for line in lines {
            assert_rknn_line(&cap.stderr, line);
        }
    }
}

#[test]
fn error_lines_can_go_to_stdout() {
    let _l = log_lock();
    let model = MockModel::new()
        .fail_init(InitFailure::InvalidModelMagic)
        .with_runtime(|r| r.error_log = LogStream::Stdout);
    let (rc, _, cap) = init_captured(&model, |_| {});
    assert_eq!(rc, -1);
    assert_rknn_line(&cap.stdout, "invalid rknn llm model magic");
    assert!(!cap.stderr.contains("invalid rknn llm model magic"));
}

#[test]
fn an_old_driver_is_warned_about_before_the_version_line() {
    let _l = log_lock();
    let model = MockModel::new()
        .driver_version("0.8.2")
        .fail_init(InitFailure::NpuOutOfMemory {
            requested_bytes: 3_087_138_816,
        });
    let (rc, _, cap) = init_captured(&model, |_| {});
    assert_eq!(rc, -1);
    let expected =
        "W rkllm: Warning: Your rknpu driver version is too low, please upgrade to 0.9.7.\n\
         I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.8.2, platform: RK3588\n";
    // Only the runtime's lines: the test harness's own `test … ok` lines, written to the
    // same descriptor meanwhile, may land between them.
    let runtime: String = cap
        .stdout
        .lines()
        .filter(|l| l.contains(" rkllm: "))
        .flat_map(|l| [l, "\n"])
        .collect();
    assert!(runtime.contains(expected), "{}", cap.stdout);
    assert_rknn_line(
        &cap.stderr,
        "failed to malloc npu memory, size: 3087138816, flags: 0x2",
    );
    // A new enough driver: no warning.
    let (rc, h, cap) = init_captured(&MockModel::new().driver_version("0.9.7"), |_| {});
    assert_eq!(rc, 0);
    drop(Handle {
        raw: h,
        model: Default::default(),
        file: None,
    });
    assert!(!cap.stdout.contains("too low"));
    assert!(cap.stdout.contains("rknpu driver version: 0.9.7,"));
}

#[test]
fn init_can_return_success_with_a_null_handle() {
    let _l = log_lock();
    let (rc, h, cap) = init_captured(&MockModel::new().fail_init(InitFailure::NullHandle), |_| {});
    assert_eq!(rc, 0);
    assert!(h.is_null());
    assert!(cap.stdout.contains(VERSION_LINE));
    assert!(!cap.all().contains("E "), "{}", cap.all());
}

#[test]
fn init_rejects_missing_and_foreign_model_files() {
    let _l = log_lock();
    let missing = std::env::temp_dir().join("rkllm-mock-does-not-exist.rkllm");
    let (rc, h, cap) = init_path_captured(&missing, |_| {});
    assert_eq!(rc, -1);
    assert!(h.is_null());
    assert!(cap.stdout.contains(VERSION_LINE));
    assert!(
        cap.stderr.contains("failed to open model file"),
        "{}",
        cap.stderr
    );
    assert_rknn_line(&cap.stderr, "load model file error!");

    // A real model file (binary) or any non-mock file: bad magic.
    let foreign =
        std::env::temp_dir().join(format!("rkllm-mock-foreign-{}.rkllm", std::process::id()));
    std::fs::write(&foreign, b"RKLLM\x01\x00\x00binary weights").unwrap();
    let (rc, _, cap) = init_path_captured(&foreign, |_| {});
    assert_eq!(rc, -1);
    assert_rknn_line(&cap.stderr, "invalid rknn llm model magic");
    assert_rknn_line(&cap.stderr, "load model file error!");
    // JSON without the mock's format marker is foreign too.
    std::fs::write(&foreign, br#"{"format": "something-else"}"#).unwrap();
    let (rc, _, cap) = init_path_captured(&foreign, |_| {});
    assert_eq!(rc, -1);
    assert_rknn_line(&cap.stderr, "invalid rknn llm model magic");
    // A mock file with a bad value says what is wrong.
    std::fs::write(
        &foreign,
        br#"{"format": "rkllm-mock-model", "version": 1, "embd": 3}"#,
    )
    .unwrap();
    let (rc, _, cap) = init_path_captured(&foreign, |_| {});
    assert_eq!(rc, -1);
    assert!(
        cap.stderr.contains("E rkllm: invalid mock model file") && cap.stderr.contains("embd"),
        "{}",
        cap.stderr
    );
    std::fs::remove_file(&foreign).ok();
}

#[test]
fn init_rejects_null_pointers() {
    let _l = log_lock();
    let path = MockModel::new().write_temp_file().unwrap();
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut p = params(&c, |_| {});
    let a = api();
    let (rc, cap) = capture(|| {
        // SAFETY: a NULL handle pointer with a valid param: the mock must refuse it.
        unsafe { (a.init)(std::ptr::null_mut(), &mut p, Some(record)) }
    });
    assert_eq!(rc, -1);
    assert!(cap.stderr.contains("E rkllm: rkllm_init: handle is NULL"));
    let mut h: LLMHandle = 0x99usize as LLMHandle;
    let (rc, cap) = capture(|| {
        // SAFETY: a NULL param with a valid handle pointer: the mock must refuse it.
        unsafe { (a.init)(&mut h, std::ptr::null_mut(), Some(record)) }
    });
    assert_eq!(rc, -1);
    assert!(h.is_null(), "a failed init leaves the handle NULL");
    assert!(cap.stdout.contains(VERSION_LINE));
    assert!(cap.stderr.contains("param is NULL"));
    let mut p = params(&c, |p| p.model_path = std::ptr::null());
    let ((rc, _), cap) = capture(|| init_raw(&mut p));
    assert_eq!(rc, -1);
    assert_rknn_line(&cap.stderr, "load model file error!");
}

#[test]
fn init_rejects_a_nonsensical_context_length() {
    let _l = log_lock();
    let model = MockModel::new().max_context_limit(1024);
    for bad in [0, -5, 1025] {
        let (rc, h, cap) = init_captured(&model, |p| p.max_context_len = bad);
        assert_eq!(rc, -1, "max_context_len {bad}");
        assert!(h.is_null());
        assert!(
            cap.stderr
                .contains(&format!("E rkllm: max_context_len {bad} is invalid"))
                && cap.stderr.contains("max_context_limit 1024"),
            "{}",
            cap.stderr
        );
    }
    let (rc, h, _) = init_captured(&model, |p| p.max_context_len = 1024);
    assert_eq!(rc, 0);
    drop(Handle {
        raw: h,
        model: Default::default(),
        file: None,
    });
}

#[test]
fn a_json_tokenizer_without_the_feature_fails_init_clearly() {
    let _l = log_lock();
    let dir = std::env::temp_dir();
    let model = MockModel::new().tokenizer_json(dir.join("no-such-tokenizer.json"));
    let (rc, h, cap) = init_captured(&model, |_| {});
    assert_eq!(rc, -1);
    assert!(h.is_null());
    if cfg!(feature = "tokenizer") {
        assert!(
            cap.stderr.contains("failed to load tokenizer"),
            "{}",
            cap.stderr
        );
    } else {
        assert!(
            cap.stderr
                .contains("needs the rkllm crate feature `tokenizer`"),
            "{}",
            cap.stderr
        );
    }
    assert_rknn_line(&cap.stderr, "load model file error!");
}

#[test]
fn an_error_callback_after_n_tokens() {
    let _l = log_lock();
    let h = open(
        MockModel::new()
            .answer("a b c d e")
            .fail_runs(RunFailure::ErrorAfterTokens { tokens: 3 }),
    );
    let (rc, events) = run_prompt(&h, "q");
    assert_eq!(rc, -1);
    assert_eq!(
        states(&events),
        vec![
            RKLLM_RUN_NORMAL,
            RKLLM_RUN_NORMAL,
            RKLLM_RUN_NORMAL,
            RKLLM_RUN_ERROR
        ]
    );
    assert_eq!(events[3].text, None);
    assert!(last_run_stats(h.raw).unwrap().errored);
    // The return code after an error is a knob.
    let h = open(
        MockModel::new()
            .fail_runs(RunFailure::ErrorAfterTokens { tokens: 0 })
            .with_runtime(|r| r.run_return_after_error = 0),
    );
    let (rc, events) = run_prompt(&h, "q");
    assert_eq!((rc, states(&events)), (0, vec![RKLLM_RUN_ERROR]));
}

#[test]
fn a_run_can_return_an_error_without_callbacks() {
    let _l = log_lock();
    let h = open(MockModel::new().fail_runs(RunFailure::ReturnError));
    let ((rc, events), cap) = capture(|| run_prompt(&h, "q"));
    assert_eq!(rc, -1);
    assert!(events.is_empty());
    assert!(cap.stderr.contains("E rkllm: run failed"), "{}", cap.stderr);
}

#[test]
fn a_run_can_end_without_finish() {
    let _l = log_lock();
    let h = open(
        MockModel::new()
            .answer("abc")
            .fail_runs(RunFailure::NoFinish),
    );
    let (rc, events) = run_prompt(&h, "q");
    assert_eq!(rc, 0);
    assert_eq!(count(&events, RKLLM_RUN_FINISH), 0);
    assert_eq!(text_of(&events), b"abc");
}

#[test]
fn a_failure_can_target_one_run() {
    let _l = log_lock();
    let h = open(MockModel::new().fail_run(2, RunFailure::ReturnError));
    assert_eq!(run_prompt(&h, "q").0, 0);
    assert_eq!(run_prompt(&h, "q").0, -1);
    assert_eq!(run_prompt(&h, "q").0, 0);
}

#[test]
fn an_overlong_prompt_fails_truncates_or_errors_as_configured() {
    let _l = log_lock();
    let prompt = "w w w w w w w w w w"; // 19 tokens
    let h = open_with(MockModel::new(), |p| p.max_context_len = 8);
    let ((rc, events), cap) = capture(|| run_prompt(&h, prompt));
    assert_eq!(rc, -1);
    assert!(events.is_empty());
    assert!(
        cap.stderr
            .contains("E rkllm: the input has 19 tokens, more than max_context_len 8"),
        "{}",
        cap.stderr
    );

    let model = MockModel::new().with_runtime(|r| r.context_overflow = ContextOverflow::Truncated);
    let h = open_with(model, |p| p.max_context_len = 8);
    let (rc, events) = run_prompt(&h, prompt);
    assert_eq!(rc, 0);
    assert_eq!(last_run_stats(h.raw).unwrap().prompt_tokens, 7);
    assert_eq!(states(&events), vec![RKLLM_RUN_NORMAL, RKLLM_RUN_FINISH]);

    let model =
        MockModel::new().with_runtime(|r| r.context_overflow = ContextOverflow::ErrorCallback);
    let h = open_with(model, |p| p.max_context_len = 8);
    let (rc, events) = run_prompt(&h, prompt);
    assert_eq!((rc, states(&events)), (-1, vec![RKLLM_RUN_ERROR]));
}

#[test]
fn a_second_model_can_be_refused() {
    let _l = log_lock();
    let first = open(MockModel::new());
    let model = MockModel::new()
        .npu_memory_bytes(0)
        .with_runtime(|r| r.second_model = SecondModel::Refused);
    let (rc, h, cap) = init_captured(&model, |_| {});
    assert_eq!(rc, -1);
    assert!(h.is_null());
    assert_rknn_line(
        &cap.stderr,
        "failed to allocate handle, ret: -1, errno: 14, errstr: Bad address",
    );
    assert!(cap.stderr.contains("failed to malloc npu memory, size: "));
    drop(first);
}

#[test]
fn log_level_one_prints_the_performance_table() {
    let _l = log_lock();
    let model = MockModel::new()
        .answer("abc def")
        .with_runtime(|r| r.log_level = Some(1))
        .with_runtime(|r| r.adds_bos = rkllm::settings::AddsBos::Always);
    let h = open(model);
    let ((rc, _), cap) = capture(|| run_prompt(&h, "hello world"));
    assert_eq!(rc, 0);
    let prefill = cap
        .stdout
        .lines()
        .find(|l| l.starts_with("I rkllm:  Prefill"))
        .expect(&cap.stdout);
    let generate = cap
        .stdout
        .lines()
        .find(|l| l.starts_with("I rkllm:  Generate"))
        .expect(&cap.stdout);
    // BOS + "hello" (2 pieces) + " " + "world" (2 pieces) = 6; "abc", " ", "def", eot = 4.
    assert_eq!(prefill.split_whitespace().nth(4), Some("6"), "{prefill}");
    assert_eq!(generate.split_whitespace().nth(4), Some("4"), "{generate}");
    assert!(cap.stdout.contains("Tokens per Second"));
    // The level can come from RKLLM_LOG_LEVEL, read at init (every test of this binary
    // holds the log lock, so none inits while the variable is set).
    std::env::set_var("RKLLM_LOG_LEVEL", "1");
    let h = open(MockModel::new());
    std::env::remove_var("RKLLM_LOG_LEVEL");
    let (_, cap) = capture(|| run_prompt(&h, "hello"));
    assert!(cap.stdout.contains("I rkllm:  Prefill"), "{}", cap.stdout);
    // Without the level: no table.
    let h = open(MockModel::new().with_runtime(|r| r.log_level = Some(0)));
    let (_, cap) = capture(|| run_prompt(&h, "hello"));
    assert!(!cap.stdout.contains("Prefill"));
}
