//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `rkllm`. Each variant is a cause a caller can act on, and
/// its message names the fix where there is one; [`Error::kind`] sorts them into the
/// caller's mistakes and the server's failures.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() {
/// use rkllm::mock::{InitFailure, MockModel};
/// use rkllm::{Error, ErrorKind, Model, Runtime};
/// // Bad values are refused before the runtime sees them, naming the parameter.
/// let err = Model::builder("model.rkllm").top_p(1.5).build().unwrap_err();
/// assert!(matches!(err, Error::InvalidParameter { name: "top_p", .. }));
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// // A runtime that refuses the model explains why, from its own log.
/// let file = MockModel::new()
///     .fail_init(InitFailure::InvalidModelMagic)
///     .write_temp_file()
///     .unwrap();
/// let err = Model::builder(&*file).runtime(Runtime::mock()).build().unwrap_err();
/// assert!(matches!(err, Error::Init(_)));
/// assert!(err.to_string().contains("toolkit"), "{err}");
/// # }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The runtime library could not be loaded, or is of an incompatible version.
    #[error(transparent)]
    Load(#[from] rkllm_sys::LoadError),

    /// `rkllm_init` failed (or returned no handle). Carries the runtime's own log read into a
    /// diagnosis; the message names the fix for the cause found.
    #[error(transparent)]
    Init(Box<crate::diagnosis::InitError>),

    /// A runtime function returned a failure code.
    #[error("{func} failed with return code {code}")]
    Call {
        /// The C function, e.g. `rkllm_run`.
        func: &'static str,
        /// What it returned.
        code: i32,
    },

    /// The runtime signalled `RKLLM_RUN_ERROR` during a run.
    #[error(
        "the runtime reported an error during the run after {tokens} generated token(s); \
         run with RKLLM_LOG_LEVEL=1 to see the runtime's log"
    )]
    Run {
        /// Tokens delivered before the error.
        tokens: usize,
    },

    /// A string handed to the runtime contains a NUL byte, which C cannot represent.
    #[error("{field} contains a NUL byte at byte {position}; C strings cannot hold NUL")]
    Nul {
        /// Which value (e.g. `model_path`, `prompt`).
        field: &'static str,
        /// Byte offset of the first NUL.
        position: usize,
    },

    /// A parameter is out of its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// An input buffer does not have a valid shape (empty, or a length that is not a
    /// multiple of the stated dimension).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The runtime produced bytes that are not UTF-8 (or a run ended inside a character).
    /// The raw bytes are kept.
    #[error("the runtime produced {} byte(s) that are not valid UTF-8: {bytes:02x?}", bytes.len())]
    InvalidUtf8 {
        /// The offending bytes, as the runtime sent them.
        bytes: Vec<u8>,
    },

    /// A LoRA adapter was selected that was not loaded into this model.
    #[error(
        "LoRA adapter `{name}` was not loaded into this model; load it with Model::load_lora first"
    )]
    UnknownLora {
        /// The adapter's name.
        name: String,
    },

    /// The model's session is in use: 1.1.x runs one inference per handle at a time.
    #[error(
        "the model already has an active session; drop it first (one run per handle at a time)"
    )]
    Busy,

    /// The queue for the model (or for a [`FairMutex`](crate::wait::FairMutex)) already held
    /// its maximum number of waiters, so the caller was refused at once
    /// ([`WaitError::QueueFull`](crate::wait::WaitError::QueueFull)). Kind
    /// [`ErrorKind::Busy`]: a server answers 429 with `Retry-After`.
    #[error("{limit} requests are already waiting for the model; try again later")]
    QueueFull {
        /// The maximum number of waiters.
        limit: usize,
    },

    /// A caller waited in the queue for its whole timeout and its turn did not come
    /// ([`WaitError::TimedOut`](crate::wait::WaitError::TimedOut)). Kind
    /// [`ErrorKind::TimedOut`]: a server answers 503 with `Retry-After`.
    #[error("waited {waited:?} in the queue and the model did not come free; try again later")]
    QueueTimedOut {
        /// How long the caller waited.
        waited: std::time::Duration,
    },

    /// A call that needs the handle idle (loading a LoRA adapter or a prompt cache, for
    /// example) came while a run was in progress. Finish, drop or abort the run's stream, then
    /// call again.
    #[error(
        "a run is in progress on this model and this call needs the handle idle; finish, drop \
         or abort the run's stream first"
    )]
    RunInProgress,

    /// The thread that runs `rkllm_run` could not be started (the process is out of threads
    /// or memory). The operating system's error is the [`source`](std::error::Error::source).
    #[error(
        "could not start the thread that runs the model; the process may be at its thread or \
         memory limit"
    )]
    ThreadSpawn {
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A run in hidden-state mode finished without delivering any hidden states.
    #[error(
        "the runtime finished the run without delivering hidden states; check that the model \
         supports RKLLM_INFER_GET_LAST_HIDDEN_LAYER and that the input is not empty"
    )]
    NoHiddenStates,

    /// Hidden states hold a value that is not finite (NaN or infinity), so no embedding can
    /// be computed from them.
    #[error(
        "the hidden states hold a non-finite value (NaN or infinity) at token {token}, \
         dimension {dimension}; the model's output cannot be pooled into an embedding (check \
         the model's conversion and quantization)"
    )]
    NonFiniteHiddenState {
        /// Row (token) of the first non-finite value.
        token: usize,
        /// Column (hidden dimension) of the first non-finite value.
        dimension: usize,
    },

    /// The model can no longer be used: a run did not stop within the stop timeout, so the
    /// runtime may still be working on the handle. Every later call on this model gets this
    /// error; drop the model and load it again (restart the process if the runtime does not
    /// let go of the NPU).
    #[error(
        "the model can no longer be used: {reason}; drop it and load it again (restart the \
         process if the runtime does not release the NPU)"
    )]
    ModelUnusable {
        /// What happened to make it unusable.
        reason: String,
    },

    /// The prompt has more tokens than the context allows. Shorten the prompt, raise
    /// `max_context_len`, or let a [`Conversation`](crate::chat::Conversation) with a budget
    /// drop old history.
    #[error(
        "the prompt has {tokens} tokens but the context allows {limit}; shorten the prompt, \
         raise max_context_len (up to the model's conversion limit), or reserve fewer tokens \
         for the reply"
    )]
    PromptTooLong {
        /// Tokens of the prompt.
        tokens: u32,
        /// Tokens the context allows for the prompt.
        limit: u32,
    },

    /// A file could not be read or written. The I/O error is the
    /// [`source`](std::error::Error::source) (print the chain to see it).
    #[error("{}: could not be read or written", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A conversation could not be formatted.
    #[error(transparent)]
    Chat(#[from] crate::chat::ChatError),

    /// The tokenizer failed (feature `tokenizer`): a file that is not a usable Gemma 2
    /// `tokenizer.json`, a text it could not encode, or no tokenizer where one is needed.
    /// The underlying error, when there is one, is the [`source`](std::error::Error::source).
    #[cfg(feature = "tokenizer")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokenizer")))]
    #[error("tokenizer: {message}")]
    Tokenizer {
        /// What failed, in this crate's words.
        message: String,
        /// The tokenizer's own error, if one caused this.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

impl Error {
    /// What kind of failure this is: the caller's mistake (bad input, too long, not found),
    /// a busy model, or a failure of the runtime or the system. A server picks its HTTP
    /// status from it; see [`ErrorKind`] for a suggested mapping.
    ///
    /// ```
    /// use rkllm::{Error, ErrorKind};
    /// assert_eq!(Error::Busy.kind(), ErrorKind::Busy);
    /// assert_eq!(Error::InvalidInput("empty".into()).kind().http_status(), 400);
    /// assert!(Error::PromptTooLong { tokens: 5000, limit: 4096 }.kind().is_caller_error());
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Nul { .. } | Error::InvalidParameter { .. } | Error::InvalidInput(_) => {
                ErrorKind::InvalidInput
            }
            Error::Chat(crate::chat::ChatError::MessageTooLong { .. })
            | Error::PromptTooLong { .. } => ErrorKind::TooLong,
            Error::Chat(_) => ErrorKind::InvalidInput,
            Error::UnknownLora { .. } => ErrorKind::NotFound,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::Busy | Error::RunInProgress | Error::QueueFull { .. } => ErrorKind::Busy,
            Error::QueueTimedOut { .. } => ErrorKind::TimedOut,
            Error::ModelUnusable { .. } => ErrorKind::Unavailable,
            Error::Init(_)
            | Error::Call { .. }
            | Error::Run { .. }
            | Error::InvalidUtf8 { .. }
            | Error::NoHiddenStates
            | Error::NonFiniteHiddenState { .. } => ErrorKind::Runtime,
            #[cfg(feature = "tokenizer")]
            Error::Tokenizer { .. } => ErrorKind::Runtime,
            Error::Load(_) | Error::Io { .. } | Error::ThreadSpawn { .. } => ErrorKind::System,
        }
    }
}

