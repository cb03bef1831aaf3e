//! Reading runtime logs beyond the fixtures: the shapes real logs take.

use rkllm::diagnosis::{Cause, Diagnosis};

const VERSION: &str =
    "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.8, platform: RK3588";

#[test]
fn colour_codes_are_ignored() {
    let log = format!(
        "\x1b[32m{VERSION}\x1b[0m\n\
         \x1b[1;31mE RKNN:\x1b[0m [01:02:03.004] failed to allocate handle, ret: -1, errno: 14, errstr: Bad address\x1b[0m\n\
         \x1b[31mE RKNN: [01:02:03.004] failed to malloc npu memory, size: 1048576, flags: 0x2\x1b[m\n"
    );
    let d = Diagnosis::parse(&log);
    assert_eq!(d.cause(), Cause::NpuOutOfMemory);
    assert_eq!(d.requested_bytes(), Some(1_048_576));
    assert_eq!(d.errno(), Some(14));
    assert_eq!(d.runtime_version(), Some("1.1.1"));
    assert_eq!(d.platform(), Some("RK3588"));
    assert_eq!(d.error_lines().len(), 2);
    assert!(
        d.lines().iter().all(|l| !l.contains('\x1b')),
        "{:?}",
        d.lines()
    );
}

#[test]
fn crlf_line_ends() {
    let log = format!(
        "{VERSION}\r\nE RKNN: [08:11:02.400] invalid rknn llm model magic\r\nE RKNN: [08:11:02.400] load model file error!\r\n"
    );
    let d = Diagnosis::parse(&log);
    assert_eq!(d.cause(), Cause::InvalidModel);
    assert_eq!(d.platform(), Some("RK3588"));
    assert_eq!(d.driver_version(), Some("0.9.8"));
    assert!(d.lines().iter().all(|l| !l.ends_with('\r')));
    assert_eq!(
        d.first_error_line(),
        Some("E RKNN: [08:11:02.400] invalid rknn llm model magic")
    );
}

#[test]
fn no_timestamps_other_sizes_and_errnos() {
    let log =
        "E RKNN: failed to allocate handle, ret: -1, errno: 12, errstr: Cannot allocate memory\n\
               E RKNN: failed to malloc npu memory, size: 4022861824, flags: 0x2\n\
               E RKNN: load model file error!";
    let d = Diagnosis::parse(log);
    assert_eq!(d.cause(), Cause::NpuOutOfMemory);
    assert_eq!(d.requested_bytes(), Some(4_022_861_824));
    assert_eq!(d.errno(), Some(12));
    assert_eq!(d.runtime_version(), None);
    assert_eq!((d.driver_version(), d.platform()), (None, None));
    // The last line had no newline and still counts.
    assert_eq!(d.error_lines().len(), 3);
}

#[test]
fn first_malloc_line_and_first_errno_win() {
    let log = "E RKNN: [00:00:00.001] failed to malloc npu memory, size: 111, flags: 0x2\n\
               E RKNN: [00:00:00.002] failed to malloc npu memory, size: 222, flags: 0x2\n\
               E RKNN: [00:00:00.003] failed to allocate handle, ret: -1, errno: 14, errstr: Bad address\n\
               E RKNN: [00:00:00.004] failed to allocate handle, ret: -1, errno: 12, errstr: Cannot allocate memory\n";
    let d = Diagnosis::parse(log);
    assert_eq!(d.requested_bytes(), Some(111));
    assert_eq!(d.errno(), Some(14));
}

#[test]
fn application_lines_in_between() {
    let log = format!(
        "my-app: loading /models/gemma.rkllm\n\
         {VERSION}\n\
         progress 50%\n\
         E rkllm: failed to convert handle(1020) to fd, ret: -1, errno: 24, errstr: Too many open files\n\
         Error: the app's own message, not the runtime's\n\
         my-app: giving up\n"
    );
    let d = Diagnosis::parse(&log);
    assert_eq!(d.cause(), Cause::TooManyOpenFiles);
    assert_eq!(d.errno(), Some(24));
    assert_eq!(d.runtime_version(), Some("1.1.1"));
    assert_eq!(d.error_lines().len(), 1);
    assert_eq!(d.lines().len(), 6);
    assert!(d.error_lines()[0].starts_with("E rkllm: failed to convert handle"));
}

