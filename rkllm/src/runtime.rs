//! Choosing the backend: the real runtime (loaded or linked) or the mock.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rkllm_sys::{Library, RkllmApi};

use crate::error::Result;

/// A source of the RKLLM 1.1.x functions that models are built on.
///
/// Cheap to clone; the library stays loaded while any clone or model built from it lives.
///
/// ```no_run
/// # fn main() -> rkllm::Result<()> {
/// // librkllmrt.so from RKLLM_LIB_PATH or the system loader's search path:
/// let runtime = rkllm::Runtime::load()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Runtime {
    lib: Arc<Library>,
    mock: bool,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("origin", &self.lib.origin())
            .finish()
    }
}

impl Runtime {
    /// Loads `librkllmrt.so`: from the path in `RKLLM_LIB_PATH` when set, else through the
    /// system loader's search path and the usual install directories. A runtime of 1.2.0 or
    /// later is refused with [`Error::Load`](crate::Error::Load).
    pub fn load() -> Result<Runtime> {
        Ok(Runtime {
            lib: Arc::new(Library::find(None)?),
            mock: false,
        })
    }

    /// Loads the runtime library from one explicit path.
    ///
    /// # Why this is safe to call
    ///
    /// Loading a shared library runs its initialisers, and this crate then calls its ten
    /// RKLLM functions through the types of the 1.1.1 header; `libloading` marks loading
    /// `unsafe` for that reason. Here the library has one purpose: the program names it as the
    /// RKLLM runtime, and the loader checks that it exports the ten 1.1.x functions and none
    /// of the 1.2-only ones (a 1.2 runtime, whose structures differ, is refused with
    /// [`Error::Load`](crate::Error::Load)) before any is called. What remains is trusting
    /// the runtime's code, which is the premise of this binding whichever way the library is
    /// found: [`load`](Self::load) takes `RKLLM_LIB_PATH` or the loader's search path, and
    /// feature `link` trusts the library linked at build time, both safe. An `unsafe` marker
    /// here would be bypassed by setting `RKLLM_LIB_PATH` and calling `load`, so it would only
    /// move the same trust elsewhere. Point it at a library built from Rockchip's RKLLM 1.1.x
    /// release, never at a file an untrusted party controls.
    pub fn load_from(path: impl AsRef<Path>) -> Result<Runtime> {
        Ok(Runtime {
            lib: Arc::new(Library::find(Some(path.as_ref()))?),
            mock: false,
        })
    }

    /// The runtime linked at build time (feature `link`).
    #[cfg(feature = "link")]
    #[cfg_attr(docsrs, doc(cfg(feature = "link")))]
    pub fn linked() -> Runtime {
        Runtime {
            lib: Arc::new(Library::linked()),
            mock: false,
        }
    }

    /// The in-process mock runtime (feature `mock`): it implements the same C ABI and is
    /// driven by mock model files, see [`crate::mock`].
    #[cfg(feature = "mock")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
    pub fn mock() -> Runtime {
        Runtime {
            lib: Arc::new(crate::mock::library()),
            mock: true,
        }
    }

    /// Where the functions come from: the library path, or the mock.
    pub fn origin(&self) -> &str {
        self.lib.origin()
    }

    /// Whether this is the mock runtime.
    pub fn is_mock(&self) -> bool {
        self.mock
    }

    pub(crate) fn api(&self) -> &RkllmApi {
        self.lib.api()
    }
}