/// The kind of an [`Error`]: whose fault it is and what a caller can do about it.
///
/// The first three kinds are the caller's mistake and retrying the same request fails
/// again; `Busy` passes with time; the rest are failures of the runtime, the model or the
/// host. The suggested HTTP statuses ([`http_status`](Self::http_status)):
///
/// | Kind | Status | Why |
/// |------|--------|-----|
/// | `InvalidInput` | 400 Bad Request | the request is malformed |
/// | `TooLong` | 413 Content Too Large | the prompt does not fit the context (an OpenAI-compatible server may prefer 400 with the code `context_length_exceeded`, as OpenAI answers) |
/// | `NotFound` | 404 Not Found | a named adapter or file does not exist (when the server's own configuration names it, answer 500) |
/// | `Busy` | 429 Too Many Requests | the model is running another request, or its queue is full; send `Retry-After` |
/// | `TimedOut` | 503 Service Unavailable | a request waited in the queue for its whole timeout: the server is overloaded; send `Retry-After` |
/// | `Unavailable` | 503 Service Unavailable | the model must be reloaded before it serves again |
/// | `Runtime` | 500 Internal Server Error | the runtime failed the call or the run |
/// | `System` | 500 Internal Server Error | the library, a file, a thread: the host failed |
///
/// New kinds may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad input or parameters: a malformed prompt, a token id outside the vocabulary, a
    /// conversation the template refuses, an unknown role.
    InvalidInput,
    /// The prompt does not fit the model's context, even with old history dropped.
    TooLong,
    /// Something named does not exist: a LoRA adapter that was not loaded, a missing file.
    NotFound,
    /// The model is running another request, or too many wait for it ([`Error::Busy`],
    /// [`Error::RunInProgress`], [`Error::QueueFull`]); the same call succeeds once it is
    /// done.
    Busy,
    /// A wait for the model ended at its timeout ([`Error::QueueTimedOut`]): requests arrive
    /// faster than the model serves them. Retrying later may succeed.
    TimedOut,
    /// The model cannot serve until it is reloaded ([`Error::ModelUnusable`]).
    Unavailable,
    /// The runtime failed: initialisation, a call, a run, its output (bad UTF-8, missing or
    /// non-finite hidden states), the tokenizer.
    Runtime,
    /// The host failed: the runtime library could not be loaded, a file could not be read or
    /// written, a thread could not be started.
    System,
}

