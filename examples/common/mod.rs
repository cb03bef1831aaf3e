//! What the examples share, so that each example file holds only what it demonstrates:
//!
//! - the command line: a table of options, the `--help` text made from it, and usage errors
//!   that name the flag and the value;
//! - `main`'s scaffolding: exit code 0 on success and for `--help`, 1 for a failure at run
//!   time, 2 for a usage error; errors printed as `error: ...` on stderr;
//! - the choice of runtime and model: `--model`, `--lib`, `--mock`, `--tokenizer`, `--fast`,
//!   and the temporary files of a generated mock model, which live until `main` returns.
// Each example uses a part of this module.
#![allow(dead_code)]

use std::error::Error;
use std::ffi::OsString;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rkllm::{Model, ModelBuilder, Runtime};

/// A failure at run time: printed as `error: ...`, exit code 1.
pub type Failure = Box<dyn Error>;

/// A usage error: printed with a pointer to `--help`, exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl From<String> for UsageError {
    fn from(message: String) -> Self {
        UsageError(message)
    }
}

impl From<&str> for UsageError {
    fn from(message: &str) -> Self {
        UsageError(message.to_owned())
    }
}

/// What an option takes after its name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// A flag: `--mock`.
    Nothing,
    /// One value, given once: `--model PATH`.
    Value(&'static str),
    /// One value, given any number of times: `--mock-reply TEXT`.
    Values(&'static str),
}

/// One command-line option: its name, what it takes, and its line of help (`\n` continues
/// the help on the next line, aligned).
pub struct Opt {
    pub name: &'static str,
    pub takes: Takes,
    pub help: &'static str,
}

impl Opt {
    pub const fn flag(name: &'static str, help: &'static str) -> Opt {
        Opt {
            name,
            takes: Takes::Nothing,
            help,
        }
    }

    pub const fn value(name: &'static str, value: &'static str, help: &'static str) -> Opt {
        Opt {
            name,
            takes: Takes::Value(value),
            help,
        }
    }

    pub const fn repeated(name: &'static str, value: &'static str, help: &'static str) -> Opt {
        Opt {
            name,
            takes: Takes::Values(value),
            help,
        }
    }

    /// `--model PATH`, as the help and the usage errors show it.
    fn synopsis(&self) -> String {
        match self.takes {
            Takes::Nothing => self.name.to_owned(),
            Takes::Value(v) | Takes::Values(v) => format!("{} {v}", self.name),
        }
    }
}

/// An example's command line: what `--help` prints and what the parser accepts.
pub struct Cli {
    /// The first line of the help: what the example does.
    pub about: &'static str,
    /// The usage lines, without `Usage: `.
    pub usage: &'static [&'static str],
    /// The options, in titled groups.
    pub sections: &'static [(&'static str, &'static [Opt])],
    /// Text after the options (may be empty).
    pub after: &'static str,
}

/// Where the help of an option starts.
const HELP_COLUMN: usize = 24;

impl Cli {
    /// The full help text.
    pub fn help(&self) -> String {
        let mut out = format!("{}\n\n", self.about);
        for (i, usage) in self.usage.iter().enumerate() {
            let lead = if i == 0 { "Usage: " } else { "       " };
            out += &format!("{lead}{usage}\n");
        }
        for (title, opts) in self.sections {
            out += &format!("\n{title}:\n");
            for opt in *opts {
                out += &help_line(&opt.synopsis(), opt.help);
            }
        }
        out += &help_line("-h, --help", "this help");
        if !self.after.is_empty() {
            out += &format!("\n{}\n", self.after);
        }
        out
    }

    fn find(&self, name: &str) -> Option<&Opt> {
        self.sections
            .iter()
            .flat_map(|(_, opts)| opts.iter())
            .find(|opt| opt.name == name)
    }

