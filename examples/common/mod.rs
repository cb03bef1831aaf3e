//! What the examples share, so that each example file holds only what it demonstrates:
//!
//! - the command line's shared options, as [`clap`] argument structs that each example
//!   flattens into its own `#[derive(Parser)]`: [`Backend`] (runtime and model),
//!   [`TokenizerArg`], [`Pace`] and [`Lengths`];
//! - `main`'s scaffolding: clap prints `--help` (exit 0) and usage errors (exit 2, naming the
//!   flag and the value); a failure at run time is printed as `error: ...` on stderr, exit 1;
//! - the temporary files of a generated mock model, which live until `main` returns.
//!
//! # One vocabulary of flags
//!
//! Every example, the server (`examples/serve`) included, names a setting the same way:
//!
//! | Flag                 | Meaning                                                        |
//! |----------------------|----------------------------------------------------------------|
//! | `--model PATH`       | the `.rkllm` model (with `--mock`: a mock model file)          |
//! | `--lib PATH`         | the runtime library for `--model`; refused with `--mock`       |
//! | `--mock`             | the mock runtime                                               |
//! | `--tokenizer PATH`   | Gemma 2 `tokenizer.json`: exact counts, prompts as token ids (with `--template`: that model's `tokenizer.json` or its directory) |
//! | `--template PATH`    | the model's chat template: its `tokenizer_config.json`, or the directory holding it and its `tokenizer.json` |
//! | `--tokenizer-config PATH` | serve: the model's `tokenizer_config.json`, its own chat template; `--tokenizer` is then that family's `tokenizer.json` |
//! | `--model-dir DIR`    | serve: `DIR/tokenizer_config.json`, and `DIR/tokenizer.json` when present |
//! | `--max-context N`    | context length in tokens, prompt and reply                     |
//! | `--max-new-tokens N` | reply length limit in tokens (not `--max-tokens`)              |
//! | `--system TEXT`      | system prompt                                                  |
//! | `--style STYLE`      | where the system prompt goes: merge, systemgemma2, turn, strict |
//! | `--prompt-cache DIR` | a rolling prompt cache in DIR                                  |
//! | `--mock-reply TEXT`  | generated mock model: the next reply (repeatable)              |
//! | `--fast`             | generated mock model: no simulated prefill and decode time     |
//!
//! Values are shown as `<PATH>`, `<N>`, `<TEXT>`, `<STYLE>`, `<DIR>` in help and errors. A
//! flag renamed to fit keeps its old name as a hidden clap alias (`alias = "max-tokens"`),
//! noted in CHANGELOG.md. Flags of one example only (`--prompt`, `--raw`, `--inject`,
//! `--host`, ...) are named by that example.
// Each example uses a part of this module.
#![allow(dead_code)]

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use rkllm::{Model, ModelBuilder, Runtime};

/// A failure at run time: printed as `error: ...`, exit code 1.
pub type Failure = Box<dyn Error>;

/// Runs an example: reads the command line into `P` (clap prints the help and usage errors
/// and gives their exit codes, 0 and 2), refuses what `check` finds wrong with it as a usage
/// error, then calls `run`. Prints a failure of `run` and returns exit code 1 for it, or the
/// code `run` returns.
pub fn main<P: Parser>(
    check: impl FnOnce(&P) -> Result<(), String>,
    run: impl FnOnce(P, &mut Scratch) -> Result<ExitCode, Failure>,
) -> ExitCode {
    let parsed = P::try_parse().and_then(|args| match check(&args) {
        Ok(()) => Ok(args),
        Err(message) => Err(P::command().error(clap::error::ErrorKind::ArgumentConflict, message)),
    });
    let args = match parsed {
        Ok(args) => args,
        Err(e) => {
            // The help on stdout, a usage error on stderr; a closed stream changes nothing.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let mut scratch = Scratch::default();
    let code = match run(args, &mut scratch) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", with_causes(&*e));
            ExitCode::FAILURE
        }
    };
    // The temporary files go only now: the error above may name them.
    drop(scratch);
    code
}

/// An error's message followed by its causes (`source()` chain), as `message: cause: ...`:
/// `rkllm`'s errors give an I/O or tokenizer cause only as their source.
pub fn with_causes(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    text
}

/// Temporary directories that live until [`main`] has printed the outcome.
#[derive(Default)]
pub struct Scratch {
    dirs: Vec<tempfile::TempDir>,
}