impl ErrorKind {
    /// Whether the caller's input caused the error (`InvalidInput`, `TooLong`, `NotFound`):
    /// the same request fails again, so it is not worth retrying.
    pub const fn is_caller_error(self) -> bool {
        matches!(
            self,
            ErrorKind::InvalidInput | ErrorKind::TooLong | ErrorKind::NotFound
        )
    }

    /// The HTTP status this crate suggests for the kind (see the table on [`ErrorKind`]).
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidInput => 400,
            ErrorKind::TooLong => 413,
            ErrorKind::NotFound => 404,
            ErrorKind::Busy => 429,
            ErrorKind::Unavailable | ErrorKind::TimedOut => 503,
            ErrorKind::Runtime | ErrorKind::System => 500,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::diagnosis::InitError> for Error {
    fn from(e: crate::diagnosis::InitError) -> Self {
        Error::Init(Box::new(e))
    }
}

/// Converts `s` into a C string, naming `field` in the error when it holds a NUL byte.
pub(crate) fn c_string(field: &'static str, s: impl Into<Vec<u8>>) -> Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|e| Error::Nul {
        field,
        position: e.nul_position(),
    })
}

/// A path as a C string, naming `field` when it holds a NUL byte.
pub(crate) fn path_c_string(
    field: &'static str,
    path: &std::path::Path,
) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    c_string(field, path.as_os_str().as_bytes())
}

// Defined here rather than beside the preflight, so the diagnosis (below the error type in
// the layers) does not import the error type that wraps its own `InitError`.
impl crate::diagnosis::PreflightReport {
    /// The error that makes loading pointless (the model file is missing, unreadable, not a
    /// regular file, or empty), if any: [`Error::Io`] or [`Error::InvalidParameter`].
    pub fn fatal(&self) -> Option<Error> {
        let path = self.model_path.clone();
        Some(match self.model_problem.as_ref()? {
            crate::diagnosis::preflight::ModelProblem::Io {
                kind,
                os_code,
                message,
            } => {
                let source = match os_code {
                    Some(code) => std::io::Error::from_raw_os_error(*code),
                    None => std::io::Error::new(*kind, message.clone()),
                };
                Error::Io { path, source }
            }
            crate::diagnosis::preflight::ModelProblem::NotAFile => Error::InvalidParameter {
                name: "model_path",
                reason: format!("{} is not a regular file", path.display()),
            },
            crate::diagnosis::preflight::ModelProblem::Empty => Error::InvalidParameter {
                name: "model_path",
                reason: format!(
                    "{} is empty (0 bytes); the download or conversion did not finish",
                    path.display()
                ),
            },
        })
    }
}
