//! The four examples as a new user meets them: `--help`, usage errors, errors about files,
//! and options that cannot apply. Their command lines are read by clap, so they answer alike:
//! `--help` exits 0 with the full help, a usage error exits 2 and names the flag (and the
//! value, where clap shows it), a failure exits 1 and names the file it is about.

use std::path::Path;
use std::process::Output;

mod examples_common;
use examples_common::{run, show, stderr, stdout};

/// Each example with the options its help must list, as clap shows them.
const EXAMPLES: [(&str, &[&str]); 4] = [
    (
        "chat",
        &[
            "--model <PATH>",
            "--lib <PATH>",
            "--tokenizer <PATH>",
            "--mock",
            "--mock-reply <TEXT>",
            "--fast",
            "--system <TEXT>",
            "--style <STYLE>",
            "--max-context <N>",
            "--max-new-tokens <N>",
            "--prompt-cache <DIR>",
        ],
    ),
    (
        "generate",
        &[
            "--prompt <TEXT>",
            "--system <TEXT>",
            "--raw",
            "--model <PATH>",
            "--lib <PATH>",
            "--tokenizer <PATH>",
            "--mock",
            "--fast",
            "--max-context <N>",
            "--max-new-tokens <N>",
        ],
    ),
    (
        "doctor",
        &[
            "--model <PATH>",
            "--lib <PATH>",
            "--mock",
            "--inject <FAILURE>",
        ],
    ),
    (
        "probe",
        &[
            "--model <PATH>",
            "--lib <PATH>",
            "--tokenizer <PATH>",
            "--mock",
            "--skip-second-model",
        ],
    ),
];

fn exit_code(output: &Output) -> Option<i32> {
    output.status.code()
}

/// Asserts a usage error: exit code 2, and stderr holding each of `named`.
fn assert_usage_error(output: &Output, named: &[&str]) {
    assert_eq!(exit_code(output), Some(2), "{}", show(output));
    let stderr = stderr(output);
    assert!(stderr.contains("error: "), "{}", show(output));
    for name in named {
        assert!(stderr.contains(name), "no {name:?} in: {}", show(output));
    }
}

/// Asserts a failure at run time: exit code 1, and stderr holding each of `named`.
fn assert_failure(output: &Output, named: &[&str]) {
    assert_eq!(exit_code(output), Some(1), "{}", show(output));
    let stderr = stderr(output);
    for name in named {
        assert!(stderr.contains(name), "no {name:?} in: {}", show(output));
    }
}

/// Whether a help `text` has a line for `option`: the option, then its help on the same
/// line or the next (clap's long help).
fn lists(text: &str, option: &str) -> bool {
    text.lines().any(|line| {
        line.trim_start()
            .strip_prefix(option)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    })
}

#[test]
fn every_example_prints_its_full_help_and_exits_0() {
    for (example, options) in EXAMPLES {
        for help in ["--help", "-h"] {
            let output = run(example, &[help], "");
            assert_eq!(
                exit_code(&output),
                Some(0),
                "{example} {help}: {}",
                show(&output)
            );
            let text = stdout(&output);
            assert!(
                text.contains(&format!("Usage: {example} ")),
                "{example} {help}: {}",
                show(&output)
            );
            for option in options.iter().chain(&["-h, --help"]) {
                assert!(
                    lists(&text, option),
                    "{example} {help} does not list {option}: {}",
                    show(&output)
                );
            }
            assert!(
                !stderr(&output).contains("error"),
                "{example} {help}: {}",
                show(&output)
            );
        }
    }
}

#[test]
fn an_unknown_option_is_a_usage_error_naming_it() {
    for (example, _) in EXAMPLES {
        let output = run(example, &["--mock", "--frobnicate", "7"], "");
        assert_usage_error(&output, &["--frobnicate", "--help"]);
    }
    let output = run("generate", &["stray"], "");
    assert_usage_error(&output, &["unexpected argument 'stray'"]);
}

#[test]
fn an_option_without_its_value_is_a_usage_error_naming_it() {
    for (example, _) in EXAMPLES {
        let output = run(example, &["--mock", "--model"], "");
        assert_usage_error(&output, &["a value is required for '--model <PATH>'"]);
    }
}

#[test]
fn an_option_given_twice_is_refused_rather_than_one_ignored() {
    let output = run("generate", &["--prompt=one", "--prompt", "two"], "");
    assert_usage_error(
        &output,
        &["'--prompt <TEXT>' cannot be used multiple times"],
    );
}

