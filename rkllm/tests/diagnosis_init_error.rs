//! The message of a failed init names the fix for the cause found.

use std::path::Path;

use rkllm::diagnosis::{Cause, Diagnosis, InitError, Preflight};

const SEED: &str =
    "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.8, platform: RK3588\n\
E RKNN: [00:14:18.994] failed to allocate handle, ret: -1, errno: 14, errstr: Bad address\n\
E RKNN: [00:14:18.994] failed to malloc npu memory, size: 232128512, flags: 0x2\n\
E RKNN: [00:14:18.994] load model file error!\n\
rknn_init fail! ret=-1\n";

fn init_error(code: Option<i32>, log: &str, model: &str) -> InitError {
    InitError::new(code, Diagnosis::parse(log), model.into())
}

fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn gemma2_w4a16_names_quantization_domain_and_context() {
    let e = init_error(Some(-1), SEED, "/models/gemma-2-2b-it-w4a16.rkllm");
    assert_eq!(e.code(), Some(-1));
    assert_eq!(e.cause(), Cause::NpuOutOfMemory);
    assert_eq!(
        e.model_path(),
        Path::new("/models/gemma-2-2b-it-w4a16.rkllm")
    );
    let text = e.to_string();
    assert_mentions(
        &text,
        &[
            "gemma-2-2b-it-w4a16.rkllm",
            "returned -1",
            "221.4 MiB",
            "errno 14: Bad address",
            "w8a8",
            "w8a8_g128",
            "w4a16 is RK3576-only",
            "base_domain_id(1)",
            "max_context_len",
            "smaller model",
            "RKLLM_LOG_LEVEL=1",
            "failed to allocate handle",
        ],
    );
    // The driver is fine here, so no upgrade advice; and not every raw line is dumped.
    assert!(!text.contains("upgrade the rknpu driver"), "{text}");
    assert!(!text.contains("load model file error!"), "{text}");
    // The raw lines stay available for a bug report.
    assert_eq!(e.log_lines().len(), 5);
    assert_mentions(
        &e.bug_report(),
        &["load model file error!", "rknn_init fail! ret=-1"],
    );
}

#[test]
fn old_driver_is_named_with_found_and_needed_versions() {
    let log = "W rkllm: Warning: Your rknpu driver version is too low, please upgrade to 0.9.7.\n\
               I rkllm: rkllm-runtime version: 1.1.4, rknpu driver version: 0.8.2, platform: RK3588\n\
               E RKNN: [10:02:41.120] failed to malloc npu memory, size: 3087138816, flags: 0x2\n";
    let e = init_error(Some(-1), log, "qwen.rkllm");
    let text = e.to_string();
    assert_mentions(
        &text,
        &[
            "upgrade the rknpu driver to 0.9.7 or later",
            "0.9.8 best",
            "found 0.8.2",
            "2.88 GiB",
        ],
    );
    // The most likely fix comes first.
    let fix = e.fix();
    assert!(fix.starts_with("upgrade the rknpu driver"), "{fix}");
}

#[test]
fn driver_below_minimum_without_the_warning_still_advises_upgrade() {
    let log =
        "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.6, platform: RK3588\n\
               E RKNN: [07:30:12.555] can not create weight memory for domain1\n";
    let e = init_error(Some(-1), log, "chatglm3.rkllm");
    assert_eq!(e.cause(), Cause::NpuOutOfMemory);
    assert_mentions(&e.to_string(), &["found 0.9.6", "base_domain_id(1)"]);
}

#[test]
fn too_many_open_files_names_the_limit() {
    let log = "E RKNN: [12:00:00.001] failed to convert handle(1020) to fd, ret: -1, errno: 24, errstr: Too many open files\n";
    let text = init_error(Some(-1), log, "m.rkllm").to_string();
    assert_mentions(
        &text,
        &["RLIMIT_NOFILE", "ulimit -n 102400", "file descriptors"],
    );
}

#[test]
fn invalid_model_names_the_toolkit() {
    let log =
        "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.8, platform: RK3588\n\
               E RKNN: [08:11:02.400] invalid rknn llm model magic\n";
    let text = init_error(Some(-1), log, "old.rkllm").to_string();
    assert_mentions(
        &text,
        &[
            "RKLLM-Toolkit 1.1.x",
            "(1.1.1)",
            "rejected the model",
            "invalid rknn llm model magic",
        ],
    );
}

#[test]
fn platform_mismatch_names_the_supported_platforms() {
    let text = init_error(Some(-1), "Query platform error!\n", "m.rkllm").to_string();
    assert_mentions(
        &text,
        &["RK3588 or RK3576", "1.1.x", "Query platform error!"],
    );
}

#[test]
fn unknown_error_shows_the_first_line() {
    let e = init_error(
        Some(-1),
        "E rkllm: brand new failure\nE rkllm: second line\n",
        "m.rkllm",
    );
    assert_eq!(e.cause(), Cause::Unknown);
    let text = e.to_string();
    assert_mentions(&text, &["brand new failure", "RKLLM_LOG_LEVEL=2"]);
    assert!(!text.contains("second line"), "{text}");
}

#[test]
fn null_handle_says_success_without_a_handle() {
    let e = init_error(
        None,
        "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.8, platform: RK3588\n",
        "m.rkllm",
    );
    assert_eq!(e.code(), None);
    assert_eq!(e.cause(), Cause::None);
    assert_mentions(
        &e.to_string(),
        &[
            "returned success (0) without a model handle",
            "without a handle",
            "RKLLM_LOG_LEVEL",
        ],
    );
}

#[test]
fn silent_failure_points_at_the_driver() {
    let e = init_error(Some(-1), "", "m.rkllm");
    let text = e.to_string();
    assert_mentions(
        &text,
        &[
            "printed nothing",
            "rknpu driver",
            "0.9.7 or later",
            "0.9.8 best",
            "RKLLM_LOG_LEVEL=2",
        ],
    );

    // With preflight's driver version the advice is specific.
    let root = std::env::temp_dir().join(format!("rkllm-init-error-{}", std::process::id()));
    std::fs::create_dir_all(root.join("sys/module/rknpu")).unwrap();
    std::fs::write(root.join("sys/module/rknpu/version"), "0.9.6\n").unwrap();
    let report = Preflight::with_root(&root).check(Path::new("m.rkllm"));
    std::fs::remove_dir_all(&root).unwrap();
    let e = init_error(Some(-1), "", "m.rkllm").with_preflight(report);
    assert!(e.preflight().is_some());
    assert_mentions(&e.to_string(), &["found 0.9.6"]);
}

#[test]
fn converts_into_the_crate_error() {
    let e = init_error(Some(-1), SEED, "m.rkllm");
    let expected = e.to_string();
    let error: rkllm::Error = e.into();
    assert!(
        matches!(error, rkllm::Error::Init(ref inner) if inner.cause() == Cause::NpuOutOfMemory)
    );
    assert_eq!(error.to_string(), expected);
    let _: &dyn std::error::Error = &error;
}
