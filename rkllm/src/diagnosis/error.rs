//! [`InitError`]: a failed `rkllm_init` with its diagnosis, and the fix to suggest.

use std::fmt;
use std::path::{Path, PathBuf};

use super::log::{Cause, Diagnosis};
use super::preflight::PreflightReport;
use super::version::Version;
use super::{human_bytes, human_bytes_short};

/// `rkllm_init` failed, or returned success without a handle.
///
/// The message says what happened, as far as the runtime's log tells, and names the fix for the
/// cause found. The runtime's lines stay attached ([`log_lines`](Self::log_lines),
/// [`bug_report`](Self::bug_report)).
///
/// ```
/// use rkllm::diagnosis::{Cause, Diagnosis, InitError};
///
/// let log = "E RKNN: [00:14:18.994] failed to allocate handle, ret: -1, errno: 14, errstr: Bad address\n\
///            E RKNN: [00:14:18.994] failed to malloc npu memory, size: 232128512, flags: 0x2\n";
/// let error = InitError::new(Some(-1), Diagnosis::parse(log), "gemma-2-2b-w4a16.rkllm".into());
/// assert_eq!(error.cause(), Cause::NpuOutOfMemory);
/// assert!(error.to_string().contains("w8a8"));
/// ```
#[derive(Debug, thiserror::Error)]
pub struct InitError {
    code: Option<i32>,
    diagnosis: Diagnosis,
    model_path: PathBuf,
    preflight: Option<PreflightReport>,
}

impl InitError {
    /// An init failure: `code` is what `rkllm_init` returned, `None` when it returned 0 but
    /// left the handle null.
    pub fn new(code: Option<i32>, diagnosis: Diagnosis, model_path: PathBuf) -> InitError {
        InitError {
            code,
            diagnosis,
            model_path,
            preflight: None,
        }
    }

    /// Attaches the preflight report, whose findings (driver version, RAM, open-files limit)
    /// sharpen the advice.
    pub fn with_preflight(mut self, report: PreflightReport) -> InitError {
        self.preflight = Some(report);
        self
    }

    /// What `rkllm_init` returned; `None` when it returned 0 without a handle.
    pub fn code(&self) -> Option<i32> {
        self.code
    }

    /// The reading of the runtime's log.
    pub fn diagnosis(&self) -> &Diagnosis {
        &self.diagnosis
    }

    /// The cause found in the runtime's log ([`Cause::None`] when it printed no error).
    pub fn cause(&self) -> Cause {
        self.diagnosis.cause()
    }

    /// The model that did not load.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// The preflight report, when preflight ran.
    pub fn preflight(&self) -> Option<&PreflightReport> {
        self.preflight.as_ref()
    }

    /// Every line the runtime printed around the call, for bug reports.
    pub fn log_lines(&self) -> &[String] {
        self.diagnosis.lines()
    }

    /// What happened, in one sentence without the fix.
    pub fn summary(&self) -> String {
        let d = &self.diagnosis;
        let mut s = match self.code {
            Some(code) => format!("rkllm_init returned {code}"),
            None => "rkllm_init returned success (0) without a model handle".to_owned(),
        };
        let what = match d.cause() {
            Cause::None if self.code.is_none() => String::new(),
            Cause::None if d.lines().is_empty() => "the runtime printed nothing".to_owned(),
            Cause::None => "the runtime printed no error".to_owned(),
            Cause::NpuOutOfMemory => match d.requested_bytes() {
                Some(bytes) => format!("the NPU could not allocate {}", human_bytes(bytes)),
                None => "the NPU could not allocate memory for the model".to_owned(),
            },
            Cause::TooManyOpenFiles => "the process ran out of file descriptors".to_owned(),
            Cause::InvalidModel => "the runtime rejected the model file".to_owned(),
            Cause::PlatformMismatch => match d.platform() {
                Some(p) => format!("the runtime does not support this platform ({p})"),
                None => "the runtime does not support this platform".to_owned(),
            },
            Cause::Unknown => "the runtime reported an error this crate does not know".to_owned(),
        };
        if !what.is_empty() {
            s.push_str(": ");
            s.push_str(&what);
        }
        if let Some(errno) = d.errno() {
            s.push_str(&format!("; errno {errno}{}", errno_text(errno)));
        }
        if d.driver_too_old() {
            s.push_str("; the runtime warned that the rknpu driver is too old");
        }
        s
    }

