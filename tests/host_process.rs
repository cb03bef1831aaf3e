//! The crate inside a host program: loading models leaves the host's children, output and
//! resource limits as they were, whatever the host does meanwhile.
#![cfg(feature = "mock")]

use std::os::fd::RawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use rkllm::mock::MockModel;
use rkllm::{Model, Runtime};

/// Generous: only a hang, never slowness, fails a test.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Serialises the tests of this file: some point the process's fds 1 and 2 at pipes of their
/// own, which a model load (whose capture saves and restores them) on another test's thread
/// would undo.
static FDS: Mutex<()> = Mutex::new(());

/// Calls `f` until it returns without `EINTR`; panics on another error.
fn retry(what: &str, mut f: impl FnMut() -> libc::c_int) -> libc::c_int {
    loop {
        let rc = f();
        if rc >= 0 {
            return rc;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "{what}: {e}");
    }
}

/// The host's view of one of its standard streams: `fd` pointed at a pipe whose every byte
/// is kept; lines other than the test's own (those starting with `own`) are passed on to the
/// real descriptor, so that the harness's output meanwhile survives.
struct Observed {
    fd: RawFd,
    real: RawFd,
    bytes: mpsc::Receiver<Vec<u8>>,
}

impl Observed {
    fn start(fd: RawFd, own: &'static str) -> Observed {
        let mut ends = [0; 2];
        // SAFETY: `ends` has room for the two descriptors.
        retry("pipe", || unsafe {
            libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC)
        });
        // SAFETY: duplicating descriptors only.
        let real = retry("dup", || unsafe {
            libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3)
        });
        let (read_end, write_end) = (ends[0], ends[1]);
        let (tx, bytes) = mpsc::channel();
        thread::spawn(move || {
            let mut kept = Vec::new();
            let mut line = Vec::new();
            let pass_on = |line: &[u8]| {
                if !line.starts_with(own.as_bytes()) {
                    // SAFETY: `line` is valid for reads of its length.
                    unsafe { libc::write(real, line.as_ptr().cast(), line.len()) };
                }
            };
            let mut buf = [0u8; 8192];
            loop {
                // SAFETY: `buf` is valid for writes of its length.
                let n = unsafe { libc::read(read_end, buf.as_mut_ptr().cast(), buf.len()) };
                if n == 0 {
                    break;
                }
                if n < 0 {
                    assert_eq!(
                        std::io::Error::last_os_error().kind(),
                        std::io::ErrorKind::Interrupted
                    );
                    continue;
                }
                let chunk = &buf[..n as usize];
                for &b in chunk {
                    line.push(b);
                    if b == b'\n' {
                        pass_on(&line);
                        line.clear();
                    }
                }
                kept.extend_from_slice(chunk);
            }
            pass_on(&line);
            // SAFETY: the read end is this thread's, closed once.
            unsafe { libc::close(read_end) };
            let _ = tx.send(kept);
        });
        // SAFETY: points `fd` at the pipe; the write end's own number is closed after.
        retry("dup2", || unsafe { libc::dup2(write_end, fd) });
        // SAFETY: closing our extra copy of the write end.
        unsafe { libc::close(write_end) };
        Observed { fd, real, bytes }
    }

    /// Points the stream back at the real descriptor and returns every byte written to the
    /// pipe, once its last writer (a child, a forwarding thread) is gone.
    fn finish(self) -> String {
        // SAFETY: restores the descriptor saved in `start`, then closes the saved copy.
        retry("dup2", || unsafe { libc::dup2(self.real, self.fd) });
        // SAFETY: as above.
        unsafe { libc::close(self.real) };
        let bytes = self
            .bytes
            .recv_timeout(HANG_GUARD)
            .expect("the observed pipe never reached end-of-file");
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[test]
fn children_started_while_models_load_are_never_killed_and_are_heard() {
    let _fds = FDS.lock().unwrap_or_else(|e| e.into_inner());
    const CHILDREN: usize = 150;
    let stdout = Observed::start(1, "child-line-");
    let spawner = thread::spawn(|| {
        let children: Vec<_> = (0..CHILDREN)
            .map(|i| {
                let child = Command::new("sh")
                    .args(["-c", &format!("sleep 0.05; echo child-line-{i}")])
                    .spawn()
                    .expect("spawn sh");
                thread::sleep(Duration::from_millis(2));
                child
            })
            .collect();
        children
            .into_iter()
            .map(|mut child| child.wait().expect("wait for a child"))
            .collect::<Vec<_>>()
    });
    let file = MockModel::new().write_temp_file().unwrap();
    let mut loads = 0;
    while !spawner.is_finished() {
        let model = Model::builder(&file)
            .runtime(Runtime::mock())
            .build()
            .expect("the mock model loads");
        drop(model);
        loads += 1;
    }
    let statuses = spawner.join().unwrap();
    let out = stdout.finish();
    assert!(loads > 0);
    let killed: Vec<_> = statuses.iter().filter_map(|s| s.signal()).collect();
    assert!(
        killed.is_empty(),
        "{} of {CHILDREN} children were killed during {loads} loads, by signals {killed:?} \
         (13 is SIGPIPE)",
        killed.len()
    );
    for (i, status) in statuses.iter().enumerate() {
        assert!(status.success(), "child {i}: {status}");
        assert!(
            out.contains(&format!("child-line-{i}\n")),
            "the output of child {i} was lost"
        );
    }
}

#[test]
fn lines_other_threads_print_while_a_model_loads_stay_out_of_its_diagnosis() {
    let _fds = FDS.lock().unwrap_or_else(|e| e.into_inner());
    let stderr = Observed::start(2, "host-noise");
    let stop = Arc::new(AtomicBool::new(false));
    let noise = thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let line = format!("host-noise line {n}\n");
                // SAFETY: `line` is valid for reads of its length.
                unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
                n += 1;
                thread::yield_now();
            }
            n
        }
    });
    let file = MockModel::new().write_temp_file().unwrap();
    let mut diagnoses = Vec::new();
    for _ in 0..200 {
        let model = Model::builder(&file)
            .runtime(Runtime::mock())
            .build()
            .expect("the mock model loads");
        diagnoses.push(model.init_diagnosis().lines().to_vec());
    }
    stop.store(true, Ordering::Relaxed);
    let written = noise.join().unwrap();
    let err = stderr.finish();
    assert!(written > 0 && err.contains("host-noise line 0\n"));
    for lines in diagnoses {
        assert!(
            lines.iter().all(|l| !l.contains("host-noise")),
            "the host's lines entered the diagnosis: {lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("rkllm-runtime version: 1.1.1")),
            "the runtime's own line is missing: {lines:?}"
        );
    }
}

