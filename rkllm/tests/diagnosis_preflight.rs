//! Preflight against fake `/proc` and `/sys` trees.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rkllm::diagnosis::{Preflight, PreflightWarning, Version};

/// A temporary directory holding a fake root and a model file, removed on drop.
struct FakeRoot {
    dir: PathBuf,
}

impl FakeRoot {
    /// A board that passes every check: RK3588, driver 0.9.8, 8 GiB available, 4 KiB model.
    fn good() -> FakeRoot {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rkllm-preflight-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = FakeRoot { dir };
        root.write("proc/meminfo", b"MemTotal:       16309876 kB\nMemFree:         1000000 kB\nMemAvailable:    8388608 kB\n");
        root.write("sys/kernel/debug/rknpu/version", b"RKNPU driver: v0.9.8\n");
        root.write(
            "proc/device-tree/compatible",
            b"rockchip,rk3588s-orangepi-5\0rockchip,rk3588\0",
        );
        root.write("model/gemma-2-2b-w8a8.rkllm", &[7u8; 4096]);
        root
    }

    fn write(&self, relative: &str, bytes: &[u8]) {
        let path = self.dir.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn remove(&self, relative: &str) {
        std::fs::remove_file(self.dir.join(relative)).unwrap();
    }

    fn model(&self) -> PathBuf {
        self.dir.join("model/gemma-2-2b-w8a8.rkllm")
    }

    fn check(&self) -> rkllm::diagnosis::PreflightReport {
        Preflight::with_root(&self.dir).check(&self.model())
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn all_good() {
    let root = FakeRoot::good();
    let report = root.check();
    assert!(report.warnings().is_empty(), "{:?}", report.warnings());
    assert!(report.fatal().is_none());
    assert!(report.is_clean());
    assert_eq!(report.model_path(), root.model());
    assert_eq!(report.model_size(), Some(4096));
    assert_eq!(report.mem_available(), Some(8_388_608 * 1024));
    assert_eq!(report.mem_total(), Some(16_309_876 * 1024));
    assert_eq!(report.driver_version(), Some(Version::new(0, 9, 8)));
    assert_eq!(
        report.driver_version_source(),
        Some(root.dir.join("sys/kernel/debug/rknpu/version").as_path())
    );
    assert_eq!(report.platform(), Some("RK3588"));
    assert_eq!(
        report.compatible(),
        ["rockchip,rk3588s-orangepi-5", "rockchip,rk3588"]
    );
    assert!(!report.driver_too_old());
    let text = report.to_string();
    assert!(
        text.contains("rknpu driver: 0.9.8") && text.contains("platform: RK3588"),
        "{text}"
    );
}

#[test]
fn missing_model_file_is_fatal_io() {
    let root = FakeRoot::good();
    let missing = root.dir.join("model/absent.rkllm");
    let report = Preflight::with_root(&root.dir).check(&missing);
    match report.fatal() {
        Some(rkllm::Error::Io { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(!report.is_clean());
    assert!(report.fatal().unwrap().to_string().contains("absent.rkllm"));
}

#[test]
fn empty_model_file_is_fatal() {
    let root = FakeRoot::good();
    root.write("model/gemma-2-2b-w8a8.rkllm", b"");
    let report = root.check();
    assert_eq!(report.model_size(), Some(0));
    match report.fatal() {
        Some(rkllm::Error::InvalidParameter { name, reason }) => {
            assert_eq!(name, "model_path");
            assert!(reason.contains("empty"), "{reason}");
        }
        other => panic!("expected Error::InvalidParameter, got {other:?}"),
    }
}

#[test]
fn directory_instead_of_model_is_fatal() {
    let root = FakeRoot::good();
    let report = Preflight::with_root(&root.dir).check(&root.dir.join("model"));
    match report.fatal() {
        Some(rkllm::Error::InvalidParameter { name, reason }) => {
            assert_eq!(name, "model_path");
            assert!(reason.contains("not a regular file"), "{reason}");
        }
        other => panic!("expected Error::InvalidParameter, got {other:?}"),
    }
}

#[test]
fn old_driver_in_debugfs() {
    let root = FakeRoot::good();
    root.write("sys/kernel/debug/rknpu/version", b"RKNPU driver: v0.9.6\n");
    let report = root.check();
    assert_eq!(
        report.warnings(),
        [PreflightWarning::DriverTooOld {
            found: Version::new(0, 9, 6)
        }]
    );
    assert!(report.driver_too_old());
    let text = report.warnings()[0].to_string();
    assert!(
        text.contains("0.9.6") && text.contains("0.9.7") && text.contains("0.9.8"),
        "{text}"
    );
}

#[test]
fn old_driver_in_module_version() {
    let root = FakeRoot::good();
    root.remove("sys/kernel/debug/rknpu/version");
    root.write("sys/module/rknpu/version", b"0.8.2\n");
    let report = root.check();
    assert_eq!(report.driver_version(), Some(Version::new(0, 8, 2)));
    assert_eq!(
        report.driver_version_source(),
        Some(root.dir.join("sys/module/rknpu/version").as_path())
    );
    assert_eq!(
        report.warnings(),
        [PreflightWarning::DriverTooOld {
            found: Version::new(0, 8, 2)
        }]
    );
}

#[test]
fn driver_versions_compare_numerically() {
    let root = FakeRoot::good();
    root.write("sys/kernel/debug/rknpu/version", b"RKNPU driver: v0.9.10\n");
    let report = root.check();
    assert!(report.warnings().is_empty(), "{:?}", report.warnings());
    assert_eq!(
        report.driver_version().map(|v| v.to_string()).as_deref(),
        Some("0.9.10")
    );
}

#[test]
fn unreadable_driver_version_is_a_warning() {
    let root = FakeRoot::good();
    root.remove("sys/kernel/debug/rknpu/version");
    let report = root.check();
    assert_eq!(report.driver_version(), None);
    assert_eq!(report.warnings(), [PreflightWarning::DriverVersionUnknown]);
}

#[test]
fn platform_mismatch() {
    let root = FakeRoot::good();
    root.write(
        "proc/device-tree/compatible",
        b"raspberrypi,4-model-b\0brcm,bcm2711\0",
    );
    let report = root.check();
    assert_eq!(report.platform(), None);
    assert_eq!(
        report.warnings(),
        [PreflightWarning::UnsupportedPlatform {
            compatible: vec!["raspberrypi,4-model-b".into(), "brcm,bcm2711".into()]
        }]
    );
    assert!(report.warnings()[0].to_string().contains("RK3588"));

    root.write(
        "proc/device-tree/compatible",
        b"radxa,rock-3a\0rockchip,rk3568\0",
    );
    let report = root.check();
    assert_eq!(report.platform(), Some("RK3568"));
    assert!(matches!(
        report.warnings(),
        [PreflightWarning::UnsupportedPlatform { .. }]
    ));

    root.write(
        "proc/device-tree/compatible",
        b"rockchip,rk3576-evb1-v10\0rockchip,rk3576\0",
    );
    let report = root.check();
    assert_eq!(report.platform(), Some("RK3576"));
    assert!(report.warnings().is_empty(), "{:?}", report.warnings());

    root.remove("proc/device-tree/compatible");
    let report = root.check();
    assert_eq!(report.warnings(), [PreflightWarning::PlatformUnknown]);
}

#[test]
fn low_memory() {
    let root = FakeRoot::good();
    root.write(
        "proc/meminfo",
        b"MemTotal: 4000 kB\nMemAvailable:       2 kB\n",
    );
    let report = root.check();
    assert_eq!(report.mem_available(), Some(2048));
    assert_eq!(
        report.warnings(),
        [PreflightWarning::LowMemory {
            available: 2048,
            model_size: 4096
        }]
    );
    let text = report.warnings()[0].to_string();
    assert!(
        text.contains("2.0 KiB") && text.contains("4.0 KiB") && text.contains("max_context_len"),
        "{text}"
    );
    assert!(report.fatal().is_none(), "low memory only warns");
}

#[test]
fn missing_meminfo_is_not_a_warning() {
    let root = FakeRoot::good();
    root.remove("proc/meminfo");
    let report = root.check();
    assert_eq!(report.mem_available(), None);
    assert!(report.warnings().is_empty(), "{:?}", report.warnings());
}

#[test]
fn raising_the_open_files_limit_acts_on_the_process() {
    let preflight = Preflight::with_root(Path::new("/nonexistent"));
    let first = preflight.raise_nofile_limit();
    assert!(first.error.is_none(), "{first}");
    assert!(first.after >= first.before);
    assert!(first.after >= first.hard.min(102_400), "{first}");
    // The change is real: a second call finds the raised limit and leaves it.
    let second = preflight.raise_nofile_limit();
    assert_eq!(second.before, first.after);
    assert!(!second.raised());

    // `run` only reads the limit unless asked to raise it.
    let report = preflight.run(&std::env::temp_dir());
    let seen = report.open_files().expect("run records the limit");
    assert_eq!(seen.after, first.after);
    assert!(!seen.raised());
    assert!(!preflight.raises_fd_limit());
}