    /// The fix for the cause found: what to change, most likely first (the alternatives
    /// separated by `; `).
    pub fn fix(&self) -> String {
        self.fix_steps().join("; ")
    }

    /// The fix as alternatives, most likely first.
    fn fix_steps(&self) -> Vec<String> {
        let d = &self.diagnosis;
        match d.cause() {
            Cause::None if self.code.is_none() => vec![
                "the runtime returned success without a handle, a runtime fault: load one model \
                 per process and retry"
                    .to_owned(),
                "if it persists, report it with the runtime's log (RKLLM_LOG_LEVEL=2)".to_owned(),
            ],
            Cause::None => self.silent_failure_fix(),
            Cause::NpuOutOfMemory => self.out_of_memory_fix(),
            Cause::TooManyOpenFiles => {
                let mut fix = "raise the open-files limit (RLIMIT_NOFILE): run `ulimit -n 102400` \
                    before starting the program, or let the preflight raise the soft limit \
                    (`ModelBuilder::raise_fd_limit(true)`); the runtime exports every NPU buffer \
                    as a file descriptor"
                    .to_owned();
                if let Some(limit) = self.preflight.as_ref().and_then(|p| p.open_files()) {
                    fix.push_str(&format!(" (the soft limit is {limit})"));
                }
                vec![
                    fix,
                    "if the hard limit is too low, raise it (limits.conf, systemd LimitNOFILE=) so \
                     that the soft one can be raised"
                        .to_owned(),
                ]
            }
            Cause::InvalidModel => vec![format!(
                "reconvert the model with RKLLM-Toolkit 1.1.x to match the runtime{}: 1.1 \
                 runtimes refuse models from older toolkits (toolkit 1.1.4's update_rkllm() \
                 upgrades them); on RK3588 quantize as w8a8 (w8a8_g128/g256/g512), since w4a16 \
                 is RK3576-only",
                d.runtime_version()
                    .map(|v| format!(" ({v})"))
                    .unwrap_or_default()
            )],
            Cause::PlatformMismatch => vec![
                "run on an RK3588 or RK3576 board, the only platforms the RKLLM 1.1 runtime \
                 supports"
                    .to_owned(),
                "on such a board, use librkllmrt.so 1.1.x: the 1.0.1 runtime fails with \
                 `Query platform error!` on current drivers"
                    .to_owned(),
            ],
            Cause::Unknown => {
                let mut steps: Vec<String> = self.driver_upgrade().into_iter().collect();
                steps.push(
                    "no known fix for this message: rerun with RKLLM_LOG_LEVEL=2 and report the \
                     runtime's lines"
                        .to_owned(),
                );
                steps
            }
        }
    }

    /// The Display text followed by every captured runtime line and the preflight findings:
    /// paste this into a bug report.
    pub fn bug_report(&self) -> String {
        let mut s = format!(
            "{self}\n\nruntime log ({} lines):\n",
            self.log_lines().len()
        );
        for line in self.log_lines() {
            s.push_str("  ");
            s.push_str(line);
            s.push('\n');
        }
        if let Some(report) = &self.preflight {
            s.push_str("\npreflight:\n");
            for line in report.to_string().lines() {
                s.push_str("  ");
                s.push_str(line);
                s.push('\n');
            }
        }
        s
    }

    /// The driver version known from the runtime's version line or from preflight.
    fn known_driver(&self) -> Option<Version> {
        let from_log = self.diagnosis.driver_version().and_then(Version::find_in);
        from_log.or_else(|| self.preflight.as_ref().and_then(|p| p.driver_version()))
    }

    /// "Upgrade the driver", when the runtime warned or the version found is below 0.9.7.
    fn driver_upgrade(&self) -> Option<String> {
        let found = self.known_driver();
        let old =
            self.diagnosis.driver_too_old() || found.is_some_and(|v| v < Version::DRIVER_MINIMUM);
        old.then(|| {
            format!(
                "upgrade the rknpu driver to {} or later, {} best{}",
                Version::DRIVER_MINIMUM,
                Version::DRIVER_RECOMMENDED,
                found.map(|v| format!(" (found {v})")).unwrap_or_default()
            )
        })
    }