#[test]
fn an_out_of_range_length_names_the_flag_the_value_and_the_range() {
    for example in ["chat", "generate"] {
        let output = run(example, &["--max-context", "99999999999"], "");
        assert_usage_error(
            &output,
            &[
                "invalid value '99999999999' for '--max-context <N>'",
                "not in 1..=2147483647",
            ],
        );
        assert!(
            !stderr(&output).contains("positive number"),
            "{}",
            show(&output)
        );
        let output = run(example, &["--max-new-tokens", "0"], "");
        assert_usage_error(
            &output,
            &[
                "invalid value '0' for '--max-new-tokens <N>'",
                "not in 1..=2147483647",
            ],
        );
        let output = run(example, &["--max-context", "ten"], "");
        assert_usage_error(&output, &["invalid value 'ten' for '--max-context <N>'"]);
        let output = run(
            example,
            &["--max-context", "256", "--max-new-tokens", "256"],
            "",
        );
        assert_usage_error(&output, &["--max-new-tokens 256", "--max-context 256"]);
    }
}

#[test]
fn a_bad_choice_is_a_usage_error_naming_the_choices() {
    let output = run("doctor", &["--mock", "--inject", "bogus"], "");
    assert_usage_error(
        &output,
        &[
            "invalid value 'bogus' for '--inject <FAILURE>'",
            "oom",
            "old-driver",
        ],
    );
    let output = run("chat", &["--template", "x.json", "--style", "merge"], "");
    assert_usage_error(
        &output,
        &[
            "--template <PATH>",
            "--style <STYLE>",
            "cannot be used with",
        ],
    );
    let output = run("chat", &["--style", "fancy"], "");
    assert_usage_error(
        &output,
        &[
            "invalid value 'fancy' for '--style <STYLE>'",
            "merge",
            "strict",
        ],
    );
}

#[test]
fn the_library_is_refused_with_the_mock_runtime() {
    let lib = "/opt/rkllm/librkllmrt.so";
    for (example, _) in EXAMPLES {
        let output = run(example, &["--mock", "--lib", lib], "");
        assert_usage_error(&output, &["--lib <PATH>", "--mock", "cannot be used with"]);
    }
    // Without --model, chat and generate run the mock: a library cannot apply either.
    for example in ["chat", "generate"] {
        let output = run(example, &["--lib", lib], "");
        assert_usage_error(
            &output,
            &["required arguments were not provided", "--model <PATH>"],
        );
        assert!(
            stderr(&output).contains("--lib <PATH>"),
            "{}",
            show(&output)
        );
    }
}

#[test]
fn options_of_the_generated_mock_are_refused_with_a_model_file() {
    let model = "/data/models/gemma.rkllm";
    let cases: [(&str, &[&str], &str); 4] = [
        ("chat", &["--mock-reply", "Hi"], "--mock-reply <TEXT>"),
        ("chat", &["--fast"], "--fast"),
        ("generate", &["--fast", "--prompt", "hi"], "--fast"),
        ("doctor", &["--inject", "oom"], "--inject <FAILURE>"),
    ];
    for (example, extra, named) in cases {
        let mut args = vec!["--mock", "--model", model];
        args.extend_from_slice(extra);
        let output = run(example, &args, "");
        assert_usage_error(&output, &[named, "--model <PATH>", "cannot be used with"]);
    }
    // Without --model the doctor still needs --mock for a failure to inject.
    let output = run("doctor", &["--inject", "oom"], "");
    assert_usage_error(&output, &["required arguments were not provided", "--mock"]);
}

#[test]
fn doctor_and_probe_need_a_model_or_the_mock() {
    for example in ["doctor", "probe"] {
        let output = run(example, &[], "");
        assert_usage_error(
            &output,
            &[
                "required arguments were not provided",
                "--model <PATH>",
                "--mock",
            ],
        );
    }
}

/// Runs each example that takes `--tokenizer` with `path`, on the generated mock model.
fn run_with_tokenizer(path: &Path) -> Vec<(&'static str, Output)> {
    let path = path.to_str().unwrap();
    [
        ("chat", &["--tokenizer", path][..], "Hello\n"),
        (
            "generate",
            &["--tokenizer", path, "--prompt", "Hello"][..],
            "",
        ),
        ("probe", &["--mock", "--tokenizer", path][..], ""),
    ]
    .into_iter()
    .map(|(example, args, stdin)| (example, run(example, args, stdin)))
    .collect()
}

