//! The on-board probe against the mock runtime, in every configuration of each knob that
//! stands for an open question (one knob at a time from the default): the report must state
//! the configured behaviour. This shows the probe's logic is right before it meets a board.
#![cfg(all(feature = "mock", feature = "probe"))]

use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

use rkllm::mock::{self, MockModel, RuntimeBehaviour};
use rkllm::probe::{self, AbortEnding, EndOfTurn, ProbeConfig, ProbeReport, Question, Verdict};
use rkllm::settings::{
    AddsBos, CallbackThread, ContextOverflow, FinishText, PromptCacheReuse, RunningSense,
    SecondModel, WaitingText,
};
use rkllm::{Error, Runtime};

/// The probe's mock model without simulated time (the prompt-cache tests keep its 1 ms per
/// prefill token).
fn instant() -> MockModel {
    probe::mock_model().prefill_seconds_per_token(0.0)
}

fn config(path: &Path) -> ProbeConfig {
    ProbeConfig::new(Runtime::mock(), path)
        .run_timeout(Duration::from_secs(20))
        .pause_limit(Duration::from_millis(500))
}

/// Held for reading by every probe, and for writing by the one whose mock refuses a second
/// model while *any* handle of the process is alive.
static HANDLES: RwLock<()> = RwLock::new(());

/// Probes `mock` with `edit` applied to the configuration, and checks that every handle the
/// probe created was destroyed.
fn probe_with(mock: &MockModel, edit: impl FnOnce(ProbeConfig) -> ProbeConfig) -> ProbeReport {
    let _shared = HANDLES.read().unwrap_or_else(|e| e.into_inner());
    probe_alone(mock, edit)
}

fn probe_alone(mock: &MockModel, edit: impl FnOnce(ProbeConfig) -> ProbeConfig) -> ProbeReport {
    let path = mock.write_temp_file().expect("write the mock model");
    let report = probe::run(&edit(config(&path))).expect("the mock model loads");
    assert_eq!(
        mock::live_handles_of_model(&path),
        0,
        "the probe left a handle alive:\n{report}"
    );
    report
}

fn probe_mock(edit: impl FnOnce(&mut RuntimeBehaviour)) -> ProbeReport {
    probe_with(&instant().with_runtime(edit), |c| c)
}

/// The report's line for `q` (`- label: answer — evidence`).
fn line(report: &ProbeReport, q: Question) -> String {
    let text = report.to_string();
    let prefix = format!("- {}: ", q.label());
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {q}:\n{text}"))
        .to_owned()
}

#[test]
fn the_default_mock_is_reported_as_configured() {
    let report = probe_with(&probe::mock_model(), |c| c);
    assert_eq!(
        report.callback_thread().answer(),
        Some(&CallbackThread::RuntimeThread),
        "{report}"
    );
    assert_eq!(
        report.abort_ending().answer(),
        Some(&AbortEnding {
            finish_callback: true,
            error_callback: false,
            return_code: 0
        })
    );
    assert_eq!(
        report.is_running_sense().answer(),
        Some(&RunningSense::ZeroWhileRunning)
    );
    assert_eq!(
        report.waiting_text().answer(),
        Some(&WaitingText::PartialBytes)
    );
    assert_eq!(report.finish_text().answer(), Some(&FinishText::Null));
    assert_eq!(report.bos().answer(), Some(&AddsBos::Never));
    assert_eq!(
        report.end_of_turn().answer(),
        Some(&EndOfTurn::StopsAfterEndOfTurn)
    );
    assert_eq!(
        report.context_overflow().answer(),
        Some(&ContextOverflow::Refused)
    );
    assert!(report
        .context_overflow()
        .evidence
        .contains("rkllm_run returned -1"));
    assert_eq!(report.second_model().answer(), Some(&SecondModel::Works));
    assert_eq!(
        report.prompt_cache().answer(),
        Some(&PromptCacheReuse::Reused)
    );
    let timing = report.prompt_cache_timing().expect("timed");
    assert!(timing.ratio() < 0.3, "{timing:?}");

    // The header names the runtime the way its init line does.
    assert_eq!(report.init_diagnosis().runtime_version(), Some("1.1.1"));
    let text = report.to_string();
    assert!(
        text.contains("runtime 1.1.1, rknpu driver 0.9.8, platform RK3588"),
        "{text}"
    );
    assert!(text.contains("(MOCK, not a board)"));
    assert!(line(&report, Question::Bos).contains("not added"));
    assert!(line(&report, Question::PromptCache).contains("ms with the cache"));
    // And the settings that follow.
    assert_eq!(report.recommended_bos(), rkllm::chat::Bos::Include);
    assert_eq!(report.runtime_reports_running_is_correct(), Some(true));
    assert!(report.advice(Question::PromptCache).contains("pays off"));
}

