//! The runtime-log parser (`rkllm::diagnosis`) on arbitrary text.
//!
//! Invariants checked, beyond "does not panic":
//! - every error line is one of the kept lines, in the same order;
//! - the cause is `none` exactly when there is no error line, and its stable name reads back;
//! - kept lines are clean: no newline, no escape character, no trailing whitespace, not blank;
//! - parsing is idempotent: the kept lines, parsed again, give the same diagnosis;
//! - the driver version and platform come only with the runtime's version line;
//! - a version found in the text prints as a version that is found again as itself;
//! - an `InitError` built from the diagnosis renders its summary, fix and bug report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rkllm::diagnosis::{Cause, Diagnosis, InitError, Version};

fuzz_target!(|data: &[u8]| {
    let log = String::from_utf8_lossy(data);
    let d = Diagnosis::parse(&log);

    // Error lines are a subsequence of the kept lines.
    let mut lines = d.lines().iter();
    for e in d.error_lines() {
        assert!(
            lines.any(|l| l == e),
            "error line {e:?} is not among the kept lines in order"
        );
    }
    assert_eq!(
        d.first_error_line(),
        d.error_lines().first().map(String::as_str)
    );

    assert_eq!(
        d.cause() == Cause::None,
        d.error_lines().is_empty(),
        "cause {} with {} error line(s)",
        d.cause(),
        d.error_lines().len()
    );
    assert_eq!(Cause::from_name(d.cause().as_str()), Some(d.cause()));

    for l in d.lines() {
        assert!(!l.contains('\n'), "kept line {l:?} holds a newline");
        assert!(!l.contains('\x1b'), "kept line {l:?} holds an escape");
        assert!(!l.trim().is_empty(), "kept line {l:?} is blank");
        assert_eq!(l.trim_end(), l, "kept line {l:?} has trailing whitespace");
    }

    let again = Diagnosis::parse(&d.lines().join("\n"));
    assert_eq!(
        again, d,
        "parsing the kept lines again changed the diagnosis"
    );

    if d.runtime_version().is_none() {
        assert_eq!((d.driver_version(), d.platform()), (None, None));
    }
    assert_eq!(d.platform_supported().is_some(), d.platform().is_some());

    if let Some(v) = Version::find_in(&log) {
        let n = v.components().len();
        assert!((2..=4).contains(&n), "{n} components in {v}");
        let printed = v.to_string();
        let back = Version::find_in(&printed).expect("a printed version is found again");
        assert_eq!(back, v);
        assert_eq!(back.components(), v.components());
    }

    let err = InitError::new(Some(-1), d, "/models/fuzz.rkllm".into());
    assert!(!err.summary().is_empty());
    assert!(!err.fix().is_empty());
    let report = err.bug_report();
    for l in err.log_lines() {
        assert!(
            report.contains(l.as_str()),
            "bug report lacks log line {l:?}"
        );
    }
});