    /// Reads the arguments; `Ok(None)` when they ask for the help. Options with a value take
    /// it as the next argument or after `=` (`--model=PATH`).
    pub fn parse(
        &self,
        raw: impl IntoIterator<Item = OsString>,
    ) -> Result<Option<Args>, UsageError> {
        let mut raw = raw.into_iter();
        let mut given: Vec<(&'static str, Option<String>)> = Vec::new();
        while let Some(arg) = raw.next() {
            let arg = utf8(arg, "argument")?;
            if arg == "-h" || arg == "--help" {
                return Ok(None);
            }
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            let Some(opt) = self.find(name) else {
                return Err(if name.starts_with('-') {
                    format!("unknown option {arg}").into()
                } else {
                    format!("unexpected argument {arg:?}: every value follows its option").into()
                });
            };
            let value = match (opt.takes, inline) {
                (Takes::Nothing, None) => None,
                (Takes::Nothing, Some(_)) => {
                    return Err(format!("{} takes no value, but got {arg}", opt.name).into())
                }
                (Takes::Value(_) | Takes::Values(_), Some(value)) => Some(value),
                (Takes::Value(_) | Takes::Values(_), None) => match raw.next() {
                    Some(value) => Some(utf8(value, opt.name)?),
                    None => return Err(format!("{} needs a value", opt.synopsis()).into()),
                },
            };
            if let (Takes::Value(_), Some((_, Some(first)))) =
                (opt.takes, given.iter().find(|(n, _)| *n == opt.name))
            {
                return Err(format!(
                    "{} is given twice ({first:?}, then {:?}); give it once",
                    opt.name,
                    value.unwrap_or_default()
                )
                .into());
            }
            given.push((opt.name, value));
        }
        Ok(Some(Args { given }))
    }
}

fn help_line(synopsis: &str, help: &str) -> String {
    let mut lines = help.lines();
    let mut out = format!(
        "  {synopsis:<width$}{}\n",
        lines.next().unwrap_or_default(),
        width = HELP_COLUMN - 2
    );
    for line in lines {
        out += &format!("{:HELP_COLUMN$}{line}\n", "");
    }
    out
}

fn utf8(arg: OsString, what: &str) -> Result<String, UsageError> {
    arg.into_string()
        .map_err(|arg| format!("{what} {:?} is not valid UTF-8", arg.to_string_lossy()).into())
}

/// The options given, as read by [`Cli::parse`].
pub struct Args {
    given: Vec<(&'static str, Option<String>)>,
}

impl Args {
    /// Whether the flag `name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.given.iter().any(|(n, _)| *n == name)
    }

    /// The value of `name`, when given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.given
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value of the repeatable `name`, in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.given
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }

    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.value(name).map(PathBuf::from)
    }

    /// `--style merge` as it was given, for messages; `None` when `name` was not given.
    pub fn shown(&self, name: &str) -> Option<String> {
        let (n, value) = self.given.iter().find(|(n, _)| *n == name)?;
        Some(match value {
            Some(value) => format!("{n} {value}"),
            None => (*n).to_owned(),
        })
    }

    /// The value of `name` read by `parse`; its error becomes a usage error that names the
    /// flag and the value.
    pub fn parsed<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, UsageError> {
        let Some(value) = self.value(name) else {
            return Ok(None);
        };
        parse(value)
            .map(Some)
            .map_err(|reason| format!("{name} {value}: {reason}").into())
    }

    /// A whole number in `range` (`default` when not given).
    pub fn number(
        &self,
        name: &str,
        default: u32,
        range: RangeInclusive<u32>,
    ) -> Result<u32, UsageError> {
        let parsed = self.parsed(name, |s| {
            let wanted = format!(
                "give a whole number from {} to {}",
                range.start(),
                range.end()
            );
            match s.parse::<u128>() {
                Ok(n) => u32::try_from(n)
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or(format!("out of range; {wanted}")),
                Err(_) => Err(format!("not a whole number; {wanted}")),
            }
        })?;
        Ok(parsed.unwrap_or(default))
    }
}

