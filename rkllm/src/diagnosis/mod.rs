//! Why a model did not load, and what to do about it.
//!
//! When `rkllm_init` fails it returns -1 and the reason is only in lines the runtime prints,
//! for instance for Gemma 2 in a quantization other than w8a8 on RK3588:
//!
//! ```text
//! E RKNN: [00:14:18.994] failed to allocate handle, ret: -1, errno: 14, errstr: Bad address
//! E RKNN: [00:14:18.994] failed to malloc npu memory, size: 232128512, flags: 0x2
//! E RKNN: [00:14:18.994] load model file error!
//! ```
//!
//! This module
//! - captures what the runtime writes to stdout and stderr around the call (passing every byte
//!   on, so nothing is lost),
//! - reads it into a [`Diagnosis`] ([`Diagnosis::parse`]) with a [`Cause`],
//! - checks the cheap things before init ([`Preflight`]: model file, RAM, driver version,
//!   platform, open-files limit),
//! - and turns all of it into an [`InitError`] whose message names the fix.

mod capture;
mod error;
mod log;
pub(crate) mod preflight;
mod version;

// The builder calls `run_captured`; `capture` and `LOG_TARGET` are there for other callers.
#[allow(unused_imports)]
pub(crate) use capture::{capture, run_captured, LOG_TARGET};
// The mock hands its log lines to the capture directly under Miri, and when a model's lines
// do not go to the descriptors.
#[cfg(feature = "mock")]
pub(crate) use capture::{log_runtime_line, tap_record};
pub use error::InitError;
pub use log::{Cause, Diagnosis};
pub use preflight::{OpenFilesLimit, Preflight, PreflightReport, PreflightWarning};
pub use version::Version;

/// A byte count in human units with the exact figure: `221.4 MiB (232128512 bytes)`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    let short = human_bytes_short(bytes);
    if bytes < 1024 {
        short
    } else {
        format!("{short} ({bytes} bytes)")
    }
}

/// A byte count in human units: `221.4 MiB`, `2.88 GiB`.
pub(crate) fn human_bytes_short(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.2} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else if b >= KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes() {
        assert_eq!(
            super::human_bytes(232_128_512),
            "221.4 MiB (232128512 bytes)"
        );
        assert_eq!(
            super::human_bytes(3_087_138_816),
            "2.88 GiB (3087138816 bytes)"
        );
        assert_eq!(super::human_bytes(2048), "2.0 KiB (2048 bytes)");
        assert_eq!(super::human_bytes(12), "12 bytes");
        assert_eq!(super::human_bytes_short(3_087_138_816), "2.88 GiB");
    }
}
