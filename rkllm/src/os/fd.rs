//! Thin, safe wrappers over the descriptor system calls the init capture
//! (`diagnosis::capture`) needs: pipes, duplicates, `dup2` onto fds 1 and 2, `poll`, reads
//! and writes.

// Under Miri the capture does not redirect descriptors, so none of this is used.
#![cfg_attr(miri, allow(dead_code))]

use std::io;
use std::os::fd::RawFd;

/// Flushes every C stdio output stream (`fflush(NULL)`): a runtime's `printf` output may sit
/// in a buffer that would otherwise reach the descriptor only after it was restored.
pub(crate) fn flush_c_stdio() {
    // SAFETY: `fflush(NULL)` is defined to flush all open output streams; no pointer of ours
    // is involved.
    unsafe {
        libc::fflush(std::ptr::null_mut());
    }
}

/// The lowest descriptor number the capture's own descriptors may take: 0, 1 and 2 are the
/// standard streams, which a daemon may have closed; a pipe end landing there would become
/// the process's stdin or stderr.
const FIRST_PRIVATE_FD: RawFd = 3;

/// Why [`wait_readable`] returned.
pub(crate) enum Wake {
    /// The data pipe has bytes (or reached end-of-file).
    Data,
    /// The stop pipe was written or closed.
    Stop,
}

/// Blocks until the data pipe is readable or the stop pipe is closed.
pub(crate) fn wait_readable(data: &Fd, stop: &Fd) -> io::Result<Wake> {
    let mut fds = [
        libc::pollfd {
            fd: data.0,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.0,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two `pollfd` for the duration of the call, and
        // its length is passed alongside.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // Data first: the stop signal only matters once the pipe is empty.
        if fds[0].revents != 0 {
            return Ok(Wake::Data);
        }
        if fds[1].revents != 0 {
            return Ok(Wake::Stop);
        }
    }
}

/// An owned file descriptor, closed on drop.
#[derive(Debug)]
pub(crate) struct Fd(pub(crate) RawFd);

impl Fd {
    /// A close-on-exec duplicate of `fd`, numbered 3 or above (children must not inherit
    /// our descriptors, and they must never take the place of a closed standard stream).
    pub(crate) fn dup(fd: RawFd) -> io::Result<Fd> {
        // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor number; an invalid one fails with
        // EBADF, which is reported.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, FIRST_PRIVATE_FD) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Fd(new))
    }

    pub(crate) fn dup_raw(&self) -> io::Result<Fd> {
        Fd::dup(self.0)
    }

    /// This descriptor, moved to 3 or above if it is one of 0, 1 and 2.
    fn above_std(self) -> io::Result<Fd> {
        if self.0 >= FIRST_PRIVATE_FD {
            Ok(self)
        } else {
            // `self` closes on return, freeing the low number again.
            self.dup_raw()
        }
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: `Fd` owns the descriptor: it was returned by `pipe2` or `fcntl` and is closed
        // exactly once, here.
        unsafe {
            libc::close(self.0);
        }
    }
}

/// A close-on-exec pipe: (read end, write end), both numbered 3 or above.
pub(crate) fn pipe() -> io::Result<(Fd, Fd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe2` writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let (read, write) = (Fd(fds[0]), Fd(fds[1]));
    Ok((read.above_std()?, write.above_std()?))
}

/// How many bytes the pipe `fd` holds, ready to read (`FIONREAD`).
pub(crate) fn bytes_available(fd: &Fd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one `int` through the pointer, which is valid for writes.
    if unsafe { libc::ioctl(fd.0, libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `dup2`, retried when interrupted or racing another `open` (EBUSY).
pub(crate) fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: `dup2` only manipulates the descriptor table; `to` is 1 or 2, which the
        // capture owns for its duration (its callers hold the capture's lock).
        if unsafe { libc::dup2(from, to) } >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) {
            return Err(e);
        }
    }
}

pub(crate) fn read(fd: &Fd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::read(fd.0, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

pub(crate) fn write_all(fd: &Fd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of `bytes.len()` bytes.
        let n = unsafe { libc::write(fd.0, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Test helpers for the capture's tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::os::fd::RawFd;

    /// Writes all of `bytes` to `fd` with `write(2)`, as C code would; panics on failure.
    pub(crate) fn c_write(fd: RawFd, bytes: &[u8]) {
        let mut off = 0;
        while off < bytes.len() {
            // SAFETY: the slice is valid for reads of its length.
            let n = unsafe { libc::write(fd, bytes[off..].as_ptr().cast(), bytes.len() - off) };
            assert!(
                n > 0,
                "write to fd {fd} failed: {}",
                std::io::Error::last_os_error()
            );
            off += n as usize;
        }
    }

    /// (device, inode) of what `fd` points at; panics on failure.
    pub(crate) fn identity(fd: RawFd) -> (u64, u64) {
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is valid for writes for the duration of the call.
        let rc = unsafe { libc::fstat(fd, &mut st) };
        assert_eq!(rc, 0, "fstat({fd}): {}", std::io::Error::last_os_error());
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        (st.st_dev as u64, st.st_ino as u64)
    }

    /// The descriptor flags of `fd` (`F_GETFD`), or -1.
    pub(crate) fn fd_flags(fd: RawFd) -> i32 {
        // SAFETY: F_GETFD only reads the descriptor's flags; a bad descriptor gives -1.
        unsafe { libc::fcntl(fd, libc::F_GETFD) }
    }
}
