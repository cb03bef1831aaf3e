//! The simulated NPU memory pool. Every test here changes the process-wide pool, so they
//! serialise on one lock; no other test binary shares this process.

mod mock_support;

use std::ffi::CString;
use std::sync::Mutex;

use mock_support::*;
use rkllm::mock::{
    npu_memory_capacity, npu_memory_in_use, set_npu_memory_capacity, InitFailure, MockModel,
    DEFAULT_NPU_MEMORY, NPU_MEMORY_ENV,
};

static POOL_LOCK: Mutex<()> = Mutex::new(());

const GIB: u64 = 1 << 30;

fn try_init(model: &MockModel) -> (i32, Option<Handle>, Captured) {
    let path = model.write_temp_file().unwrap();
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut p = params(&c, |_| {});
    let ((rc, h), cap) = capture(|| init_raw(&mut p));
    let handle = (!h.is_null()).then(|| Handle {
        raw: h,
        model: path.to_path_buf(),
        file: Some(path),
    });
    (rc, handle, cap)
}

#[test]
fn two_models_exhaust_the_pool_and_destroy_frees_it() {
    let _p = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _l = log_lock();
    set_npu_memory_capacity(Some(10 * GIB));
    let model = MockModel::new().npu_memory_bytes(6 * GIB);
    let (rc, first, _) = try_init(&model);
    assert_eq!(rc, 0);
    assert_eq!(npu_memory_in_use(), 6 * GIB);

    let (rc, second, cap) = try_init(&model);
    assert_eq!(rc, -1);
    assert!(second.is_none());
    assert!(
        cap.stderr.contains("errno: 14, errstr: Bad address"),
        "{}",
        cap.stderr
    );
    assert!(cap.stderr.contains(&format!(
        "failed to malloc npu memory, size: {}, flags: 0x2",
        6 * GIB
    )));
    assert!(cap.stderr.contains("load model file error!"));
    assert_eq!(
        npu_memory_in_use(),
        6 * GIB,
        "a failed init holds no memory"
    );

    drop(first);
    assert_eq!(npu_memory_in_use(), 0);
    let (rc, second, _) = try_init(&model);
    assert_eq!(rc, 0);
    drop(second);
    assert_eq!(npu_memory_in_use(), 0);
    set_npu_memory_capacity(None);
}

#[test]
fn an_injected_failure_takes_no_memory() {
    let _p = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _l = log_lock();
    set_npu_memory_capacity(Some(GIB));
    let model = MockModel::new()
        .npu_memory_bytes(GIB / 2)
        .fail_init(InitFailure::NpuOutOfMemory {
            requested_bytes: 123,
        });
    let (rc, _, cap) = try_init(&model);
    assert_eq!(rc, -1);
    assert!(cap.stderr.contains("size: 123, flags: 0x2"));
    assert_eq!(npu_memory_in_use(), 0);
    set_npu_memory_capacity(None);
}

#[test]
fn the_pool_size_comes_from_the_environment_at_each_init() {
    let _p = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _l = log_lock();
    set_npu_memory_capacity(None);
    std::env::set_var(NPU_MEMORY_ENV, "1000");
    assert_eq!(npu_memory_capacity(), 1000);
    let (rc, _, cap) = try_init(&MockModel::new().npu_memory_bytes(2000));
    assert_eq!(rc, -1);
    assert!(cap.stderr.contains("size: 2000, flags: 0x2"));
    let (rc, h, _) = try_init(&MockModel::new().npu_memory_bytes(1000));
    assert_eq!(rc, 0);
    drop(h);
    // A programmatic size wins over the variable.
    set_npu_memory_capacity(Some(5000));
    let (rc, h, _) = try_init(&MockModel::new().npu_memory_bytes(2000));
    assert_eq!(rc, 0);
    drop(h);
    set_npu_memory_capacity(None);
    // A malformed value falls back to the default, with a warning.
    std::env::set_var(NPU_MEMORY_ENV, "lots");
    let (rc, h, cap) = try_init(&MockModel::new().npu_memory_bytes(2000));
    assert_eq!(rc, 0);
    assert!(
        cap.stdout
            .contains(&format!("W rkllm: ignoring {NPU_MEMORY_ENV}")),
        "{}",
        cap.stdout
    );
    drop(h);
    std::env::remove_var(NPU_MEMORY_ENV);
    assert_eq!(npu_memory_capacity(), DEFAULT_NPU_MEMORY);
}

#[test]
fn models_without_a_size_never_touch_the_pool() {
    let _p = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _l = log_lock();
    set_npu_memory_capacity(Some(0));
    let (rc, h, _) = try_init(&MockModel::new());
    assert_eq!(rc, 0);
    assert_eq!(npu_memory_in_use(), 0);
    drop(h);
    set_npu_memory_capacity(None);
}