#[test]
fn callbacks_on_the_callers_thread() {
    let report = probe_mock(|r| r.callback_thread = CallbackThread::Caller);
    assert_eq!(
        report.callback_thread().answer(),
        Some(&CallbackThread::Caller),
        "{report}"
    );
    assert!(line(&report, Question::CallbackThread).contains("the caller's thread"));
}

#[test]
fn every_abort_ending() {
    for finish in [true, false] {
        for rc in [0, -1] {
            let report = probe_mock(|r| {
                r.finish_after_abort = finish;
                r.run_return_after_abort = rc;
            });
            let want = AbortEnding {
                finish_callback: finish,
                error_callback: false,
                return_code: rc,
            };
            assert_eq!(report.abort_ending().answer(), Some(&want), "{report}");
            assert!(line(&report, Question::AbortEnding).contains(&format!(
                "FINISH {}, ERROR no, rkllm_run returns {rc}",
                if finish { "yes" } else { "no" }
            )));
            assert!(report
                .abort_ending()
                .evidence
                .contains("0 more token(s) arrived"));
        }
    }
}

#[test]
fn bos_added_by_the_runtime() {
    let report = probe_mock(|r| r.adds_bos = AddsBos::Always);
    assert_eq!(report.bos().answer(), Some(&AddsBos::Always), "{report}");
    assert!(report
        .bos()
        .evidence
        .contains("4 tokens prefilled 5, with <bos> 6"));
    assert_eq!(report.recommended_bos(), rkllm::chat::Bos::Omit);
    assert!(line(&report, Question::Bos).contains("added by the runtime"));
}

#[test]
fn generation_past_end_of_turn() {
    let report = probe_mock(|r| r.stops_at_end_of_turn = false);
    assert_eq!(
        report.end_of_turn().answer(),
        Some(&EndOfTurn::ContinuesPastEndOfTurn),
        "{report}"
    );
    assert!(line(&report, Question::EndOfTurn).contains("continues past"));
    assert!(report.advice(Question::EndOfTurn).contains("always"));
}

#[test]
fn every_waiting_text() {
    for want in [
        WaitingText::Null,
        WaitingText::Empty,
        WaitingText::PartialBytesThenWhole,
    ] {
        let report = probe_mock(|r| r.waiting_text = want);
        assert_eq!(report.waiting_text().answer(), Some(&want), "{report}");
        assert!(line(&report, Question::WaitingText).contains(&want.to_string()));
        let evidence = &report.waiting_text().evidence;
        if want == WaitingText::PartialBytesThenWhole {
            // Joining every callback's bytes repeats the split characters.
            assert!(evidence.contains("valid UTF-8: no"), "{evidence}");
            assert!(report
                .advice(Question::WaitingText)
                .contains("waiting_text(WaitingText::PartialBytesThenWhole)"));
        } else {
            assert!(
                evidence.contains("\"Hello! Ünïcödé 🦀 works.\""),
                "{evidence}"
            );
        }
    }
}

#[test]
fn finish_text_empty() {
    let report = probe_mock(|r| r.finish_text = FinishText::Empty);
    assert_eq!(
        report.finish_text().answer(),
        Some(&FinishText::Empty),
        "{report}"
    );
    assert!(line(&report, Question::FinishText).contains("empty string"));
}

#[test]
fn every_context_overflow() {
    let report = probe_mock(|r| r.context_overflow = ContextOverflow::Truncated);
    assert_eq!(
        report.context_overflow().answer(),
        Some(&ContextOverflow::Truncated),
        "{report}"
    );
    // The mock keeps the last max_context_len - 1 tokens.
    assert!(report
        .context_overflow()
        .evidence
        .contains("prefill count 63"));

    let report = probe_mock(|r| r.context_overflow = ContextOverflow::ErrorCallback);
    assert_eq!(
        report.context_overflow().answer(),
        Some(&ContextOverflow::ErrorCallback),
        "{report}"
    );
    assert!(report
        .context_overflow()
        .evidence
        .contains("rkllm_run returned -1"));
    assert!(line(&report, Question::ContextOverflow).contains("ERROR callback"));
}

