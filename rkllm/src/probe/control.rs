//! A run held at its first token: which thread calls back, what `rkllm_is_running` says
//! while a task certainly runs, and how the runtime ends a run `rkllm_abort` interrupted.

use std::collections::HashSet;

use super::answers::{AbortEnding, Finding};
use super::harness::{Instance, RunRecord};
use super::{gemma_prompt, ProbeConfig};
use crate::settings::{CallbackThread, RunningSense};

/// Long enough that the run is still generating when it is aborted.
const USER: &str = "Count from one to forty in words, separated by commas.";

/// The runs of this experiment.
pub(crate) struct Control {
    /// `rkllm_is_running` before any run.
    pub idle: i32,
    /// The run aborted while its first token's callback was held.
    pub stopped: RunRecord,
    /// The next run on the same handle, right after (is it usable at once?).
    pub again: RunRecord,
}

pub(crate) fn run(model: &mut Instance, config: &ProbeConfig) -> Control {
    let idle = model.is_running();
    let prompt = gemma_prompt(USER);
    let mut plan = config.plan(&prompt);
    plan.abort_at_token = Some(1);
    let stopped = model.run(&plan);
    let again = model.run(&plan);
    Control {
        idle,
        stopped,
        again,
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub(crate) fn abort_ending(c: &Control, config: &ProbeConfig) -> Finding<AbortEnding> {
    let r = &c.stopped;
    if let Some(reason) = r.unusable(config.run_timeout) {
        return Finding::failed(reason);
    }
    let rc = r.return_code.unwrap_or_default();
    let Some(stop) = r.stop else {
        return Finding::unclear(format!(
            "the run produced no token to abort at ({} callbacks, rkllm_run returned {rc})",
            r.events.len()
        ));
    };
    let after = r.tokens().filter(|e| e.at > stop.at).count();
    let blocked = if stop.pause_expired {
        format!(
            "; it waited for the held callback ({:?}): do not abort from inside a callback",
            stop.abort_took
        )
    } else {
        String::new()
    };
    let returned_after = r
        .returned_at
        .map(|t| {
            format!(
                " {:?} after the abort",
                t.saturating_duration_since(stop.at)
            )
        })
        .unwrap_or_default();
    let reuse = match (c.again.return_code, c.again.tokens().next()) {
        (Some(_), Some(_)) => "generated at once: the handle is reusable".to_owned(),
        (rc, None) => format!("generated nothing (rkllm_run returned {rc:?})"),
        (None, Some(_)) => "never returned".to_owned(),
    };
    let timed_out = if r.timed_out {
        " (the run overran its time limit)"
    } else {
        ""
    };
    let ending = AbortEnding {
        finish_callback: r.finished(),
        error_callback: r.errored(),
        return_code: rc,
    };
    Finding::known(
        ending,
        format!(
            "rkllm_abort returned {} while the first token's callback was held{blocked}; \
             {after} more token(s) arrived; FINISH {}, ERROR {}; rkllm_run returned {rc}\
             {returned_after}{timed_out}; the next run on the handle {reuse}",
            stop.abort_rc,
            yes(ending.finish_callback),
            yes(ending.error_callback),
        ),
    )
}

pub(crate) fn is_running(c: &Control) -> Finding<RunningSense> {
    let during = c.stopped.stop.map(|s| s.is_running_during);
    let after = c.stopped.is_running_after;
    let show = |v: Option<i32>| v.map_or("not measured".to_owned(), |v| v.to_string());
    let evidence = format!(
        "rkllm_is_running returned {} before any run, {} during a run (its callback held), \
         {} after rkllm_run returned",
        c.idle,
        show(during),
        show(after)
    );
    match (c.idle, during, after) {
        (idle, Some(0), Some(after)) if idle != 0 && after != 0 => {
            Finding::known(RunningSense::ZeroWhileRunning, evidence)
        }
        (0, Some(during), Some(0)) if during != 0 => {
            Finding::known(RunningSense::NonZeroWhileRunning, evidence)
        }
        _ => Finding::unclear(evidence),
    }
}

pub(crate) fn callback_thread(records: &[&RunRecord]) -> Finding<CallbackThread> {
    let (mut on_caller, mut on_other, mut late, mut runs) = (0usize, 0usize, 0usize, 0usize);
    let mut others = HashSet::new();
    for r in records {
        let Some((caller, _)) = r.call else { continue };
        if r.events.is_empty() {
            continue;
        }
        runs += 1;
        for e in &r.events {
            if e.thread == caller {
                on_caller += 1;
            } else {
                on_other += 1;
                others.insert(e.thread);
            }
            late += usize::from(e.after_return);
        }
    }
    let evidence = format!(
        "{} callbacks in {runs} run(s): {on_caller} on the thread that called rkllm_run, \
         {on_other} on {} other thread(s); {late} arrived after rkllm_run returned",
        on_caller + on_other,
        others.len()
    );
    match (on_caller, on_other) {
        (0, 0) => Finding::unclear(format!("no callback was recorded; {evidence}")),
        (_, 0) => Finding::known(CallbackThread::Caller, evidence),
        (0, _) => Finding::known(CallbackThread::RuntimeThread, evidence),
        _ => Finding::known(CallbackThread::Mixed, evidence),
    }
}
