//! The crate's calls into the operating system outside the runtime's seam: the one module
//! besides `ffi` (the seam) and `mock` (a C runtime) where `unsafe` is allowed. Each function
//! is a thin, safe wrapper of one system call or a few, with a `// SAFETY:` comment on every
//! `unsafe` block.
//!
//! * [`fd`]: the descriptors the init capture redirects (`diagnosis::capture`);
//! * [`open_files_limit`] and [`set_open_files_soft_limit`]: `RLIMIT_NOFILE`, read by the
//!   preflight and raised only when the program asks (`Preflight::raise_nofile_limit`);
//! * [`filesystem_magic`]: `statfs`, which tells the prefix store that a directory is in RAM.

pub(crate) mod fd;

use std::io;
use std::path::Path;

/// `RLIMIT_NOFILE`: (soft, hard), as the kernel reports them (`RLIM_INFINITY` included).
pub(crate) fn open_files_limit() -> io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Sets the soft `RLIMIT_NOFILE` to `soft`, keeping the hard limit `hard`. This changes the
/// whole process; only an explicit request of the program calls it.
pub(crate) fn set_open_files_soft_limit(soft: libc::rlim_t, hard: libc::rlim_t) -> io::Result<()> {
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `new` is a valid `rlimit` read for the duration of the call; the kernel refuses
    // (EINVAL, EPERM) a soft limit above the hard one or a raised hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `statfs` filesystem type of `dir` (`None` where the platform has no such call).
#[cfg(target_os = "linux")]
pub(crate) fn filesystem_magic(dir: &Path) -> io::Result<Option<i64>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("the path contains a NUL byte"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c_path` is NUL-terminated and lives across the call; `stat` is valid for writing
    // a `statfs`, which the call fills in completely when it returns 0.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it initialised the struct.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::useless_conversion)] // `f_type`'s type differs between targets.
    Ok(Some(i64::from(stat.f_type)))
}

/// The `statfs` filesystem type of `dir` (`None` where the platform has no such call).
#[cfg(not(target_os = "linux"))]
pub(crate) fn filesystem_magic(_dir: &Path) -> io::Result<Option<i64>> {
    Ok(None)
}