#[test]
fn is_running_in_boolean_sense() {
    let report = probe_mock(|r| r.is_running_sense = RunningSense::NonZeroWhileRunning);
    assert_eq!(
        report.is_running_sense().answer(),
        Some(&RunningSense::NonZeroWhileRunning),
        "{report}"
    );
    assert_eq!(report.runtime_reports_running_is_correct(), Some(false));
    assert!(report
        .advice(Question::IsRunningSense)
        .contains("RunningSense::NonZeroWhileRunning"));
}

#[test]
fn second_model_refused() {
    let _alone = HANDLES.write().unwrap_or_else(|e| e.into_inner());
    let report = probe_alone(
        &instant().with_runtime(|r| r.second_model = SecondModel::Refused),
        |c| c,
    );
    assert_eq!(
        report.second_model().answer(),
        Some(&SecondModel::Refused),
        "{report}"
    );
    let evidence = &report.second_model().evidence;
    assert!(evidence.contains("rkllm_init returned -1"), "{evidence}");
    assert!(evidence.contains("npu_out_of_memory"), "{evidence}");
    assert!(evidence.contains("the first model still generates"));
    assert!(report
        .advice(Question::SecondModel)
        .contains("one model per process"));
}

#[test]
fn prompt_cache_without_reuse() {
    let report = probe_with(
        &probe::mock_model().with_runtime(|r| r.prompt_cache_reuse = PromptCacheReuse::NotReused),
        |c| c,
    );
    assert_eq!(
        report.prompt_cache().answer(),
        Some(&PromptCacheReuse::NotReused),
        "{report}"
    );
    let timing = report.prompt_cache_timing().expect("timed");
    assert!(timing.ratio() > 0.8, "{timing:?}");
    assert!(line(&report, Question::PromptCache).contains("no effect"));
}

#[test]
fn skipped_questions_say_so() {
    let report = probe_with(&instant(), |c| {
        c.skip(Question::SecondModel).skip(Question::PromptCache)
    });
    assert_eq!(report.second_model().verdict, Verdict::Skipped);
    assert_eq!(report.prompt_cache().verdict, Verdict::Skipped);
    assert!(report.prompt_cache_timing().is_none());
    assert!(line(&report, Question::SecondModel).ends_with("skipped"));
    assert_eq!(report.bos().answer(), Some(&AddsBos::Never));
}

#[test]
fn callbacks_on_mixed_threads() {
    let report = probe_mock(|r| r.callback_thread = CallbackThread::Mixed);
    assert_eq!(
        report.callback_thread().answer(),
        Some(&CallbackThread::Mixed),
        "{report}"
    );
    assert!(report
        .advice(Question::CallbackThread)
        .contains("please report"));
}

#[test]
fn bos_added_unless_present() {
    let report = probe_mock(|r| r.adds_bos = AddsBos::UnlessPresent);
    assert_eq!(
        report.bos().answer(),
        Some(&AddsBos::UnlessPresent),
        "{report}"
    );
    assert!(report
        .bos()
        .evidence
        .contains("4 tokens prefilled 5, with <bos> 5"));
}

#[test]
fn finish_text_with_text() {
    let report = probe_mock(|r| r.finish_text = FinishText::Text("done".into()));
    assert_eq!(
        report.finish_text().answer(),
        Some(&FinishText::Text("done".into())),
        "{report}"
    );
    assert!(line(&report, Question::FinishText).contains("text \"done\""));
}

#[test]
fn second_model_loads_but_does_not_run() {
    let _alone = HANDLES.write().unwrap_or_else(|e| e.into_inner());
    let report = probe_alone(
        &instant().with_runtime(|r| r.second_model = SecondModel::LoadsButRunFails),
        |c| c,
    );
    assert_eq!(
        report.second_model().answer(),
        Some(&SecondModel::LoadsButRunFails),
        "{report}"
    );
    let evidence = &report.second_model().evidence;
    assert!(evidence.contains("rkllm_run returned -1"), "{evidence}");
    assert!(evidence.contains("the first model still generates"));
}

