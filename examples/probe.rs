//! The on-board verification kit: finds out how this board's RKLLM runtime behaves where
//! it is undocumented, and prints a report to paste into a bug report.
//!
//! ```text
//! cargo run --example probe -- --model PATH [--tokenizer PATH] [--lib PATH] [--skip-second-model]
//! cargo run --example probe -- --mock
//! ```
//!
//! `--mock` probes the mock runtime with a mock model written to a temporary file.
//! Needs the cargo feature `probe` (on by default in this workspace).
//! Exits with 2 on bad arguments and 1 when the model could not be loaded.

use std::process::ExitCode;

use rkllm::probe::{self, ProbeConfig, Question};

mod common;
use common::{Backend, Failure, Scratch, TokenizerArg};

/// Finds out how this board's RKLLM runtime behaves where it is undocumented.
#[derive(clap::Parser, Debug)]
#[command(
    name = "probe",
    group = clap::ArgGroup::new("runtime").args(["model", "mock"]).multiple(true).required(true),
    after_help = "\
It prints a report to paste into a bug report. It takes a minute or two; the runtime's own
log lines appear as it goes."
)]
struct Options {
    #[command(flatten)]
    backend: Backend,
    #[command(flatten)]
    tokenizer: TokenizerArg,
    #[arg(
        long,
        help = "Skip the question whether a second model loads in the same\n\
                process (it needs the NPU memory of two)"
    )]
    skip_second_model: bool,
}

fn check(options: &Options) -> Result<(), String> {
    options.backend.check()?;
    options.tokenizer.check()
}

fn main() -> ExitCode {
    common::main(check, run)
}

fn run(args: Options, scratch: &mut Scratch) -> Result<ExitCode, Failure> {
    if !args.backend.is_mock() && std::env::var_os("RKLLM_LOG_LEVEL").is_none() {
        // The runtime prints the performance table the BOS question reads only at
        // RKLLM_LOG_LEVEL=1, and the probe (a library) never changes the environment. This
        // program sets it for the user, here: still on the main thread before any other
        // thread exists (nothing can read the environment concurrently) and before the
        // runtime is loaded. Running with RKLLM_LOG_LEVEL=1 set does the same.
        std::env::set_var("RKLLM_LOG_LEVEL", "1");
    }
    // A bad tokenizer file is reported now rather than as a note after the long run.
    #[cfg(feature = "tokenizer")]
    args.tokenizer.load()?;
    let model = args.backend.model_path(&args, scratch)?;
    let runtime = args.backend.runtime()?;
    let origin = runtime.origin().to_owned();
    let mut config = ProbeConfig::new(runtime, &model);
    if let Some(path) = args.tokenizer.path() {
        config = config.tokenizer(path);
    }
    if args.skip_second_model {
        config = config.skip(Question::SecondModel);
    }
    eprintln!(
        "probing {} with {origin} (a minute or two; the runtime's own log lines follow)",
        model.display()
    );
    let report = probe::run(&config)
        .map_err(|e| format!("the runtime or the model could not be loaded:\n{e}"))?;
    println!("\n{report}");
    Ok(ExitCode::SUCCESS)
}

impl common::MockModelSource for Options {
    /// A mock model with which the probe can answer every question.
    #[cfg(feature = "mock")]
    fn mock_model(&self) -> Result<rkllm::mock::MockModel, Failure> {
        Ok(probe::mock_model())
    }
}