    fn out_of_memory_fix(&self) -> Vec<String> {
        let d = &self.diagnosis;
        let mut steps = Vec::new();
        if let Some(upgrade) = self.driver_upgrade() {
            steps.push(format!(
                "{upgrade}: old drivers cannot map multi-GB NPU buffers"
            ));
        }
        let name = self
            .model_path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase());
        let on_rk3576 = d
            .platform()
            .is_some_and(|p| p.eq_ignore_ascii_case("RK3576"))
            || self.preflight.as_ref().and_then(|p| p.platform()) == Some("RK3576");
        if !on_rk3576 {
            if name.as_deref().is_some_and(|n| n.contains("w4a16")) {
                steps.push(
                    "use a w8a8 model: this looks like a w4a16 model, and on RK3588 only w8a8 \
                     (and w8a8_g128/g256/g512) models load; w4a16 is RK3576-only, so Gemma 2 \
                     w4a16 cannot load on RK3588"
                        .to_owned(),
                );
            } else {
                steps.push(
                    "check the quantization: on RK3588 only w8a8 (and w8a8_g128/g256/g512) \
                     models load; w4a16 is RK3576-only, so Gemma 2 w4a16 cannot load on RK3588"
                        .to_owned(),
                );
            }
        }
        steps.push(
            "if another NPU model (e.g. an RKNN vision model) is already loaded in this process, \
             load this one into another IOMMU domain with ModelBuilder::base_domain_id(1)"
                .to_owned(),
        );
        let mut memory = "lower max_context_len or use a smaller model".to_owned();
        if let Some(bytes) = d.requested_bytes() {
            memory.push_str(&format!(
                " (the runtime asked for {})",
                human_bytes_short(bytes)
            ));
        }
        if let Some(available) = self.preflight.as_ref().and_then(|p| p.mem_available()) {
            memory.push_str(&format!(
                "; {} of RAM was available",
                human_bytes_short(available)
            ));
        }
        steps.push(memory);
        steps
    }

    fn silent_failure_fix(&self) -> Vec<String> {
        let access = "check access to the NPU device (permissions of /dev/dri/renderD*, SELinux \
                      on Android)"
            .to_owned();
        match self.known_driver() {
            Some(v) if v >= Version::DRIVER_MINIMUM => vec![
                access,
                format!(
                    "the rknpu driver ({v}) is recent enough; check that the model file is \
                     complete and converted for this platform"
                ),
            ],
            found => vec![
                format!(
                    "the likely fix is the rknpu driver: {} or later is needed, {} best ({})",
                    Version::DRIVER_MINIMUM,
                    Version::DRIVER_RECOMMENDED,
                    match found {
                        Some(v) => format!("found {v}"),
                        None => "check `cat /sys/kernel/debug/rknpu/version` as root".to_owned(),
                    }
                ),
                access,
            ],
        }
    }
}

impl fmt::Display for InitError {
    /// The summary, the first error line, the fix (one alternative a line) and how to learn
    /// more.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "failed to load model {}: {}",
            self.model_path.display(),
            self.summary()
        )?;
        if let Some(line) = self.diagnosis.first_error_line() {
            writeln!(f, "  runtime: {line}")?;
        }
        for (i, step) in self.fix_steps().iter().enumerate() {
            writeln!(f, "  {} {step}", if i == 0 { "fix:" } else { " or:" })?;
        }
        let lines = self.log_lines().len();
        if lines == 0 {
            write!(
                f,
                "  more: rerun with RKLLM_LOG_LEVEL=2 for the runtime's detailed log (no runtime \
                 output was captured)"
            )
        } else {
            write!(
                f,
                "  more: rerun with RKLLM_LOG_LEVEL=1 (or 2 for more detail); \
                 InitError::bug_report() holds the {lines} line(s) the runtime printed"
            )
        }
    }
}

/// `: Bad address` for the errnos the runtime's failures carry.
fn errno_text(errno: i32) -> &'static str {
    match errno {
        12 => ": Cannot allocate memory",
        14 => ": Bad address",
        23 => ": Too many open files in system",
        24 => ": Too many open files",
        _ => "",
    }
}
