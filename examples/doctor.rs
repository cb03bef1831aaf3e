//! Checks whether a model can load here, and says what to do when it cannot.
//!
//! ```text
//! cargo run --release --example doctor -- --model gemma-2-2b-it-w8a8.rkllm   # on the board
//! cargo run --example doctor -- --mock --inject oom                          # a demo failure
//! ```
//!
//! It prints the preflight findings (model file, RAM, rknpu driver, SoC, open-files limit),
//! then loads the model: on success the runtime's version line and a short test run, on
//! failure the error's explanation and fix, and a bug report with the runtime's own lines.
//! The exit code is 0 when the model loaded and ran, 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use rkllm::diagnosis::Preflight;
use rkllm::{Error, GenerateOptions, Model, Runtime};

const USAGE: &str = "\
Checks whether an RKLLM model loads on this machine and explains why not.

Usage: doctor --model PATH [--lib PATH]
       doctor --mock [--inject FAILURE]

  --model PATH          .rkllm model to load with the board's librkllmrt.so
  --lib PATH            the runtime library (default: $RKLLM_LIB_PATH, then the system's
                        library search path)
  --mock                load a mock model on the mock runtime (with --model, PATH is a mock
                        model file)
  --inject FAILURE      mock: make the load fail like the real runtime does:
                          oom         NPU memory allocation fails (e.g. w4a16 on RK3588)
                          nofile      too many open files
                          magic       invalid model magic (model from another toolkit)
                          domain      no weight memory for IOMMU domain 1
                          null        init returns success without a handle
                          old-driver  rknpu driver 0.9.6, and the NPU allocation fails
  -h, --help            this help";

struct Args {
    model: Option<PathBuf>,
    lib: Option<PathBuf>,
    mock: bool,
    inject: Option<String>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        model: None,
        lib: None,
        mock: false,
        inject: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--model" => args.model = Some(value("--model")?.into()),
            "--lib" => args.lib = Some(value("--lib")?.into()),
            "--mock" => args.mock = true,
            "--inject" => args.inject = Some(value("--inject")?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.model.is_none() && !args.mock {
        return Err("give --model PATH (or --mock for a demonstration)".into());
    }
    if args.inject.is_some() && !args.mock {
        return Err("--inject works with the mock runtime only (add --mock)".into());
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\nRun with --help for the options.");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the report; returns whether the model loaded and ran.
fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let (path, runtime, _mock_dir) = if args.mock {
        mock_setup(args)?
    } else {
        let path = args.model.clone().expect("checked by parse_args");
        let runtime = match &args.lib {
            Some(lib) => Runtime::load_from(lib),
            None => Runtime::load(),
        };
        match runtime {
            Ok(runtime) => (path, runtime, None),
            Err(e) => {
                // Still worth knowing what the system looks like.
                section("preflight");
                print!("{}", Preflight::new().run(&path));
                section("runtime library");
                println!("FAILED: {e}");
                return Ok(false);
            }
        }
    };

    section("preflight");
    // The same checks the builder runs before init; `run` also raises the open-files limit
    // as loading would.
    let report = Preflight::new().run(&path);
    print!("{report}");
    if report.is_clean() {
        println!("no problems found");
    }

    section("runtime library");
    println!("{}", runtime.origin());

    section("loading the model (the runtime's own lines follow)");
    let started = Instant::now();
    let model = match Model::builder(&path).runtime(runtime).build() {
        Ok(model) => model,
        Err(Error::Init(e)) => {
            section("result: the model did not load");
            println!("{e}");
            section("bug report");
            print!("{}", e.bug_report());
            return Ok(false);
        }
        Err(e) => {
            section("result: the model did not load");
            println!("{e}");
            return Ok(false);
        }
    };
    let load_time = started.elapsed();

    section("result: the model loaded");
    println!("load time: {:.2} s", load_time.as_secs_f64());
    match model.runtime_info() {
        Some(info) => {
            println!("runtime version: {}", info.runtime_version);
            let unknown = || "unknown".to_owned();
            println!(
                "rknpu driver: {}",
                info.driver_version.unwrap_or_else(unknown)
            );
            println!("platform: {}", info.platform.unwrap_or_else(unknown));
        }
        None => println!("the runtime printed no version line"),
    }
    println!("context length: {} tokens", model.max_context_len());
    for line in model.init_diagnosis().lines() {
        if line.starts_with("W ") {
            println!("runtime warning: {line}");
        }
    }

    section("test run");
    let mut session = model.session()?;
    let prompt = "<start_of_turn>user\nSay hello.<end_of_turn>\n<start_of_turn>model\n";
    let options = GenerateOptions::gemma().max_tokens(8);
    match session.complete(prompt, &options) {
        Ok(done) => {
            let t = done.timings;
            println!(
                "{} tokens in {:.0} ms (first after {:.0} ms): {:?}",
                t.generated_tokens,
                t.total.as_secs_f64() * 1000.0,
                t.time_to_first_token.unwrap_or_default().as_secs_f64() * 1000.0,
                done.text
            );
            Ok(t.generated_tokens > 0)
        }
        Err(e) => {
            println!("FAILED: {e}");
            Ok(false)
        }
    }
}

fn section(title: &str) {
    println!("\n== {title} ==");
}

/// The mock model to load: the file given with `--model`, or one written to a temporary
/// directory with the injected failure.
#[cfg(feature = "mock")]
fn mock_setup(
    args: &Args,
) -> Result<(PathBuf, Runtime, Option<tempfile::TempDir>), Box<dyn std::error::Error>> {
    use rkllm::mock::{InitFailure, MockModel};

    if let Some(path) = &args.model {
        return Ok((path.clone(), Runtime::mock(), None));
    }
    // What the runtime asks the NPU for when Gemma 2 2B in w4a16 does not fit.
    let npu_oom = InitFailure::NpuOutOfMemory {
        requested_bytes: 232_128_512,
    };
    let mut mock = MockModel::new()
        .name("doctor-mock")
        .answer("Hello! The NPU answers.");
    mock = match args.inject.as_deref() {
        None => mock,
        Some("oom") => mock.fail_init(npu_oom),
        Some("nofile") => mock.fail_init(InitFailure::TooManyOpenFiles),
        Some("magic") => mock.fail_init(InitFailure::InvalidModelMagic),
        Some("domain") => mock.fail_init(InitFailure::WeightMemoryForDomain { domain: 1 }),
        Some("null") => mock.fail_init(InitFailure::NullHandle),
        Some("old-driver") => mock.driver_version("0.9.6").fail_init(npu_oom),
        Some(other) => {
            return Err(format!(
                "unknown --inject {other}: use oom, nofile, magic, domain, null or old-driver"
            )
            .into())
        }
    };
    let dir = tempfile::Builder::new().prefix("rkllm-doctor-").tempdir()?;
    let path = mock.write_to(dir.path().join("gemma-2-2b-it-mock.rkllm"))?;
    Ok((path, Runtime::mock(), Some(dir)))
}

#[cfg(not(feature = "mock"))]
fn mock_setup(
    _args: &Args,
) -> Result<(PathBuf, Runtime, Option<tempfile::TempDir>), Box<dyn std::error::Error>> {
    Err("--mock needs the `mock` feature".into())
}