/// This process's (soft, hard) `RLIMIT_NOFILE`.
fn nofile() -> (libc::rlim_t, libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is valid for writes.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    (lim.rlim_cur, lim.rlim_max)
}

fn set_soft_nofile(soft: libc::rlim_t) {
    let (_, hard) = nofile();
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit within the hard limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

#[test]
fn building_a_model_leaves_the_open_files_limit_alone_unless_asked() {
    let _fds = FDS.lock().unwrap_or_else(|e| e.into_inner());
    let (soft, hard) = nofile();
    // Start below what the preflight raises to, so that a raise shows.
    let low = soft.min(512);
    assert!(
        low < hard.min(102_400),
        "the hard limit {hard} leaves no room to raise"
    );
    set_soft_nofile(low);
    let file = MockModel::new().write_temp_file().unwrap();
    let build = |raise: bool| {
        Model::builder(&file)
            .runtime(Runtime::mock())
            .raise_fd_limit(raise)
            .build()
            .expect("the mock model loads")
    };

    let model = build(false);
    let after_default = nofile().0;
    drop(model);
    let model = build(true);
    let after_opt_in = nofile().0;
    drop(model);
    set_soft_nofile(soft);

    assert_eq!(
        after_default, low,
        "the default build changed RLIMIT_NOFILE"
    );
    assert_eq!(
        after_opt_in,
        hard.min(102_400),
        "raise_fd_limit(true) did not raise it"
    );
}
