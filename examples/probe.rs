//! The on-board verification kit: finds out how this board's RKLLM runtime behaves where
//! it is undocumented, and prints a report to paste into a bug report.
//!
//! ```text
//! cargo run --example probe -- --model PATH [--tokenizer PATH] [--lib PATH] [--skip-second-model]
//! cargo run --example probe -- --mock
//! ```
//!
//! `--lib` names `librkllmrt.so` (default: `RKLLM_LIB_PATH`, then the system search path).
//! `--mock` probes the mock runtime with a mock model written to a temporary file.
//! Needs the cargo feature `probe` (on by default in this workspace).
//! Exits with 2 on bad arguments and 1 when the model could not be loaded.

use std::path::PathBuf;
use std::process::ExitCode;

use rkllm::probe::{self, ProbeConfig, Question};
use rkllm::Runtime;

const USAGE: &str = "usage: probe --model PATH [--tokenizer PATH] [--lib PATH] \
                     [--skip-second-model]\n       probe --mock";

#[derive(Default)]
struct Args {
    model: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    lib: Option<PathBuf>,
    mock: bool,
    skip_second_model: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args::default();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--model" => out.model = Some(value("--model")?),
            "--tokenizer" => out.tokenizer = Some(value("--tokenizer")?),
            "--lib" => out.lib = Some(value("--lib")?),
            "--mock" => out.mock = true,
            "--skip-second-model" => out.skip_second_model = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if out.mock == out.model.is_some() {
        return Err("give either --model PATH or --mock".into());
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("probe: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(report) => {
            println!("\n{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("probe: the runtime or the model could not be loaded:\n{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> rkllm::Result<probe::ProbeReport> {
    let (runtime, model) = if args.mock {
        mock()?
    } else {
        // The runtime prints the performance table the BOS question reads only at
        // RKLLM_LOG_LEVEL=1, and the probe (a library) never changes the environment. This
        // program sets it for the user, here: still on the main thread before any other
        // thread exists (nothing can read the environment concurrently) and before the
        // runtime is loaded. Running with RKLLM_LOG_LEVEL=1 set does the same.
        if std::env::var_os("RKLLM_LOG_LEVEL").is_none() {
            std::env::set_var("RKLLM_LOG_LEVEL", "1");
        }
        let runtime = match &args.lib {
            Some(lib) => Runtime::load_from(lib)?,
            None => Runtime::load()?,
        };
        (runtime, args.model.expect("checked by parse"))
    };
    let origin = runtime.origin().to_owned();
    let mut config = ProbeConfig::new(runtime, &model);
    if let Some(t) = args.tokenizer {
        config = config.tokenizer(t);
    }
    if args.skip_second_model {
        config = config.skip(Question::SecondModel);
    }
    eprintln!(
        "probing {} with {} (a minute or two; the runtime's own log lines follow)",
        model.display(),
        origin
    );
    let report = probe::run(&config);
    if args.mock {
        let _ = std::fs::remove_file(&model);
    }
    report
}

#[cfg(feature = "mock")]
fn mock() -> rkllm::Result<(Runtime, PathBuf)> {
    Ok((Runtime::mock(), probe::mock_model().write_temp()?))
}

#[cfg(not(feature = "mock"))]
fn mock() -> rkllm::Result<(Runtime, PathBuf)> {
    Err(rkllm::Error::InvalidParameter {
        name: "--mock",
        reason: "this build has no mock runtime (enable the `mock` feature)".into(),
    })
}
