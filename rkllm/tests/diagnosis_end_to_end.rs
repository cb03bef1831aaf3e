//! A failed init through the builder and the mock runtime: the runtime's lines are captured,
//! read and turned into an `InitError` that names the fix.
#![cfg(feature = "mock")]

use std::path::PathBuf;

use rkllm::diagnosis::{Cause, InitError};
use rkllm::mock::{InitFailure, MockModel};
use rkllm::{Error, Model, Runtime};

/// A fake `/proc` and `/sys` of a healthy RK3588 board, so preflight passes and its report is
/// attached; removed on drop.
struct Board(PathBuf);

impl Board {
    fn new(name: &str) -> Board {
        let dir = std::env::temp_dir().join(format!("rkllm-e2e-{name}-{}", std::process::id()));
        let files: [(&str, &[u8]); 3] = [
            (
                "proc/meminfo",
                b"MemTotal: 16000000 kB\nMemAvailable: 12000000 kB\n",
            ),
            ("sys/module/rknpu/version", b"0.9.8\n"),
            (
                "proc/device-tree/compatible",
                b"rockchip,rk3588-evb1-lp4-v10\0rockchip,rk3588\0",
            ),
        ];
        for (relative, bytes) in files {
            let path = dir.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        Board(dir)
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn build(model: &MockModel, board: &Board) -> rkllm::Result<Model> {
    let file = model.write_temp_file().unwrap();
    Model::builder(&file)
        .runtime(Runtime::mock())
        .preflight_root(&board.0)
        .build()
}

fn init_error(model: &MockModel, name: &str) -> Box<InitError> {
    let board = Board::new(name);
    match build(model, &board) {
        Err(Error::Init(e)) => e,
        Err(other) => panic!("expected Error::Init, got {other}"),
        Ok(_) => panic!("init was expected to fail"),
    }
}

#[test]
fn npu_out_of_memory() {
    let model = MockModel::new().fail_init(InitFailure::NpuOutOfMemory {
        requested_bytes: 232_128_512,
    });
    let e = init_error(&model, "oom");
    assert_eq!(e.cause(), Cause::NpuOutOfMemory);
    assert_eq!(e.diagnosis().requested_bytes(), Some(232_128_512));
    assert_eq!(e.diagnosis().errno(), Some(14));
    assert_eq!(e.diagnosis().runtime_version(), Some("1.1.1"));
    assert!(e.code().is_some_and(|c| c != 0));
    assert!(e.preflight().is_some_and(|p| p.warnings().is_empty()));
    let text = e.to_string();
    for needle in [
        "221.4 MiB",
        "w8a8",
        "base_domain_id(1)",
        "max_context_len",
        "RKLLM_LOG_LEVEL",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(e
        .log_lines()
        .iter()
        .any(|l| l.contains("load model file error!")));
}

#[test]
fn old_driver_is_named() {
    let model = MockModel::new()
        .driver_version("0.8.2")
        .fail_init(InitFailure::NpuOutOfMemory {
            requested_bytes: 3_087_138_816,
        });
    let e = init_error(&model, "old-driver");
    assert_eq!(e.diagnosis().driver_version(), Some("0.8.2"));
    assert!(
        e.fix().starts_with("upgrade the rknpu driver"),
        "{}",
        e.fix()
    );
    assert!(e.to_string().contains("found 0.8.2"));
}

#[test]
fn other_causes() {
    let cases = [
        (
            InitFailure::TooManyOpenFiles,
            Cause::TooManyOpenFiles,
            "RLIMIT_NOFILE",
        ),
        (
            InitFailure::InvalidModelMagic,
            Cause::InvalidModel,
            "RKLLM-Toolkit 1.1.x",
        ),
        (
            InitFailure::WeightMemoryForDomain { domain: 1 },
            Cause::NpuOutOfMemory,
            "base_domain_id(1)",
        ),
    ];
    for (failure, cause, fix) in cases {
        let e = init_error(&MockModel::new().fail_init(failure.clone()), cause.as_str());
        assert_eq!(e.cause(), cause, "{failure:?}");
        assert!(
            e.to_string().contains(fix),
            "{failure:?}: {fix:?} missing from:\n{e}"
        );
    }
}

#[test]
fn null_handle() {
    let e = init_error(&MockModel::new().fail_init(InitFailure::NullHandle), "null");
    assert_eq!(e.code(), None);
    assert_eq!(e.cause(), Cause::None);
    assert!(e.to_string().contains("without a handle"), "{e}");
}

#[test]
fn success_keeps_the_runtime_info() {
    let board = Board::new("ok");
    let model = build(&MockModel::new().answer("hi"), &board).expect("mock init");
    let init = model.init_diagnosis();
    assert_eq!(
        init.runtime_version(),
        Some("1.1.1"),
        "version line captured"
    );
    assert_eq!(init.platform(), Some("RK3588"));
    assert_eq!(init.cause(), Cause::None);
}

#[test]
fn without_capture_the_diagnosis_is_empty() {
    let board = Board::new("nocapture");
    let path = MockModel::new()
        .fail_init(InitFailure::InvalidModelMagic)
        .write_temp_file()
        .unwrap();
    let result = Model::builder(&path)
        .runtime(Runtime::mock())
        .preflight_root(&board.0)
        .capture_runtime_log(false)
        .build();
    match result {
        Err(Error::Init(e)) => {
            assert_eq!(e.cause(), Cause::None);
            assert!(e.log_lines().is_empty());
            assert!(
                e.to_string().contains("no runtime output was captured"),
                "{e}"
            );
        }
        Err(other) => panic!("expected Error::Init, got {other}"),
        Ok(_) => panic!("init was expected to fail"),
    }
}

#[test]
fn preflight_stops_a_missing_model_before_init() {
    let board = Board::new("missing");
    let result = Model::builder(board.0.join("absent.rkllm"))
        .runtime(Runtime::mock())
        .preflight_root(&board.0)
        .build();
    match result {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        Err(other) => panic!("expected Error::Io, got {other}"),
        Ok(_) => panic!("a missing model cannot load"),
    }
}

/// An init whose log is not captured, on another thread at the same time, never lands in a
/// captured init's diagnosis: the runtime's lines of the one are not the other's cause.
#[test]
fn an_uncaptured_init_beside_does_not_mislead_the_diagnosis() {
    let board = Board::new("beside");
    let bad = MockModel::new()
        .fail_init(InitFailure::InvalidModelMagic)
        .write_temp_file()
        .unwrap();
    let good = MockModel::new().answer("hi");
    std::thread::scope(|scope| {
        let noise = scope.spawn(|| {
            for _ in 0..40 {
                let result = Model::builder(&bad)
                    .runtime(Runtime::mock())
                    .preflight_root(&board.0)
                    .capture_runtime_log(false)
                    .build();
                assert!(matches!(result, Err(Error::Init(_))));
            }
        });
        for _ in 0..40 {
            let model = build(&good, &board).expect("mock init");
            assert_eq!(model.init_diagnosis().cause(), Cause::None);
            assert!(
                !model
                    .init_diagnosis()
                    .lines()
                    .iter()
                    .any(|l| l.contains("magic")),
                "{:?}",
                model.init_diagnosis().lines()
            );
        }
        noise.join().unwrap();
    });
}
