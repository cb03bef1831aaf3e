//! Cheap checks before `rkllm_init`: the ones that explain a failure before it happens.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::human_bytes;
use super::version::Version;

/// The open-files limit the vendor servers set (each NPU buffer is exported as a descriptor).
const NOFILE_TARGET: u64 = 102_400;

/// Where the rknpu driver states its version, tried in this order: debugfs (as the RKLLM
/// guide documents it, readable by root only) and the module parameter directory.
const DRIVER_VERSION_FILES: [&str; 2] =
    ["sys/kernel/debug/rknpu/version", "sys/module/rknpu/version"];

/// The device tree's compatible strings; `/proc/device-tree` links to the firmware directory,
/// which is tried too.
const COMPATIBLE_FILES: [&str; 2] = [
    "proc/device-tree/compatible",
    "sys/firmware/devicetree/base/compatible",
];

/// SoCs the 1.1.x runtime supports, as device-tree model names after `rockchip,`.
const SUPPORTED_SOCS: [&str; 3] = ["rk3588", "rk3588s", "rk3576"];

/// Checks to run before loading a model.
///
/// The system files are read below a root directory (`/` by default), so tests and tools can
/// point it at a copy of `/proc` and `/sys`.
///
/// Nothing here changes the process unless asked: the open-files limit (`RLIMIT_NOFILE`) is
/// only read and reported, and raised only with [`raise_fd_limit(true)`](Self::raise_fd_limit)
/// or an explicit [`raise_nofile_limit`](Self::raise_nofile_limit). The limit is
/// process-wide: a program that uses `select()` breaks once its descriptors pass
/// `FD_SETSIZE` (1024), so raising it is the program's decision.
///
/// ```no_run
/// use rkllm::diagnosis::Preflight;
///
/// let report = Preflight::new().run("/models/gemma-2-2b-w8a8.rkllm".as_ref());
/// for warning in report.warnings() {
///     eprintln!("warning: {warning}");
/// }
/// if let Some(error) = report.fatal() {
///     return Err(error);
/// }
/// # Ok::<(), rkllm::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Preflight {
    root: PathBuf,
    raise_fd_limit: bool,
}

impl Default for Preflight {
    fn default() -> Preflight {
        Preflight::new()
    }
}

impl Preflight {
    /// Checks against the real system (root `/`).
    pub fn new() -> Preflight {
        Preflight::with_root("/")
    }

    /// Checks against system files below `root` (`root/proc/meminfo`, `root/sys/…`). The model
    /// path is used as given, not below `root`.
    pub fn with_root(root: impl Into<PathBuf>) -> Preflight {
        Preflight {
            root: root.into(),
            raise_fd_limit: false,
        }
    }

    /// Whether [`run`](Self::run) raises this process's soft open-files limit
    /// ([`raise_nofile_limit`](Self::raise_nofile_limit)) rather than only reading it.
    /// Default off: the limit is process-wide, and raising it past 1024 breaks code of the
    /// host program that uses `select()`. Turn it on in a program that owns its process and
    /// loads large models (the runtime exports every NPU buffer as a descriptor).
    pub fn raise_fd_limit(mut self, raise: bool) -> Preflight {
        self.raise_fd_limit = raise;
        self
    }

    /// Whether [`run`](Self::run) raises the open-files limit; see
    /// [`raise_fd_limit`](Self::raise_fd_limit).
    pub fn raises_fd_limit(&self) -> bool {
        self.raise_fd_limit
    }

    /// The directory system files are read below.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads the model file's metadata and the system files; changes nothing.
    pub fn check(&self, model_path: &Path) -> PreflightReport {
        let mut report = PreflightReport::new(model_path);
        report.check_model();
        self.check_memory(&mut report);
        self.check_driver(&mut report);
        self.check_platform(&mut report);
        report
    }

    /// [`check`](Self::check), then [`check_open_files_limit`](Self::check_open_files_limit).
    /// Changes nothing unless [`raise_fd_limit`](Self::raise_fd_limit) is on.
    pub fn run(&self, model_path: &Path) -> PreflightReport {
        let mut report = self.check(model_path);
        self.check_open_files_limit(&mut report);
        report
    }