/// The probe never changes the process environment (a data race with any thread reading it,
/// the runtime's own included): `RKLLM_LOG_LEVEL` is the caller's to set before the program
/// starts. A mock that reads the variable at init (no `log_level` knob) sees what the caller
/// set, nothing else.
#[test]
fn the_probe_leaves_the_environment_alone() {
    const VAR: &str = "RKLLM_LOG_LEVEL";
    let before = std::env::var_os(VAR);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (done, before) = (std::sync::Arc::clone(&done), before.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let now = std::env::var_os(VAR);
                if now != before && !seen.contains(&now) {
                    seen.push(now);
                }
                std::thread::yield_now();
            }
            seen
        })
    };
    let report = probe_with(&instant().with_runtime(|r| r.log_level = None), |c| {
        c.skip(Question::SecondModel)
            .skip(Question::PromptCache)
            .skip(Question::ContextOverflow)
    });
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let changes = watcher.join().unwrap();
    assert!(
        changes.is_empty(),
        "{VAR} changed during the probe: {changes:?}"
    );
    assert_eq!(std::env::var_os(VAR), before);
    // The runtime saw the caller's setting at every init.
    let level: u32 = before
        .as_deref()
        .and_then(|v| v.to_str())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if level >= 1 {
        assert_eq!(report.bos().answer(), Some(&AddsBos::Never), "{report}");
    } else {
        assert_eq!(report.bos().verdict, Verdict::Unclear, "{report}");
        assert!(
            report.bos().evidence.contains("RKLLM_LOG_LEVEL=1"),
            "{report}"
        );
    }
}

#[test]
fn a_model_that_does_not_load_is_an_error() {
    let path = MockModel::new()
        .fail_init(mock::InitFailure::InvalidModelMagic)
        .write_temp_file()
        .unwrap();
    let err = probe::run(&config(&path)).expect_err("the model must not load");
    assert!(matches!(err, Error::Init(_)), "{err}");
    assert_eq!(mock::live_handles_of_model(&path), 0);
}

#[test]
fn an_overlong_run_is_aborted_at_the_time_limit() {
    // 40 ms per token, never stopping by itself: the 32-token runs take 1.3 s.
    let mock = instant()
        .decode_seconds_per_token(0.04)
        .with_runtime(|r| r.stops_at_end_of_turn = false);
    let report = probe_with(&mock, |c| {
        c.run_timeout(Duration::from_millis(300))
            .skip(Question::PromptCache)
            .skip(Question::SecondModel)
            .skip(Question::ContextOverflow)
    });
    // <end_of_turn> would come after 25 tokens (1 s): the run was cut before it.
    let eot = report.end_of_turn();
    assert_eq!(eot.verdict, Verdict::Unclear, "{report}");
    assert!(
        eot.evidence.contains("aborted at the time limit"),
        "{report}"
    );
    // The runtime returned after each abort, so the other answers still hold.
    assert_eq!(report.bos().answer(), Some(&AddsBos::Never));
    assert_eq!(
        report.waiting_text().answer(),
        Some(&WaitingText::PartialBytes)
    );
}

#[cfg(feature = "tokenizer")]
mod chat_common;

#[cfg(feature = "tokenizer")]
mod with_tokenizer {
    use super::*;

    /// The exact count of a chat prompt, through the real Gemma 2 tokenizer on both sides.
    #[test]
    fn bos_with_the_exact_chat_prompt_count() {
        let path = chat_common::tokenizer_path();
        if chat_common::gemma_tokenizer().is_none() {
            return; // chat_common announced the skip loudly (RKLLM_SKIP_TOKENIZER_TESTS=1)
        }
        for adds in [AddsBos::Never, AddsBos::Always] {
            let mock = instant()
                .tokenizer_json(&path)
                .with_runtime(|r| r.adds_bos = adds);
            let report = probe_with(&mock, |c| {
                c.tokenizer(&path)
                    .skip(Question::SecondModel)
                    .skip(Question::PromptCache)
                    .skip(Question::ContextOverflow)
            });
            assert_eq!(report.bos().answer(), Some(&adds), "{report}");
            assert!(
                report
                    .bos()
                    .evidence
                    .contains("chat prompt (tokenizer count)"),
                "{report}"
            );
        }
    }
}