/// Runs an example: reads the command line with `cli`, turns it into the example's options
/// with `options`, then calls `run`. Prints the help, usage errors and failures, and returns
/// the exit code (0, 1 for a failure, 2 for a usage error, or what `run` returns).
pub fn main<T>(
    cli: &Cli,
    options: impl FnOnce(&Args) -> Result<T, UsageError>,
    run: impl FnOnce(T, &mut Scratch) -> Result<ExitCode, Failure>,
) -> ExitCode {
    let parsed = cli.parse(std::env::args_os().skip(1));
    let options = match parsed.and_then(|args| args.map(|args| options(&args)).transpose()) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{}", cli.help());
            return ExitCode::SUCCESS;
        }
        Err(UsageError(e)) => {
            eprintln!("error: {e}\n\nRun with --help for the options.");
            return ExitCode::from(2);
        }
    };
    let mut scratch = Scratch::default();
    let code = match run(options, &mut scratch) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    };
    // The temporary files go only now: the error above may name them.
    drop(scratch);
    code
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

// The options of the runtime, the model and its lengths. Each example lists those it takes.

const MODEL_HELP: &str = ".rkllm model, run on the board's librkllmrt.so (with --mock:
a mock model file)";
const LIB_HELP: &str = "the runtime library for --model (default: $RKLLM_LIB_PATH,
then the system's library search path)";
const TOKENIZER_HELP: &str = "Gemma 2 tokenizer.json: exact token counts, prompts sent as
token ids";
const MOCK_HELP: &str = "the mock runtime, with a generated mock model (or the mock
model file given with --model)";
const FAST_HELP: &str = "generated mock model: no simulated prefill and decode time";
const MAX_CONTEXT_HELP: &str = "context length in tokens, prompt and reply (default 4096)";
const MAX_NEW_TOKENS_HELP: &str = "reply length limit in tokens (default 512)";

pub const MODEL: Opt = Opt::value("--model", "PATH", MODEL_HELP);
pub const LIB: Opt = Opt::value("--lib", "PATH", LIB_HELP);
pub const TOKENIZER: Opt = Opt::value("--tokenizer", "PATH", TOKENIZER_HELP);
pub const MOCK: Opt = Opt::flag("--mock", MOCK_HELP);
pub const FAST: Opt = Opt::flag("--fast", FAST_HELP);
pub const MAX_CONTEXT: Opt = Opt::value("--max-context", "N", MAX_CONTEXT_HELP);
pub const MAX_NEW_TOKENS: Opt = Opt::value("--max-new-tokens", "N", MAX_NEW_TOKENS_HELP);

/// The context and reply lengths, from `--max-context` and `--max-new-tokens`.
pub struct Lengths {
    pub max_context: u32,
    pub max_new_tokens: u32,
}

impl Lengths {
    pub fn from_args(args: &Args) -> Result<Lengths, UsageError> {
        // The runtime takes them as C `int`s.
        let range = 1..=i32::MAX as u32;
        let lengths = Lengths {
            max_context: args.number("--max-context", 4096, range.clone())?,
            max_new_tokens: args.number("--max-new-tokens", 512, range)?,
        };
        if lengths.max_new_tokens >= lengths.max_context {
            return Err(format!(
                "--max-new-tokens {} leaves no room for the prompt in --max-context {}",
                lengths.max_new_tokens, lengths.max_context
            )
            .into());
        }
        Ok(lengths)
    }

    pub fn apply(&self, builder: ModelBuilder) -> ModelBuilder {
        builder
            .max_context_len(self.max_context)
            .max_new_tokens(self.max_new_tokens)
    }
}

/// The mock model an example generates when the mock runtime runs without `--model`.
pub trait MockModelSource {
    #[cfg(feature = "mock")]
    fn mock_model(&self) -> Result<rkllm::mock::MockModel, Failure>;
}

/// Which runtime and model an example runs, from `--model`, `--lib`, `--mock`,
/// `--tokenizer` and `--fast`.
pub struct Backend {
    model: Option<PathBuf>,
    lib: Option<PathBuf>,
    mock: bool,
    tokenizer: Option<PathBuf>,
    fast: bool,
}