    /// Records this process's open-files limit in `report` (warning when it is below
    /// 102400), after raising it when [`raise_fd_limit`](Self::raise_fd_limit) is on.
    ///
    /// This looks at the real process whatever the [`root`](Self::root). Under Miri, which
    /// cannot query resource limits, nothing is recorded.
    pub fn check_open_files_limit(&self, report: &mut PreflightReport) {
        if cfg!(miri) {
            return;
        }
        let limit = if self.raise_fd_limit {
            self.raise_nofile_limit()
        } else {
            open_files_limit()
        };
        report.record_open_files_limit(limit);
    }

    /// Raises this process's soft `RLIMIT_NOFILE` towards the hard limit, to at most 102400
    /// (what the vendor servers set): the runtime exports every NPU buffer as a file
    /// descriptor. A soft limit already at or above that is left alone.
    ///
    /// This acts on the real process whatever the [`root`](Self::root); record the outcome
    /// with [`PreflightReport::record_open_files_limit`].
    ///
    /// This changes the limit for the whole process, including code of the host program that
    /// uses `select()`; call it only where the program agrees.
    pub fn raise_nofile_limit(&self) -> OpenFilesLimit {
        let (mut limit, hard_raw) = match get_nofile() {
            Ok(found) => found,
            Err(limit) => return limit,
        };
        let (before, hard) = (limit.before, limit.hard);
        let wanted = hard.min(NOFILE_TARGET);
        if before < wanted {
            // Only the soft limit changes, within the hard one.
            match crate::os::set_open_files_soft_limit(wanted as libc::rlim_t, hard_raw) {
                Ok(()) => limit.after = wanted,
                Err(e) => limit.error = Some(e.to_string()),
            }
        }
        limit
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn check_memory(&self, report: &mut PreflightReport) {
        let Ok(text) = std::fs::read_to_string(self.path("proc/meminfo")) else {
            return;
        };
        report.mem_total = meminfo_bytes(&text, "MemTotal");
        report.mem_available = meminfo_bytes(&text, "MemAvailable");
        if let (Some(available), Some(size)) = (report.mem_available, report.model_size) {
            if available < size {
                report.warnings.push(PreflightWarning::LowMemory {
                    available,
                    model_size: size,
                });
            }
        }
    }

    fn check_driver(&self, report: &mut PreflightReport) {
        let found = DRIVER_VERSION_FILES.iter().find_map(|relative| {
            let path = self.path(relative);
            let version = Version::find_in(&std::fs::read_to_string(&path).ok()?)?;
            Some((version, path))
        });
        match found {
            Some((version, path)) => {
                report.driver_version = Some(version);
                report.driver_version_source = Some(path);
                if version < Version::DRIVER_MINIMUM {
                    report
                        .warnings
                        .push(PreflightWarning::DriverTooOld { found: version });
                }
            }
            None => report.warnings.push(PreflightWarning::DriverVersionUnknown),
        }
    }

    fn check_platform(&self, report: &mut PreflightReport) {
        let Some(bytes) = COMPATIBLE_FILES
            .iter()
            .find_map(|f| std::fs::read(self.path(f)).ok())
        else {
            report.warnings.push(PreflightWarning::PlatformUnknown);
            return;
        };
        report.compatible = bytes
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).trim().to_owned())
            .collect();
        report.platform = soc_name(&report.compatible);
        let supported = report.compatible.iter().any(|c| {
            c.to_ascii_lowercase()
                .strip_prefix("rockchip,")
                .is_some_and(|model| SUPPORTED_SOCS.contains(&model))
        });
        if !supported {
            report.warnings.push(PreflightWarning::UnsupportedPlatform {
                compatible: report.compatible.clone(),
            });
        }
    }
}

/// This process's open-files limit, read only.
fn open_files_limit() -> OpenFilesLimit {
    get_nofile().map_or_else(|limit| limit, |(limit, _)| limit)
}

/// `getrlimit(RLIMIT_NOFILE)` as an unchanged [`OpenFilesLimit`], with the raw hard limit;
/// on failure the error, as a limit that says so.
fn get_nofile() -> Result<(OpenFilesLimit, libc::rlim_t), OpenFilesLimit> {
    match crate::os::open_files_limit() {
        // Cannot happen with a valid pointer; report it rather than guess a limit.
        Err(e) => Err(OpenFilesLimit {
            before: u64::MAX,
            after: u64::MAX,
            hard: u64::MAX,
            error: Some(e.to_string()),
        }),
        Ok((soft, hard)) => {
            let before = rlim_to_u64(soft);
            let limit = OpenFilesLimit {
                before,
                after: before,
                hard: rlim_to_u64(hard),
                error: None,
            };
            Ok((limit, hard))
        }
    }
}