impl Scratch {
    /// Writes `mock` into a new temporary directory; returns its path.
    #[cfg(feature = "mock")]
    pub fn write_mock(&mut self, mock: &rkllm::mock::MockModel) -> Result<PathBuf, Failure> {
        let dir = tempfile::Builder::new()
            .prefix("rkllm-example-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory for the mock model: {e}"))?;
        let path = mock.write_to(dir.path().join("mock.rkllm"))?;
        self.dirs.push(dir);
        Ok(path)
    }
}

/// The parser of `--style`: one of the styles' names.
pub fn style_parser() -> impl clap::builder::TypedValueParser<Value = rkllm::chat::SystemStyle> {
    use clap::builder::TypedValueParser as _;
    use rkllm::chat::SystemStyle;

    let names = [
        SystemStyle::Merge,
        SystemStyle::SystemGemma2,
        SystemStyle::Turn,
        SystemStyle::Strict,
    ]
    .map(SystemStyle::name);
    clap::builder::PossibleValuesParser::new(names).try_map(|name| name.parse::<SystemStyle>())
}

/// The largest length the runtime takes: it reads lengths as C `int`s.
const MAX_LENGTH: i64 = i32::MAX as i64;

/// The parser of a length: a whole number the runtime takes.
fn length() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=MAX_LENGTH)
}

/// The context and reply lengths.
#[derive(clap::Args, Debug)]
pub struct Lengths {
    /// Context length in tokens, prompt and reply
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = length())]
    pub max_context: u32,
    /// Reply length limit in tokens
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = length())]
    pub max_new_tokens: u32,
}

impl Lengths {
    /// Refuses a reply limit that leaves no room for the prompt.
    pub fn check(&self) -> Result<(), String> {
        if self.max_new_tokens >= self.max_context {
            return Err(format!(
                "--max-new-tokens {} leaves no room for the prompt in --max-context {}",
                self.max_new_tokens, self.max_context
            ));
        }
        Ok(())
    }

    pub fn apply(&self, builder: ModelBuilder) -> ModelBuilder {
        builder
            .max_context_len(self.max_context)
            .max_new_tokens(self.max_new_tokens)
    }
}

/// `--fast`, for the examples whose generated mock model takes the board's time.
#[derive(clap::Args, Debug)]
pub struct Pace {
    /// Generated mock model: no simulated prefill and decode time
    #[arg(long, conflicts_with = "model")]
    pub fast: bool,
}

impl Pace {
    /// Whether a generated mock model should take the board's time: when someone watches
    /// (`watched`) and `--fast` was not given.
    pub fn paced(&self, watched: bool) -> bool {
        watched && !self.fast
    }
}

/// `--tokenizer PATH`.
#[derive(clap::Args, Debug)]
pub struct TokenizerArg {
    /// Gemma 2 tokenizer.json: exact token counts, prompts as token ids
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
}

impl TokenizerArg {
    /// Refuses `--tokenizer` when the `tokenizer` feature is off.
    pub fn check(&self) -> Result<(), String> {
        #[cfg(not(feature = "tokenizer"))]
        if let Some(path) = &self.tokenizer {
            return Err(format!(
                "--tokenizer {} needs the `tokenizer` feature",
                path.display()
            ));
        }
        Ok(())
    }

    pub fn path(&self) -> Option<&Path> {
        self.tokenizer.as_deref()
    }

    /// The `--tokenizer` file, loaded; its errors name the file.
    #[cfg(feature = "tokenizer")]
    pub fn load(&self) -> Result<Option<std::sync::Arc<rkllm::chat::GemmaTokenizer>>, Failure> {
        let Some(path) = &self.tokenizer else {
            return Ok(None);
        };
        match rkllm::chat::GemmaTokenizer::from_file(path) {
            Ok(tokenizer) => Ok(Some(std::sync::Arc::new(tokenizer))),
            Err(rkllm::Error::Io { source, .. }) => {
                Err(format!("cannot read the tokenizer {}: {source}", path.display()).into())
            }
            Err(e @ rkllm::Error::Tokenizer { .. }) => {
                let cause = std::error::Error::source(&e).map(|s| format!(" ({s})"));
                Err(format!(
                    "the tokenizer {} is not a Gemma 2 tokenizer.json: {e}{}",
                    path.display(),
                    cause.unwrap_or_default()
                )
                .into())
            }
            Err(e) => Err(format!("the tokenizer {}: {e}", path.display()).into()),
        }
    }
}

/// The mock model an example generates when the mock runtime runs without `--model`.
pub trait MockModelSource {
    #[cfg(feature = "mock")]
    fn mock_model(&self) -> Result<rkllm::mock::MockModel, Failure>;
}

