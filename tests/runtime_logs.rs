//! Table test: every runtime-log fixture reads into the expected diagnosis.
//!
//! Reads `testdata/runtime-logs/*.json`, or every `*.json` in the directory named by
//! `RKLLM_LOG_FIXTURES_DIR` when that is set (the format is in the directory's README).

mod fixtures;

use std::io::Write;

use rkllm::diagnosis::{Cause, Diagnosis};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    #[serde(default)]
    description: String,
    log: String,
    expected: Expected,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    cause: String,
    requested_bytes: Option<u64>,
    errno: Option<i32>,
    runtime_version: Option<String>,
    driver_version: Option<String>,
    platform: Option<String>,
    driver_too_old: bool,
}

/// The differences between what was read and what was expected, one per field.
fn mismatches(d: &Diagnosis, want: &Expected) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |field: &str, got: String, want: String| {
        if got != want {
            out.push(format!("{field}: got {got}, expected {want}"));
        }
    };
    match Cause::from_name(&want.cause) {
        Some(cause) => check("cause", d.cause().as_str().into(), cause.as_str().into()),
        None => check(
            "cause",
            d.cause().as_str().into(),
            format!("<unknown init failure cause `{}`>", want.cause),
        ),
    }
    check(
        "requested_bytes",
        format!("{:?}", d.requested_bytes()),
        format!("{:?}", want.requested_bytes),
    );
    check(
        "errno",
        format!("{:?}", d.errno()),
        format!("{:?}", want.errno),
    );
    check(
        "runtime_version",
        format!("{:?}", d.runtime_version()),
        format!("{:?}", want.runtime_version.as_deref()),
    );
    check(
        "driver_version",
        format!("{:?}", d.driver_version()),
        format!("{:?}", want.driver_version.as_deref()),
    );
    check(
        "platform",
        format!("{:?}", d.platform()),
        format!("{:?}", want.platform.as_deref()),
    );
    check(
        "driver_too_old",
        d.driver_too_old().to_string(),
        want.driver_too_old.to_string(),
    );
    out
}

#[test]
fn runtime_log_fixtures() {
    let dir = fixtures::dir("RKLLM_LOG_FIXTURES_DIR", "runtime-logs");
    let cases = fixtures::load::<Case>(&dir);
    assert!(
        !cases.is_empty(),
        "no runtime log fixtures found in {}",
        dir.display()
    );

    let mut failures = Vec::new();
    for (file, case) in &cases {
        let diagnosis = Diagnosis::parse(&case.log);
        let problems = mismatches(&diagnosis, &case.expected);
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({}): {}\n    {}",
                case.name,
                file.display(),
                case.description,
                problems.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Straight to stderr so the count shows in a normal (captured) test run too.
    let _ = writeln!(
        std::io::stderr(),
        "runtime log fixtures: {} cases checked",
        cases.len()
    );
}