/// `MemAvailable:  1234 kB` → bytes.
fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        let unit = match words.next() {
            Some(u) if u.eq_ignore_ascii_case("kb") => 1024,
            Some(u) if u.eq_ignore_ascii_case("mb") => 1024 * 1024,
            _ => 1,
        };
        n.checked_mul(unit)
    })
}

/// The SoC named by the device tree, `RK3588` for `rockchip,rk3588`: by convention the SoC is
/// the last compatible string, after the board's.
fn soc_name(compatible: &[String]) -> Option<String> {
    compatible.iter().rev().find_map(|c| {
        let model = c.to_ascii_lowercase().strip_prefix("rockchip,")?.to_owned();
        let is_soc = model.starts_with("rk") && !model.contains('-');
        is_soc.then(|| model.to_ascii_uppercase())
    })
}

// `rlim_t` is 32 bits wide on some 32-bit targets, so the cast is not always a no-op.
#[allow(clippy::unnecessary_cast)]
fn rlim_to_u64(value: libc::rlim_t) -> u64 {
    if value == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        value as u64
    }
}

/// What [`Preflight::raise_nofile_limit`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenFilesLimit {
    /// The soft limit before (`u64::MAX` for unlimited).
    pub before: u64,
    /// The soft limit after.
    pub after: u64,
    /// The hard limit (`u64::MAX` for unlimited).
    pub hard: u64,
    /// Why reading or raising the limit failed, if it did.
    pub error: Option<String>,
}

impl OpenFilesLimit {
    /// Whether the soft limit was raised.
    pub fn raised(&self) -> bool {
        self.after > self.before
    }

    /// Whether the soft limit is below what the vendor servers use (102400).
    pub fn is_low(&self) -> bool {
        self.after < NOFILE_TARGET
    }
}

impl fmt::Display for OpenFilesLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: u64| {
            if v == u64::MAX {
                "unlimited".to_owned()
            } else {
                v.to_string()
            }
        };
        if self.raised() {
            write!(
                f,
                "raised from {} to {}",
                show(self.before),
                show(self.after)
            )?;
        } else {
            write!(f, "{}", show(self.after))?;
        }
        write!(f, " (hard limit {})", show(self.hard))?;
        if let Some(e) = &self.error {
            write!(f, "; raising failed: {e}")?;
        }
        Ok(())
    }
}

/// Something preflight found that may make init fail. None of these stops the load; see
/// [`PreflightReport::fatal`] for the problems that do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreflightWarning {
    /// Less RAM is available than the model file's size (NPU memory is ordinary RAM).
    LowMemory {
        /// `MemAvailable`, in bytes.
        available: u64,
        /// The model file's size, in bytes.
        model_size: u64,
    },
    /// The rknpu driver is older than 0.9.7.
    DriverTooOld {
        /// The version found.
        found: Version,
    },
    /// The rknpu driver's version could not be read.
    DriverVersionUnknown,
    /// The device tree names no SoC the runtime supports (RK3588, RK3576).
    UnsupportedPlatform {
        /// The device tree's compatible strings.
        compatible: Vec<String>,
    },
    /// The device tree could not be read (not an ARM board, or no `/proc`).
    PlatformUnknown,
    /// The open-files limit is below 102400.
    OpenFilesLimitLow {
        /// The soft limit now.
        soft: u64,
        /// The hard limit.
        hard: u64,
    },
}