#[test]
fn precedence_when_several_signatures_appear() {
    let magic = "E RKNN: invalid rknn llm model magic";
    let oom = "E RKNN: failed to malloc npu memory, size: 42, flags: 0x2";
    let fds = "E RKNN: failed to convert handle(7) to fd, ret: -1, errno: 24, errstr: Too many open files";
    let platform = "Query platform error!";
    let unknown = "E RKNN: something nobody has seen";
    let cases: [(&[&str], Cause); 6] = [
        (&[magic, oom], Cause::NpuOutOfMemory),
        (&[oom, fds], Cause::TooManyOpenFiles),
        (&[fds, magic, oom, platform], Cause::TooManyOpenFiles),
        (&[platform, magic], Cause::InvalidModel),
        (&[unknown, platform], Cause::PlatformMismatch),
        (&[unknown, magic, unknown], Cause::InvalidModel),
    ];
    for (lines, want) in cases {
        let d = Diagnosis::parse(&lines.join("\n"));
        assert_eq!(d.cause(), want, "{lines:?}");
    }
}

#[test]
fn platform_mismatch_shapes() {
    // 1.0.1 prints this without a level mark.
    let d = Diagnosis::parse("rkllm-runtime version: 1.0.1, rknpu driver version: 0.9.8, platform: RK3582\nQuery platform error!\n");
    assert_eq!(d.cause(), Cause::PlatformMismatch);
    assert_eq!(d.error_lines(), ["Query platform error!"]);
    assert_eq!(d.runtime_version(), Some("1.0.1"));
    assert_eq!(d.platform(), Some("RK3582"));
    assert_eq!(d.platform_supported(), Some(false));

    // An unrecognised error on a platform the runtime does not support.
    let d = Diagnosis::parse(
        "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.8, platform: RK3562\n\
         E rkllm: init failed\n",
    );
    assert_eq!(d.cause(), Cause::PlatformMismatch);

    let d = Diagnosis::parse("E rkllm: current platform is not supported\n");
    assert_eq!(d.cause(), Cause::PlatformMismatch);

    // No error line: a platform name alone is no failure.
    let d = Diagnosis::parse(
        "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.8, platform: RK3562\n",
    );
    assert_eq!(d.cause(), Cause::None);
    assert_eq!(d.platform_supported(), Some(false));

    // RK3576 is supported: an unknown error stays unknown there.
    let d = Diagnosis::parse(
        "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.8, platform: RK3576\n\
         E rkllm: init failed\n",
    );
    assert_eq!(d.cause(), Cause::Unknown);
}

#[test]
fn invalid_model_shapes() {
    for line in [
        "E RKNN: [08:11:02.400] invalid rknn llm model magic",
        "E rkllm: model version is too old, please reconvert the model",
        "E rkllm: the model version too old",
        "[08:11:02.400] E RKNN: invalid rknn llm model magic",
    ] {
        let d = Diagnosis::parse(line);
        assert_eq!(d.cause(), Cause::InvalidModel, "{line}");
        assert_eq!(d.error_lines(), [line]);
    }
}

#[test]
fn unknown_error_lines() {
    let d = Diagnosis::parse(&format!(
        "{VERSION}\nE RKNN: [00:00:00.000] load model file error!\n"
    ));
    assert_eq!(d.cause(), Cause::Unknown);
    assert_eq!(
        d.first_error_line(),
        Some("E RKNN: [00:00:00.000] load model file error!")
    );

    let d = Diagnosis::parse("E rkllm: something new went wrong\n");
    assert_eq!(d.cause(), Cause::Unknown);
    assert_eq!(d.errno(), None);
}