/// Which runtime and model an example runs: `--model`, `--lib`, `--mock`. Without
/// `--model` the mock runtime runs with a generated mock model; examples that must not
/// default to it (doctor, probe) require one of `--model` and `--mock` with an `ArgGroup`.
#[derive(clap::Args, Debug)]
pub struct Backend {
    /// .rkllm model, run on librkllmrt.so (with --mock: a mock model file)
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Runtime library for --model (default: $RKLLM_LIB_PATH, or found)
    #[arg(long, value_name = "PATH", conflicts_with = "mock", requires = "model")]
    lib: Option<PathBuf>,
    /// The mock runtime (a generated mock model, or the mock file of --model)
    #[arg(long)]
    mock: bool,
}

impl Backend {
    /// Refuses the mock runtime when the `mock` feature is off.
    pub fn check(&self) -> Result<(), String> {
        #[cfg(not(feature = "mock"))]
        if self.is_mock() {
            return Err("the mock runtime (--mock, or no --model) needs the `mock` feature".into());
        }
        Ok(())
    }

    /// Whether the mock runtime runs.
    pub fn is_mock(&self) -> bool {
        self.mock || self.model.is_none()
    }

    /// Whether the mock model is generated (no `--model`).
    pub fn generates_mock(&self) -> bool {
        self.model.is_none()
    }

    /// The model file: `--model`, or the mock model of `source` written to `scratch`.
    pub fn model_path(
        &self,
        source: &impl MockModelSource,
        scratch: &mut Scratch,
    ) -> Result<PathBuf, Failure> {
        match &self.model {
            Some(path) => Ok(path.clone()),
            #[cfg(feature = "mock")]
            None => scratch.write_mock(&source.mock_model()?),
            #[cfg(not(feature = "mock"))]
            None => {
                let _ = (source, scratch);
                Err("no --model given, and the mock runtime needs the `mock` feature".into())
            }
        }
    }

    /// The runtime: the mock, or `librkllmrt.so` (from `--lib`, or found).
    pub fn runtime(&self) -> Result<Runtime, Failure> {
        if self.is_mock() {
            #[cfg(feature = "mock")]
            return Ok(Runtime::mock());
        }
        Ok(match &self.lib {
            Some(lib) => Runtime::load_from(lib)?,
            None => Runtime::load()?,
        })
    }

    /// Gives a generated mock model the `tokenizer` (in token mode the mock decodes the ids
    /// it receives with the same vocabulary) and, when `paced`, Gemma 2 2B's time on an
    /// RK3588, `speedup` times faster.
    #[cfg(feature = "mock")]
    pub fn finish_mock(
        &self,
        mut mock: rkllm::mock::MockModel,
        tokenizer: Option<&Path>,
        paced: bool,
        speedup: f64,
    ) -> Result<rkllm::mock::MockModel, Failure> {
        use rkllm::mock::Timing;

        if paced {
            let board = Timing::GEMMA2_2B_W8A8_RK3588;
            mock = mock.timing(Timing {
                prefill_seconds_per_token: board.prefill_seconds_per_token / speedup,
                decode_seconds_per_token: board.decode_seconds_per_token / speedup,
            });
        }
        if let Some(path) = tokenizer {
            let absolute = std::fs::canonicalize(path)
                .map_err(|e| format!("cannot read the tokenizer {}: {e}", path.display()))?;
            mock = mock.tokenizer_json(absolute);
        }
        Ok(mock)
    }

    /// Loads the model at `path` on [`runtime`](Self::runtime), set up by `configure`. A
    /// failure says how to get the doctor's full report when the model file outlives the
    /// example.
    pub fn load(
        &self,
        path: &Path,
        configure: impl FnOnce(ModelBuilder) -> ModelBuilder,
    ) -> Result<Model, Failure> {
        let builder = Model::builder(path).runtime(self.runtime()?);
        configure(builder)
            .build()
            .map_err(|e| match self.doctor_command() {
                Some(doctor) => {
                    format!("{}\n(for a full report: {doctor})", with_causes(&e)).into()
                }
                None => e.into(),
            })
    }

    /// The doctor's command line for this model; `None` for a generated mock model, which
    /// is gone once the example exits.
    pub fn doctor_command(&self) -> Option<String> {
        let model = self.model.as_ref()?;
        let mut command = "cargo run --example doctor --".to_owned();
        if self.mock {
            command += " --mock";
        }
        command += &format!(" --model {}", model.display());
        if let Some(lib) = &self.lib {
            command += &format!(" --lib {}", lib.display());
        }
        Some(command)
    }
}