impl Backend {
    /// Reads the options and refuses combinations that cannot apply. With `mock_by_default`
    /// the mock runtime runs when no `--model` is given; without, one of `--model` and
    /// `--mock` is required.
    pub fn from_args(args: &Args, mock_by_default: bool) -> Result<Backend, UsageError> {
        let model = args.path("--model");
        let backend = Backend {
            mock: args.flag("--mock") || (mock_by_default && model.is_none()),
            lib: args.path("--lib"),
            tokenizer: args.path("--tokenizer"),
            fast: args.flag("--fast"),
            model,
        };
        if backend.model.is_none() && !backend.mock {
            return Err("give --model PATH (or --mock for the mock runtime)".into());
        }
        if let Some(lib) = &backend.lib {
            let lib = lib.display();
            if args.flag("--mock") {
                return Err(format!(
                    "--lib {lib} cannot go with --mock: the mock runtime loads no library"
                )
                .into());
            }
            if backend.model.is_none() {
                return Err(format!(
                    "--lib {lib} needs --model PATH: without a model the mock runtime runs"
                )
                .into());
            }
        }
        if backend.fast {
            backend.only_generated_mock(args, "--fast")?;
        }
        #[cfg(not(feature = "mock"))]
        if backend.mock {
            return Err("the mock runtime (--mock, or no --model) needs the `mock` feature".into());
        }
        #[cfg(not(feature = "tokenizer"))]
        if let Some(path) = &backend.tokenizer {
            return Err(format!(
                "--tokenizer {} needs the `tokenizer` feature",
                path.display()
            )
            .into());
        }
        Ok(backend)
    }

    /// Refuses the option `name` unless the example generates the mock model (it shapes
    /// that model).
    pub fn only_generated_mock(&self, args: &Args, name: &str) -> Result<(), UsageError> {
        match (&self.model, args.shown(name)) {
            (Some(model), Some(shown)) => Err(format!(
                "{shown} applies to the generated mock model only; it cannot go with --model {}",
                model.display()
            )
            .into()),
            _ => Ok(()),
        }
    }

    /// Whether the mock runtime runs.
    pub fn is_mock(&self) -> bool {
        self.mock
    }

    /// Whether the mock model is generated (`--mock`, or no `--model`, in an example that
    /// defaults to the mock).
    pub fn generates_mock(&self) -> bool {
        self.mock && self.model.is_none()
    }

    /// Whether a generated mock model should take the board's time: when someone watches
    /// (`watched`) and `--fast` was not given.
    pub fn paced(&self, watched: bool) -> bool {
        watched && !self.fast
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

    pub fn tokenizer_path(&self) -> Option<&Path> {
        self.tokenizer.as_deref()
    }

    /// The runtime: the mock, or `librkllmrt.so` (from `--lib`, or found).
    pub fn runtime(&self) -> Result<Runtime, Failure> {
        if self.mock {
            #[cfg(feature = "mock")]
            return Ok(Runtime::mock());
        }
        Ok(match &self.lib {
            Some(lib) => Runtime::load_from(lib)?,
            None => Runtime::load()?,
        })
    }

    /// The `--tokenizer` file, loaded; its errors name the file.
    #[cfg(feature = "tokenizer")]
    pub fn tokenizer(
        &self,
    ) -> Result<Option<std::sync::Arc<rkllm::chat::GemmaTokenizer>>, Failure> {
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

    /// Gives a generated mock model the `--tokenizer` (in token mode the mock decodes the ids
    /// it receives with the same vocabulary) and, when `paced`, Gemma 2 2B's time on an
    /// RK3588, `speedup` times faster.
    #[cfg(feature = "mock")]
    pub fn finish_mock(
        &self,
        mut mock: rkllm::mock::MockModel,
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
        if let Some(path) = &self.tokenizer {
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
                Some(doctor) => format!("{e}\n(for a full report: {doctor})").into(),
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
