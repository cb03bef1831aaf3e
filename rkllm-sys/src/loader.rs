//! Finding and loading `librkllmrt.so`, and refusing runtimes of another ABI.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::api::RkllmApi;
use crate::INCOMPATIBLE_SYMBOLS;

/// File name of the runtime library, as the system loader looks it up.
pub const LIBRARY_NAME: &str = "librkllmrt.so";

/// Environment variable naming the runtime library file to load.
pub const LIB_PATH_ENV: &str = "RKLLM_LIB_PATH";

/// Places tried after the system loader's own search, for a library copied there without
/// `ldconfig` (the vendor's instructions copy it to `/usr/lib`).
const FALLBACK_PATHS: [&str; 3] = [
    "/usr/lib/librkllmrt.so",
    "/usr/local/lib/librkllmrt.so",
    "/usr/lib/aarch64-linux-gnu/librkllmrt.so",
];

/// How the runtime could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// No candidate could be opened. Each entry is a candidate with the loader's reason.
    NotFound {
        /// The candidates tried, in order, with the system loader's message for each.
        tried: Vec<(String, String)>,
    },
    /// The library opened but lacks one of the ten 1.1.x functions.
    MissingSymbol {
        /// The library that was opened.
        library: String,
        /// The missing function.
        symbol: &'static str,
    },
    /// The library exports a function that only runtimes of 1.2.0 and later have; their ABI
    /// differs from 1.1.x and using them through these bindings would corrupt memory.
    IncompatibleVersion {
        /// The library that was opened.
        library: String,
        /// The 1.2-only function it exports.
        symbol: &'static str,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound { tried } => {
                write!(f, "the RKLLM runtime library could not be loaded; tried:")?;
                for (candidate, reason) in tried {
                    write!(f, " `{candidate}` ({reason});")?;
                }
                write!(
                    f,
                    " install librkllmrt.so from the RKLLM 1.1.x SDK (rkllm-runtime/Linux/librkllm_api/\
                     aarch64/librkllmrt.so) into /usr/lib, or set {LIB_PATH_ENV} to its path"
                )
            }
            LoadError::MissingSymbol { library, symbol } => write!(
                f,
                "`{library}` does not export `{symbol}`: it is not an RKLLM 1.1.x runtime \
                 (install librkllmrt.so from the RKLLM 1.1.x SDK)"
            ),
            LoadError::IncompatibleVersion { library, symbol } => write!(
                f,
                "`{library}` exports `{symbol}`, so it is RKLLM runtime 1.2.0 or later, whose ABI \
                 differs from 1.1.x; use librkllmrt.so from RKLLM 1.1.0 to 1.1.4 (and a model \
                 converted by the matching toolkit)"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// A source of the RKLLM 1.1.x functions: a loaded `librkllmrt.so`, the linked one, or
/// another implementation of the same C ABI.
///
/// The function table stays valid as long as the `Library` lives. A library loaded from a
/// file stays mapped for the life of the process (`RTLD_NODELETE`), even after every
/// `Library` value is dropped: the runtime may still own threads that run its code.
pub struct Library {
    api: RkllmApi,
    origin: String,
    // Declared after `api` so that the table is never used after the library is unloaded.
    _lib: Option<libloading::Library>,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Library {
    /// Loads the runtime: from `explicit` when given; else from the path in the
    /// `RKLLM_LIB_PATH` environment variable when set; else by name through the system
    /// loader's search path, then from the usual install directories.
    ///
    /// An explicit path or the environment variable is the only candidate tried when given,
    /// so a wrong path is reported rather than silently replaced by another library.
    pub fn find(explicit: Option<&Path>) -> Result<Library, LoadError> {
        if let Some(path) = explicit {
            return Library::open(path);
        }
        if let Some(path) = std::env::var_os(LIB_PATH_ENV).filter(|p| !p.is_empty()) {
            return Library::open(path).map_err(|e| match e {
                LoadError::NotFound { tried } => LoadError::NotFound {
                    tried: tried
                        .into_iter()
                        .map(|(c, r)| (format!("{c} (from {LIB_PATH_ENV})"), r))
                        .collect(),
                },
                other => other,
            });
        }
        let mut tried = Vec::new();
        for candidate in std::iter::once(LIBRARY_NAME).chain(FALLBACK_PATHS) {
            match Library::open(candidate) {
                Err(LoadError::NotFound { tried: mut t }) => tried.append(&mut t),
                other => return other,
            }
        }
        Err(LoadError::NotFound { tried })
    }

    /// Loads the runtime as [`Library::find`] does with no explicit path.
    pub fn open_default() -> Result<Library, LoadError> {
        Library::find(None)
    }

    /// Loads the runtime from one file (a path, or a bare name for the system loader), and
    /// checks that it exports the ten 1.1.x functions and none of the 1.2-only ones.
    pub fn open(path: impl AsRef<OsStr>) -> Result<Library, LoadError> {
        let path = path.as_ref();
        let shown = PathBuf::from(path).display().to_string();
        // SAFETY: loading a shared library runs its initialisers. The library is the one the
        // caller named as the RKLLM runtime; trusting its code is the premise of any binding,
        // exactly as when it is linked at build time.
        let lib = unsafe { open_resident(path) }.map_err(|e| LoadError::NotFound {
            tried: vec![(shown.clone(), loader_reason(&e))],
        })?;
        for symbol in INCOMPATIBLE_SYMBOLS {
            // SAFETY: the symbol is only looked up, never called or dereferenced.
            if unsafe { lib.get::<*const ()>(symbol.as_bytes()) }.is_ok() {
                return Err(LoadError::IncompatibleVersion {
                    library: shown,
                    symbol,
                });
            }
        }
        macro_rules! sym {
            ($name:literal) => {{
                // SAFETY: the symbol is read as a function pointer of the exact signature the
                // 1.1.x ABI declares for it (the field type of `RkllmApi` it is stored in); the
                // pointer is copied out and stays valid while `lib` is kept in the `Library`.
                match unsafe { lib.get(concat!($name, "\0").as_bytes()) } {
                    Ok(s) => *s,
                    Err(_) => {
                        return Err(LoadError::MissingSymbol {
                            library: shown,
                            symbol: $name,
                        })
                    }
                }
            }};
        }
        let api = RkllmApi {
            create_default_param: sym!("rkllm_createDefaultParam"),
            init: sym!("rkllm_init"),
            load_lora: sym!("rkllm_load_lora"),
            load_prompt_cache: sym!("rkllm_load_prompt_cache"),
            release_prompt_cache: sym!("rkllm_release_prompt_cache"),
            destroy: sym!("rkllm_destroy"),
            run: sym!("rkllm_run"),
            run_async: sym!("rkllm_run_async"),
            abort: sym!("rkllm_abort"),
            is_running: sym!("rkllm_is_running"),
        };
        Ok(Library {
            api,
            origin: shown,
            _lib: Some(lib),
        })
    }

    /// The runtime linked at build time (feature `link`).
    ///
    /// Building this table also checks, at compile time, that every field of [`RkllmApi`]
    /// has the signature bindgen generated for the C declaration.
    #[cfg(feature = "link")]
    #[cfg_attr(docsrs, doc(cfg(feature = "link")))]
    pub fn linked() -> Library {
        use crate::linked as l;
        let api = RkllmApi {
            create_default_param: l::rkllm_createDefaultParam,
            init: l::rkllm_init,
            load_lora: l::rkllm_load_lora,
            load_prompt_cache: l::rkllm_load_prompt_cache,
            release_prompt_cache: l::rkllm_release_prompt_cache,
            destroy: l::rkllm_destroy,
            run: l::rkllm_run,
            run_async: l::rkllm_run_async,
            abort: l::rkllm_abort,
            is_running: l::rkllm_is_running,
        };
        Library {
            api,
            origin: "librkllmrt.so (linked)".to_owned(),
            _lib: None,
        }
    }

    /// A table of functions from another implementation of the 1.1.1 C ABI, such as a mock.
    ///
    /// # Safety
    ///
    /// Every function must behave as the RKLLM 1.1.1 runtime documents: read and write only
    /// through the pointers it is given, within the documented struct layouts, call the
    /// registered callback only while `run` for that handle is in progress, and stay callable
    /// for as long as the returned `Library` lives.
    pub unsafe fn from_api(api: RkllmApi, origin: impl Into<String>) -> Library {
        Library {
            api,
            origin: origin.into(),
            _lib: None,
        }
    }

    /// The function table.
    pub fn api(&self) -> &RkllmApi {
        &self.api
    }

    /// Where the functions came from: the path loaded, or the name given to
    /// [`Library::from_api`].
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// `dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE)`: every symbol is resolved now (a
/// library missing a dependency fails here, with the loader's reason), and the library is
/// never unmapped, even after the last `dlclose`. The runtime is closed C++ that may keep
/// threads or `atexit` handlers of its own after `rkllm_destroy`; unmapping its code under
/// them would crash the process later, far from the cause.
///
/// # Safety
///
/// Loading a library runs its initialisers, which may do anything; see
/// [`libloading::Library::new`].
unsafe fn open_resident(path: &OsStr) -> Result<libloading::Library, libloading::Error> {
    use libloading::os::unix;
    let flags = unix::RTLD_NOW | unix::RTLD_LOCAL | libc::RTLD_NODELETE;
    // SAFETY: as for this function; the flags are valid `dlopen` modes.
    unsafe { unix::Library::open(Some(path), flags) }.map(Into::into)
}

fn loader_reason(e: &libloading::Error) -> String {
    let text = e.to_string();
    // libloading prefixes dlerror()'s text with its own; keep the loader's part.
    match text.split_once(": ") {
        Some((_, rest)) if !rest.is_empty() => rest.to_owned(),
        _ => text,
    }
}
