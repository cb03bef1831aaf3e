//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `rkllm`. Each variant is a cause a caller can act on, and
/// its message names the fix where there is one.
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

    /// A call needs the model's handle idle, but a run is in flight.
    #[error("a run is in progress on this model; wait for it to end (or abort it) first")]
    RunInProgress,

    /// A thread could not be started (the run's worker).
    #[error("could not start a thread for the run: {source}")]
    ThreadSpawn {
        /// Why.
        source: std::io::Error,
    },

    /// A hidden-layer run ended without delivering hidden states.
    #[error("the runtime delivered no hidden states for a hidden-layer run")]
    NoHiddenStates,

    /// A run did not stop within the model's stop timeout; the model's handle was left to the
    /// runtime and the model cannot be used again. Load the model anew (or restart the
    /// process) and raise `ModelBuilder::stop_timeout` if long prefills are expected.
    #[error("the model is unusable: {reason}")]
    ModelUnusable {
        /// What happened.
        reason: String,
    },

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A conversation could not be formatted.
    #[error(transparent)]
    Chat(#[from] crate::chat::ChatError),

    /// The tokenizer failed (feature `tokenizer`).
    #[cfg(feature = "tokenizer")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokenizer")))]
    #[error("tokenizer: {0}")]
    Tokenizer(String),
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