#[test]
fn non_error_lines_never_make_a_cause() {
    let log = "I rkllm: platform error is only information here\n\
               W rkllm: failed to malloc npu memory, size: 5, flags: 0x2\n\
               D RKNN: invalid rknn llm model magic\n\
               rknn_init fail! ret=-1\n\
               E is for elephant: an application line\n\
               my-app: platform error budget exceeded, out of memory for the cache\n";
    let d = Diagnosis::parse(log);
    assert_eq!(d.cause(), Cause::None);
    assert!(d.error_lines().is_empty());
    // The size is read from the first such line whatever its level.
    assert_eq!(d.requested_bytes(), Some(5));
    assert_eq!(d.lines().len(), 6);
}

#[test]
fn driver_too_old_comes_from_the_warning() {
    let d = Diagnosis::parse(
        "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.6, platform: RK3588\n",
    );
    assert!(!d.driver_too_old());
    assert_eq!(d.driver_version(), Some("0.9.6"));

    let d = Diagnosis::parse("\x1b[33mW rkllm: Warning: Your rknpu driver version is too low, please upgrade to 0.9.7.\x1b[0m\r\n");
    assert!(d.driver_too_old());
    assert_eq!(d.cause(), Cause::None);

    // 1.0.1 printed its lines without marks.
    let d = Diagnosis::parse(
        "Warning: Your rknpu driver version is too low, please upgrade to 0.9.7.\n",
    );
    assert!(d.driver_too_old());
    assert_eq!(d.cause(), Cause::None);
}

#[test]
fn unmarked_runtime_failure_lines_count() {
    let d = Diagnosis::parse("failed to malloc npu memory, size: 4096, flags: 0x2\n");
    assert_eq!(d.cause(), Cause::NpuOutOfMemory);
    assert_eq!(d.error_lines().len(), 1);
    let d = Diagnosis::parse("invalid rknn llm model magic\n");
    assert_eq!(d.cause(), Cause::InvalidModel);
}

#[test]
fn version_line_forms() {
    let d = Diagnosis::parse(VERSION);
    assert_eq!(d.runtime_version(), Some("1.1.1"), "version line");
    assert_eq!(d.driver_version(), Some("0.9.8"));
    assert_eq!(d.platform(), Some("RK3588"));

    let d = Diagnosis::parse(
        "rkllm-runtime version: 1.0.1, rknpu driver version: 0.8.2, platform: RK3588",
    );
    assert_eq!(d.runtime_version(), Some("1.0.1"));
    assert_eq!(d.driver_version(), Some("0.8.2"));

    // The first version line wins.
    let d = Diagnosis::parse(&format!(
        "{VERSION}\nI rkllm: rkllm-runtime version: 1.1.4, rknpu driver version: 0.9.7, platform: RK3576"
    ));
    assert_eq!(d.runtime_version(), Some("1.1.1"));
    assert_eq!(d.platform(), Some("RK3588"));
}

#[test]
fn empty_and_garbage_logs() {
    let d = Diagnosis::parse("");
    assert_eq!(d, Diagnosis::default());
    assert_eq!(d.cause(), Cause::None);
    assert!(d.lines().is_empty());

    for log in [
        "\n\n\r\n",
        "\x1b[",
        "errno:",
        "size: 99999999999999999999999",
        "E RKNN:",
        "\u{fffd}\u{0}",
    ] {
        let d = Diagnosis::parse(log);
        assert_eq!(d.requested_bytes(), None, "{log:?}");
        assert_eq!(d.errno(), None, "{log:?}");
    }
    let d = Diagnosis::parse("E RKNN: failed to malloc npu memory, size: 99999999999999999999999");
    assert_eq!(d.cause(), Cause::NpuOutOfMemory);
    assert_eq!(d.requested_bytes(), None);
}
