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

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use rkllm::diagnosis::Preflight;
use rkllm::{Error, GenerateOptions, Model, Runtime};

mod common;
use common::{Backend, Failure, Scratch};

/// Checks whether an RKLLM model loads on this machine and explains why not.
#[derive(clap::Parser, Debug)]
#[command(
    name = "doctor",
    group = clap::ArgGroup::new("runtime").args(["model", "mock"]).multiple(true).required(true),
    after_help = "The exit code is 0 when the model loaded and ran, 1 otherwise, 2 for a usage \
                  error."
)]
struct Options {
    #[command(flatten)]
    backend: Backend,
    /// Generated mock model: make the load fail as the real runtime does
    #[arg(long, value_name = "FAILURE", conflicts_with = "model")]
    // Read by the mock model only.
    #[cfg_attr(not(feature = "mock"), allow(dead_code))]
    inject: Option<Inject>,
}

/// A load failure the generated mock model simulates (`--inject`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Inject {
    /// NPU memory allocation fails (e.g. w4a16 on RK3588)
    Oom,
    /// Too many open files
    Nofile,
    /// Invalid model magic (model from another toolkit)
    Magic,
    /// No weight memory for IOMMU domain 1
    Domain,
    /// Init returns success without a handle
    Null,
    /// Rknpu driver 0.9.6, and the NPU allocation fails
    OldDriver,
}

fn check(options: &Options) -> Result<(), String> {
    options.backend.check()
}

fn main() -> ExitCode {
    common::main(check, run)
}

/// Prints the report; the exit code says whether the model loaded and ran.
fn run(args: Options, scratch: &mut Scratch) -> Result<ExitCode, Failure> {
    let path = args.backend.model_path(&args, scratch)?;
    let runtime = match args.backend.runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            // Still worth knowing what the system looks like.
            section("preflight");
            print!("{}", Preflight::new().run(&path));
            section("runtime library");
            println!("FAILED: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    Ok(match report(&path, runtime)? {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

/// Loads the model and tries it; returns whether it loaded and ran.
fn report(path: &Path, runtime: Runtime) -> Result<bool, Failure> {
    section("preflight");
    // The same checks the builder runs before init; `run` also raises the open-files limit
    // as loading would.
    let report = Preflight::new().run(path);
    print!("{report}");
    if report.is_clean() {
        println!("no problems found");
    }

    section("runtime library");
    println!("{}", runtime.origin());

    section("loading the model (the runtime's own lines follow)");
    let started = Instant::now();
    let model = match Model::builder(path).runtime(runtime).build() {
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
    let init = model.init_diagnosis();
    match init.runtime_version() {
        Some(version) => {
            println!("runtime version: {version}");
            println!(
                "rknpu driver: {}",
                init.driver_version().unwrap_or("unknown")
            );
            println!("platform: {}", init.platform().unwrap_or("unknown"));
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

impl common::MockModelSource for Options {
    /// Gemma 2 2B as a mock model, failing to load as `--inject` says.
    #[cfg(feature = "mock")]
    fn mock_model(&self) -> Result<rkllm::mock::MockModel, Failure> {
        use rkllm::mock::{InitFailure, MockModel};

        // What the runtime asks the NPU for when Gemma 2 2B in w4a16 does not fit.
        let npu_oom = InitFailure::NpuOutOfMemory {
            requested_bytes: 232_128_512,
        };
        let mock = MockModel::new()
            .name("doctor-mock")
            .answer("Hello! The NPU answers.");
        Ok(match self.inject {
            None => mock,
            Some(Inject::Oom) => mock.fail_init(npu_oom),
            Some(Inject::Nofile) => mock.fail_init(InitFailure::TooManyOpenFiles),
            Some(Inject::Magic) => mock.fail_init(InitFailure::InvalidModelMagic),
            Some(Inject::Domain) => {
                mock.fail_init(InitFailure::WeightMemoryForDomain { domain: 1 })
            }
            Some(Inject::Null) => mock.fail_init(InitFailure::NullHandle),
            Some(Inject::OldDriver) => mock.driver_version("0.9.6").fail_init(npu_oom),
        })
    }
}
