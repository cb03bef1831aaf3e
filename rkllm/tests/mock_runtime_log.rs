//! Where a mock model's runtime log lines go (`MockModel::runtime_log`): file descriptors 1
//! and 2 by default, the `log` facade, or nowhere. Every test holds the log lock, so no other
//! test of this binary writes to the descriptors or the logger while one looks at them.
#![cfg(feature = "mock")]

mod mock_support;

use std::sync::Mutex;

use mock_support::{capture, log_lock, Captured};
use rkllm::diagnosis::Cause;
use rkllm::mock::{InitFailure, MockModel, RunFailure, RuntimeLog};
use rkllm::{Error, GenerateOptions, Model, Runtime};

/// The records the test logger received: (target, level, message).
static RECORDS: Mutex<Vec<(String, log::Level, String)>> = Mutex::new(Vec::new());

struct TestLogger;

impl log::Log for TestLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        RECORDS.lock().unwrap_or_else(|e| e.into_inner()).push((
            record.target().to_owned(),
            record.level(),
            record.args().to_string(),
        ));
    }
    fn flush(&self) {}
}

static LOGGER: TestLogger = TestLogger;

/// Installs the test logger (once per binary) and forgets earlier records.
fn start_recording() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
    RECORDS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// The runtime's records so far (target `rkllm::runtime`), as (level, message).
fn runtime_records() -> Vec<(log::Level, String)> {
    RECORDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(target, _, _)| target == "rkllm::runtime")
        .map(|(_, level, msg)| (*level, msg.clone()))
        .collect()
}

/// Whether `captured` holds any line of the runtime.
fn has_runtime_lines(captured: &Captured) -> bool {
    captured
        .all()
        .lines()
        .any(|l| l.contains(" rkllm: ") || l.contains(" RKNN: "))
}

/// Loads `model`, runs one prompt to its end and returns the run's result; the model prints
/// its performance table after the run (log level 1).
fn load_and_run(model: MockModel) -> rkllm::Result<String> {
    let file = model
        .with_runtime(|r| r.log_level = Some(1))
        .write_temp_file()?;
    let model = Model::builder(&file).runtime(Runtime::mock()).build()?;
    let reply = model
        .session()?
        .complete("<bos>Hi", &GenerateOptions::gemma())?;
    Ok(reply.text)
}

#[test]
fn by_default_the_lines_go_to_the_descriptors_as_the_runtimes_do() {
    let _l = log_lock();
    start_recording();
    let (reply, captured) = capture(|| load_and_run(MockModel::new().answer("Hi there")));
    assert_eq!(reply.unwrap(), "Hi there");
    assert!(
        captured
            .stdout
            .contains("I rkllm: rkllm-runtime version: 1.1.1"),
        "{}",
        captured.stdout
    );
    assert!(
        captured.stdout.contains(" Stage         Total Time (ms)"),
        "{}",
        captured.stdout
    );
    // The performance table went to the descriptors only; the crate forwards only the lines
    // its init capture read to the log.
    assert!(
        !runtime_records().iter().any(|(_, m)| m.contains("Stage")),
        "{:?}",
        runtime_records()
    );
}

#[test]
fn to_the_log_facade_with_the_level_of_each_line() {
    let _l = log_lock();
    start_recording();
    let (reply, captured) = capture(|| {
        load_and_run(
            MockModel::new()
                .answer("Hi there")
                .driver_version("0.8.2")
                .runtime_log(RuntimeLog::Log),
        )
    });
    assert_eq!(reply.unwrap(), "Hi there");
    assert!(
        !has_runtime_lines(&captured),
        "the descriptors got runtime lines:\n{}",
        captured.all()
    );
    let records = runtime_records();
    let count = |want: &str| records.iter().filter(|(_, m)| m.contains(want)).count();
    // Each line exactly once, though the init's lines pass through the init capture.
    assert_eq!(count("rkllm-runtime version: 1.1.1"), 1, "{records:?}");
    assert!(records.contains(&(
        log::Level::Warn,
        "W rkllm: Warning: Your rknpu driver version is too low, please upgrade to 0.9.7.".into()
    )));
    assert!(records
        .iter()
        .any(|(l, m)| *l == log::Level::Info && m.contains(" Stage         Total Time (ms)")));

    // An error line of a run: level error.
    start_recording();
    let (result, captured) = capture(|| {
        load_and_run(
            MockModel::new()
                .fail_runs(RunFailure::ReturnError)
                .runtime_log(RuntimeLog::Log),
        )
    });
    assert!(result.is_err());
    assert!(!has_runtime_lines(&captured), "{}", captured.all());
    let records = runtime_records();
    assert!(
        records
            .iter()
            .any(|(l, m)| *l == log::Level::Error && m.starts_with("E rkllm: ")),
        "{records:?}"
    );
}

#[test]
fn nowhere_leaves_the_descriptors_and_the_log_alone_after_init() {
    let _l = log_lock();
    start_recording();
    let (result, captured) = capture(|| {
        load_and_run(
            MockModel::new()
                .fail_runs(RunFailure::ReturnError)
                .runtime_log(RuntimeLog::Off),
        )
    });
    assert!(result.is_err());
    // (The test harness's own `test … ok` lines may land in the capture; nothing else.)
    assert!(
        !has_runtime_lines(&captured),
        "the descriptors got runtime lines:\n{}",
        captured.all()
    );
    // The run's lines (the error, the performance table) reach nobody; the init's lines only
    // through the crate's init capture, as the real runtime's would.
    let records = runtime_records();
    assert!(
        records
            .iter()
            .all(|(_, m)| m.contains("rkllm-runtime version")),
        "{records:?}"
    );
}

#[test]
fn a_failed_init_still_explains_itself_when_the_lines_go_elsewhere() {
    let _l = log_lock();
    for to in [RuntimeLog::Log, RuntimeLog::Off] {
        start_recording();
        let (result, captured) = capture(|| {
            load_and_run(
                MockModel::new()
                    .fail_init(InitFailure::NpuOutOfMemory {
                        requested_bytes: 232_128_512,
                    })
                    .runtime_log(to),
            )
        });
        let Err(Error::Init(e)) = result else {
            panic!("{to:?}: expected Error::Init, got {result:?}");
        };
        assert_eq!(e.cause(), Cause::NpuOutOfMemory, "{to:?}: {e}");
        assert_eq!(e.diagnosis().requested_bytes(), Some(232_128_512), "{to:?}");
        assert!(!has_runtime_lines(&captured), "{to:?}: {}", captured.all());
    }
}

#[test]
fn the_choice_is_kept_in_the_model_file() {
    for to in [RuntimeLog::Print, RuntimeLog::Log, RuntimeLog::Off] {
        let model = MockModel::new().runtime_log(to);
        assert_eq!(MockModel::from_json(&model.to_json()).unwrap(), model);
    }
    let json = MockModel::new().to_json();
    assert!(json.contains(r#""runtime_log": "print""#), "{json}");
    // Files written before the field existed read as `print`.
    let old = json.replace(",\n  \"runtime_log\": \"print\"", "");
    assert!(!old.contains("runtime_log"), "{old}");
    assert_eq!(
        MockModel::from_json(&old).unwrap(),
        MockModel::new().runtime_log(RuntimeLog::Print)
    );
}