impl fmt::Display for PreflightWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreflightWarning::LowMemory {
                available,
                model_size,
            } => write!(
                f,
                "only {} of RAM is available, less than the model file's {}: close other \
                 programs, or use a smaller model or a lower max_context_len",
                human_bytes(*available),
                human_bytes(*model_size)
            ),
            PreflightWarning::DriverTooOld { found } => write!(
                f,
                "the rknpu driver {found} is too old: RKLLM 1.1 needs {} or later ({} \
                 recommended), and large models fail to allocate NPU memory on older drivers; \
                 upgrade the kernel's rknpu driver",
                Version::DRIVER_MINIMUM,
                Version::DRIVER_RECOMMENDED
            ),
            PreflightWarning::DriverVersionUnknown => write!(
                f,
                "could not read the rknpu driver version (/sys/kernel/debug/rknpu/version needs \
                 root; /sys/module/rknpu/version is absent); RKLLM 1.1 needs {} or later, {} \
                 recommended",
                Version::DRIVER_MINIMUM,
                Version::DRIVER_RECOMMENDED
            ),
            PreflightWarning::UnsupportedPlatform { compatible } => {
                write!(
                f,
                "this board ({}) is neither RK3588 nor RK3576, the only platforms the RKLLM 1.1 \
                 runtime supports",
                if compatible.is_empty() { "unnamed".to_owned() } else { compatible.join(", ") }
            )
            }
            PreflightWarning::PlatformUnknown => f.write_str(
                "could not read the device tree to identify the SoC; the RKLLM 1.1 runtime \
                 supports only RK3588 and RK3576",
            ),
            PreflightWarning::OpenFilesLimitLow { soft, hard } => write!(
                f,
                "the open-files limit (RLIMIT_NOFILE) is {soft} with a hard limit of {hard}; \
                 the runtime uses a descriptor per NPU buffer: raise it with `ulimit -n 102400` \
                 (or raise the hard limit), or let the preflight raise the soft limit \
                 (`ModelBuilder::raise_fd_limit(true)`)"
            ),
        }
    }
}

/// A problem with the model file that makes loading pointless.
#[derive(Debug, Clone)]
pub(crate) enum ModelProblem {
    /// Missing, unreadable: the I/O error's kind, OS code and text.
    Io {
        kind: io::ErrorKind,
        os_code: Option<i32>,
        message: String,
    },
    /// A directory, device or other non-regular file.
    NotAFile,
    /// Zero bytes.
    Empty,
}

/// What [`Preflight::check`] found.
#[derive(Debug, Clone)]
pub struct PreflightReport {
    pub(crate) model_path: PathBuf,
    model_size: Option<u64>,
    pub(crate) model_problem: Option<ModelProblem>,
    mem_total: Option<u64>,
    mem_available: Option<u64>,
    driver_version: Option<Version>,
    driver_version_source: Option<PathBuf>,
    platform: Option<String>,
    compatible: Vec<String>,
    open_files: Option<OpenFilesLimit>,
    warnings: Vec<PreflightWarning>,
}

impl PreflightReport {
    fn new(model_path: &Path) -> PreflightReport {
        PreflightReport {
            model_path: model_path.to_owned(),
            model_size: None,
            model_problem: None,
            mem_total: None,
            mem_available: None,
            driver_version: None,
            driver_version_source: None,
            platform: None,
            compatible: Vec::new(),
            open_files: None,
            warnings: Vec::new(),
        }
    }

    /// Exists, is a regular file, is not empty, can be opened for reading.
    fn check_model(&mut self) {
        let io_problem = |e: io::Error| ModelProblem::Io {
            kind: e.kind(),
            os_code: e.raw_os_error(),
            message: e.to_string(),
        };
        let meta = match std::fs::metadata(&self.model_path) {
            Ok(meta) => meta,
            Err(e) => {
                self.model_problem = Some(io_problem(e));
                return;
            }
        };
        if !meta.is_file() {
            self.model_problem = Some(ModelProblem::NotAFile);
            return;
        }
        self.model_size = Some(meta.len());
        if meta.len() == 0 {
            self.model_problem = Some(ModelProblem::Empty);
        } else if let Err(e) = std::fs::File::open(&self.model_path) {
            self.model_problem = Some(io_problem(e));
        }
    }

    /// Records the open-files limit found (or the outcome of
    /// [`Preflight::raise_nofile_limit`]), warning when it is low.
    pub fn record_open_files_limit(&mut self, limit: OpenFilesLimit) {
        if limit.is_low() {
            self.warnings.push(PreflightWarning::OpenFilesLimitLow {
                soft: limit.after,
                hard: limit.hard,
            });
        }
        self.open_files = Some(limit);
    }

    /// Whether nothing fatal and no warning was found.
    pub fn is_clean(&self) -> bool {
        self.model_problem.is_none() && self.warnings.is_empty()
    }

    /// The model file checked.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// The model file's size in bytes, when it is a regular file.
    pub fn model_size(&self) -> Option<u64> {
        self.model_size
    }

    /// `MemTotal` from `/proc/meminfo`, in bytes.
    pub fn mem_total(&self) -> Option<u64> {
        self.mem_total
    }

    /// `MemAvailable` from `/proc/meminfo`, in bytes.
    pub fn mem_available(&self) -> Option<u64> {
        self.mem_available
    }

    /// The rknpu driver's version, when it could be read.
    pub fn driver_version(&self) -> Option<Version> {
        self.driver_version
    }