#[test]
fn a_missing_tokenizer_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent").join("tokenizer.json");
    for (_, output) in run_with_tokenizer(&path) {
        let named = format!("cannot read the tokenizer {}", path.display());
        assert_failure(&output, &[&named]);
    }
}

#[test]
fn a_junk_tokenizer_file_is_a_tokenizer_error_not_a_model_load_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, "this is not JSON").unwrap();
    for (example, output) in run_with_tokenizer(&path) {
        let named = format!(
            "the tokenizer {} is not a Gemma 2 tokenizer.json",
            path.display()
        );
        assert_failure(&output, &[&named]);
        let stderr = stderr(&output);
        assert!(
            !stderr.contains("failed to load model") && !stderr.contains("rkllm_init"),
            "{example}: {}",
            show(&output)
        );
    }
}

/// The path the doctor hint names after `--model`, if there is a hint.
fn doctor_hint_model(output: &Output) -> Option<String> {
    let stderr = stderr(output);
    let hint = stderr
        .lines()
        .find(|l| l.contains("cargo run --example doctor"))?;
    let after = hint.split("--model ").nth(1).unwrap_or_else(|| {
        panic!("the doctor hint names no model: {hint}");
    });
    Some(
        after
            .trim_end_matches(')')
            .split(" --lib")
            .next()?
            .to_owned(),
    )
}

#[test]
fn a_generated_mock_that_fails_to_load_is_not_named_in_a_doctor_hint() {
    // The generated mock model allows a context of 4096 tokens at most.
    for (example, stdin) in [("chat", "Hello\n"), ("generate", "Hello")] {
        let output = run(example, &["--max-context", "8192"], stdin);
        assert_failure(&output, &["max_context_len 8192"]);
        if let Some(model) = doctor_hint_model(&output) {
            assert!(
                Path::new(&model).exists(),
                "{example}: the doctor hint names {model}, which is gone: {}",
                show(&output)
            );
        }
    }
}

#[cfg(feature = "mock")]
#[test]
fn a_model_file_that_fails_to_load_gets_a_doctor_hint_that_works() {
    use rkllm::mock::{InitFailure, MockModel};

    let dir = tempfile::tempdir().unwrap();
    let model = MockModel::new()
        .fail_init(InitFailure::InvalidModelMagic)
        .write_to(dir.path().join("bad.rkllm"))
        .unwrap();
    let model = model.to_str().unwrap();
    for (example, stdin) in [("chat", "Hello\n"), ("generate", "Hello")] {
        let output = run(example, &["--mock", "--model", model], stdin);
        assert_failure(&output, &[&format!("--mock --model {model}")]);
        assert_eq!(doctor_hint_model(&output).as_deref(), Some(model));
    }
    // The hint's command runs and explains the failure.
    assert_doctor_says(&["--mock", "--model", model], 1, "the model did not load");
}

/// Runs the doctor with `args`; asserts its exit code and a line of its report.
fn assert_doctor_says(args: &[&str], code: i32, says: &str) {
    let output = run("doctor", args, "");
    assert_eq!(exit_code(&output), Some(code), "{}", show(&output));
    assert!(stdout(&output).contains(says), "{}", show(&output));
}

#[test]
fn doctor_exits_0_when_the_model_loads_and_1_when_it_does_not() {
    assert_doctor_says(&["--mock"], 0, "the model loaded");
    assert_doctor_says(&["--mock", "--inject", "oom"], 1, "the model did not load");
}

#[test]
fn probe_reports_on_the_mock_and_leaves_no_model_file_behind() {
    let output = run("probe", &["--mock", "--skip-second-model"], "");
    assert_eq!(exit_code(&output), Some(0), "{}", show(&output));
    let stderr = stderr(&output);
    let model = stderr
        .lines()
        .find_map(|l| l.strip_prefix("probing ")?.split(" with ").next())
        .unwrap_or_else(|| panic!("no `probing PATH` line: {}", show(&output)));
    assert!(
        !Path::new(model).exists(),
        "the generated mock model {model} is left behind"
    );
    assert!(!stdout(&output).is_empty(), "no report: {}", show(&output));
}