    /// The file the driver version was read from.
    pub fn driver_version_source(&self) -> Option<&Path> {
        self.driver_version_source.as_deref()
    }

    /// The SoC named by the device tree, e.g. `RK3588`.
    pub fn platform(&self) -> Option<&str> {
        self.platform.as_deref()
    }

    /// The device tree's compatible strings, board first.
    pub fn compatible(&self) -> &[String] {
        &self.compatible
    }

    /// The open-files limit, when [`Preflight::run`],
    /// [`Preflight::check_open_files_limit`] or
    /// [`record_open_files_limit`](Self::record_open_files_limit) looked at it.
    pub fn open_files(&self) -> Option<&OpenFilesLimit> {
        self.open_files.as_ref()
    }

    /// Everything that may make init fail, in the order found.
    pub fn warnings(&self) -> &[PreflightWarning] {
        &self.warnings
    }

    /// Whether the driver is known to be older than 0.9.7.
    pub fn driver_too_old(&self) -> bool {
        self.driver_version
            .is_some_and(|v| v < Version::DRIVER_MINIMUM)
    }
}

impl fmt::Display for PreflightReport {
    /// One line per finding, for reports and `doctor`-style tools.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unknown = || "unknown".to_owned();
        write!(f, "model: {}", self.model_path.display())?;
        match self.model_size {
            Some(size) => writeln!(f, ", {}", human_bytes(size))?,
            None => writeln!(f)?,
        }
        if let Some(error) = self.fatal() {
            writeln!(f, "error: {error}")?;
        }
        let mem = self.mem_available.map_or_else(unknown, human_bytes);
        writeln!(f, "available RAM: {mem}")?;
        let driver = self.driver_version.map_or_else(unknown, |v| v.to_string());
        writeln!(f, "rknpu driver: {driver}")?;
        writeln!(
            f,
            "platform: {}",
            self.platform.clone().unwrap_or_else(unknown)
        )?;
        if let Some(limit) = &self.open_files {
            writeln!(f, "open-files limit: {limit}")?;
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_units() {
        let text = "MemTotal:       16309876 kB\nMemAvailable:    8 kB\nHugePages_Total: 0\n";
        assert_eq!(meminfo_bytes(text, "MemTotal"), Some(16_309_876 * 1024));
        assert_eq!(meminfo_bytes(text, "MemAvailable"), Some(8 * 1024));
        assert_eq!(meminfo_bytes(text, "HugePages_Total"), Some(0));
        assert_eq!(meminfo_bytes(text, "MemFree"), None);
        assert_eq!(meminfo_bytes("MemAvailable: lots kB", "MemAvailable"), None);
        assert_eq!(
            meminfo_bytes("MemAvailable: 99999999999999999999 kB", "MemAvailable"),
            None
        );
    }

    #[test]
    fn soc_is_the_last_rockchip_soc_string() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            soc_name(&c(&["rockchip,rk3588s-orangepi-5", "rockchip,rk3588"])).as_deref(),
            Some("RK3588")
        );
        assert_eq!(soc_name(&c(&["rockchip,rk3588s-orangepi-5"])), None);
        assert_eq!(soc_name(&c(&["brcm,bcm2711"])), None);
    }

    #[test]
    fn low_open_files_limit_warns() {
        let mut report = PreflightReport::new(Path::new("m.rkllm"));
        let low = OpenFilesLimit {
            before: 1024,
            after: 4096,
            hard: 4096,
            error: None,
        };
        assert!(low.raised() && low.is_low());
        assert_eq!(
            low.to_string(),
            "raised from 1024 to 4096 (hard limit 4096)"
        );
        report.record_open_files_limit(low);
        assert_eq!(
            report.warnings(),
            [PreflightWarning::OpenFilesLimitLow {
                soft: 4096,
                hard: 4096
            }]
        );
        assert!(report.warnings()[0]
            .to_string()
            .contains("ulimit -n 102400"));

        let mut report = PreflightReport::new(Path::new("m.rkllm"));
        let fine = OpenFilesLimit {
            before: 1024,
            after: 102_400,
            hard: u64::MAX,
            error: None,
        };
        assert_eq!(
            fine.to_string(),
            "raised from 1024 to 102400 (hard limit unlimited)"
        );
        report.record_open_files_limit(fine);
        assert!(report.warnings().is_empty());
        assert!(report.open_files().is_some());
    }
}
