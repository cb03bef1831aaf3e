//! Reading the runtime's own log lines into a [`Diagnosis`].
//!
//! The rules are those of `testdata/runtime-logs/README.md`; the comments below say where this
//! parser decides something the rules leave open.

use std::borrow::Cow;
use std::fmt;

/// Why `rkllm_init` failed, as read from the runtime's log.
///
/// Each cause has a stable name ([`Cause::as_str`]) used in test fixtures and machine-readable
/// reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Cause {
    /// The log holds no error line (a normal start, or a failure the runtime did not explain).
    #[default]
    None,
    /// The NPU could not allocate memory (a failed NPU allocation, or weight memory that could
    /// not be created for an IOMMU domain).
    NpuOutOfMemory,
    /// The process ran out of file descriptors (every NPU buffer is exported as one).
    TooManyOpenFiles,
    /// The model file is not one this runtime can load (bad magic, model version too old,
    /// a quantization the platform does not support).
    InvalidModel,
    /// The runtime does not support this SoC, or could not identify it.
    PlatformMismatch,
    /// Error lines none of which has a known signature.
    Unknown,
}

impl Cause {
    /// Every cause: [`Cause::None`], then the others in the order of precedence used when
    /// several signatures appear.
    pub const ALL: [Cause; 6] = [
        Cause::None,
        Cause::TooManyOpenFiles,
        Cause::NpuOutOfMemory,
        Cause::InvalidModel,
        Cause::PlatformMismatch,
        Cause::Unknown,
    ];

    /// The stable name: `none`, `npu_out_of_memory`, `too_many_open_files`, `invalid_model`,
    /// `platform_mismatch` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::None => "none",
            Cause::NpuOutOfMemory => "npu_out_of_memory",
            Cause::TooManyOpenFiles => "too_many_open_files",
            Cause::InvalidModel => "invalid_model",
            Cause::PlatformMismatch => "platform_mismatch",
            Cause::Unknown => "unknown",
        }
    }

    /// The cause a stable name ([`as_str`](Cause::as_str)) stands for; `None` for any other
    /// text.
    pub fn from_name(name: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Rank when several signatures appear: lower wins.
    fn precedence(self) -> u8 {
        match self {
            Cause::TooManyOpenFiles => 0,
            Cause::NpuOutOfMemory => 1,
            Cause::InvalidModel => 2,
            Cause::PlatformMismatch => 3,
            Cause::Unknown => 4,
            Cause::None => 5,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The structured reading of what the runtime printed around `rkllm_init`.
///
/// It depends on the log alone, not on whether init failed: a normal start reads as
/// [`Cause::None`] with the version line filled in.
///
/// ```
/// use rkllm::diagnosis::{Cause, Diagnosis};
///
/// let d = Diagnosis::parse(
///     "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.8, platform: RK3588\n\
///      E RKNN: [00:14:18.994] failed to allocate handle, ret: -1, errno: 14, errstr: Bad address\n\
///      E RKNN: [00:14:18.994] failed to malloc npu memory, size: 232128512, flags: 0x2\n",
/// );
/// assert_eq!(d.cause(), Cause::NpuOutOfMemory);
/// assert_eq!(d.requested_bytes(), Some(232_128_512));
/// assert_eq!(d.errno(), Some(14));
/// assert_eq!(d.driver_version(), Some("0.9.8"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnosis {
    cause: Cause,
    requested_bytes: Option<u64>,
    errno: Option<i32>,
    runtime_version: Option<String>,
    driver_version: Option<String>,
    platform: Option<String>,
    driver_too_old: bool,
    lines: Vec<String>,
    error_lines: Vec<String>,
}

impl Diagnosis {
    /// Reads a captured log (stdout and stderr text together).
    ///
    /// Colour codes and carriage returns are removed first; empty lines are dropped. Lines of
    /// the application's own may be interleaved with the runtime's.
    ///
    /// - An *error line* is one whose level mark is `E` (`E RKNN: …`, `E rkllm: …`, optionally
    ///   after a bracketed timestamp). Runtimes before 1.1 printed some lines without a mark, so
    ///   an unmarked line that carries one of the runtime's own failure phrases (for instance
    ///   `Query platform error!`, `failed to malloc npu memory`) also counts. Lines with any
    ///   other mark (`I`, `W`, `D`) never do.
    /// - The cause is [`Cause::None`] without error lines; otherwise the first by precedence of
    ///   too many open files, NPU out of memory, invalid model, platform mismatch among the
    ///   error lines' signatures. Error lines without a known signature read as a platform
    ///   mismatch when the version line names a platform other than RK3588 or RK3576 (1.1.x
    ///   runs on those two only), else as [`Cause::Unknown`].
    /// - `requested_bytes` is the `size:` of the first "failed to malloc npu memory" line,
    ///   `errno` the `errno:` of the first line carrying one, and the versions and platform come
    ///   from the first `rkllm-runtime version:` line (with or without the `I rkllm:` prefix).
    /// - `driver_too_old` is set when the runtime warned that the rknpu driver is too low; it is
    ///   not derived from the version number.
    pub fn parse(log: &str) -> Diagnosis {
        let mut d = Diagnosis::default();
        let mut best: Option<Cause> = None;
        for line in log.split('\n') {
            let line = clean_line(line);
            if line.trim().is_empty() {
                continue;
            }
            let lower = line.to_ascii_lowercase();
            let mark = level_mark(&line);
            let signature = classify(&lower);
            let unmarked_failure =
                mark.is_none() && signature.is_some() && is_runtime_phrase(&lower);
            if mark == Some('E') || unmarked_failure {
                d.error_lines.push(line.to_string());
                if let Some(cause) = signature {
                    if best.is_none_or(|b| cause.precedence() < b.precedence()) {
                        best = Some(cause);
                    }
                }
            }
            if d.errno.is_none() {
                d.errno = errno_of(&lower);
            }
            if d.requested_bytes.is_none() {
                d.requested_bytes = malloc_size_of(&lower);
            }
            if d.runtime_version.is_none() {
                if let Some((runtime, driver, platform)) = version_line(&line, &lower) {
                    d.runtime_version = Some(runtime);
                    d.driver_version = driver;
                    d.platform = platform;
                }
            }
            if warns_driver_too_low(&lower) {
                d.driver_too_old = true;
            }
            d.lines.push(line.into_owned());
        }
        d.cause = match best {
            Some(cause) => cause,
            None if d.error_lines.is_empty() => Cause::None,
            None if d
                .platform
                .as_deref()
                .is_some_and(|p| !is_supported_platform(p)) =>
            {
                Cause::PlatformMismatch
            }
            None => Cause::Unknown,
        };
        d
    }

    /// The cause found.
    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// The size the runtime failed to allocate on the NPU, in bytes.
    pub fn requested_bytes(&self) -> Option<u64> {
        self.requested_bytes
    }

    /// The `errno` of the first line that carries one.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// The runtime's version from its version line, e.g. `1.1.1`.
    pub fn runtime_version(&self) -> Option<&str> {
        self.runtime_version.as_deref()
    }

    /// The rknpu driver's version from the runtime's version line, e.g. `0.9.8`.
    pub fn driver_version(&self) -> Option<&str> {
        self.driver_version.as_deref()
    }

    /// The platform from the runtime's version line, e.g. `RK3588`.
    pub fn platform(&self) -> Option<&str> {
        self.platform.as_deref()
    }

    /// Whether the runtime warned that the rknpu driver is too old (below 0.9.7).
    pub fn driver_too_old(&self) -> bool {
        self.driver_too_old
    }

    /// Every non-empty line captured, colour codes and carriage returns removed. Attach these
    /// to bug reports.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The error lines among [`lines`](Self::lines).
    pub fn error_lines(&self) -> &[String] {
        &self.error_lines
    }

    /// The first error line, if any.
    pub fn first_error_line(&self) -> Option<&str> {
        self.error_lines.first().map(String::as_str)
    }

    /// Whether the version line names a platform 1.1.x supports (RK3588 or RK3576); `None`
    /// without a version line.
    pub fn platform_supported(&self) -> Option<bool> {
        self.platform.as_deref().map(is_supported_platform)
    }
}

/// Whether a platform name from the version line is one the 1.1.x runtime supports.
pub(crate) fn is_supported_platform(platform: &str) -> bool {
    let p = platform.to_ascii_uppercase();
    p.starts_with("RK3588") || p.starts_with("RK3576")
}

/// Removes ANSI escape sequences and trailing carriage returns and whitespace.
pub(crate) fn clean_line(line: &str) -> Cow<'_, str> {
    let stripped = strip_ansi(line);
    match stripped {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim_end()),
        Cow::Owned(s) => Cow::Owned(s.trim_end().to_owned()),
    }
}

/// Removes ANSI escape sequences: CSI (`ESC [ params final`, which covers the colour codes
/// `ESC[…m`) and two-byte `ESC x` sequences. A CSI cut off by the end of the line is dropped.
fn strip_ansi(s: &str) -> Cow<'_, str> {
    if !s.contains('\x1b') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // CSI: parameter and intermediate bytes, then one final byte in '@'..='~'. Any other
        // character after ESC is the second byte of a two-byte sequence, dropped as well.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    Cow::Owned(out)
}

/// The level mark of a runtime line (`E` in `E RKNN: …`), if the line has one: a single
/// capital letter, whitespace, then a tag ending in `:`. A leading bracketed timestamp is
/// skipped, since some builds print one before the mark.
pub(crate) fn level_mark(line: &str) -> Option<char> {
    mark_and_tag(line).map(|(mark, _)| mark)
}

/// The level mark and the tag of a marked line (`('E', "RKNN")` for `E RKNN: …`).
fn mark_and_tag(line: &str) -> Option<(char, &str)> {
    let mut s = line.trim_start();
    while let Some(rest) = s.strip_prefix('[') {
        s = rest.split_once(']')?.1.trim_start();
    }
    let mut chars = s.chars();
    let mark = chars.next().filter(char::is_ascii_uppercase)?;
    let rest = chars.as_str();
    let rest = rest
        .strip_prefix(|c: char| c == ' ' || c == '\t')?
        .trim_start();
    let (tag, _) = rest.split_once(':')?;
    let tag_ok = !tag.is_empty()
        && tag.len() <= 32
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    tag_ok.then_some((mark, tag))
}

/// Whether a (cleaned) line is one the runtime prints itself: marked with its own tags
/// (`I rkllm: …`, `E RKNN: …`; section 4.1 of the runtime notes), or unmarked with one of its
/// own phrases (`rknn_init fail! ret=-1`, `Query platform error!`, the version line of
/// runtimes before 1.1). Lines of the host program written meanwhile are not.
pub(crate) fn is_runtime_line(line: &str) -> bool {
    if let Some((_, tag)) = mark_and_tag(line) {
        return tag.eq_ignore_ascii_case("rkllm") || tag.eq_ignore_ascii_case("rknn");
    }
    let lower = line.to_ascii_lowercase();
    is_runtime_phrase(&lower)
        || lower.trim_start().starts_with("rknn_init fail")
        || lower.trim_start().starts_with("rkllm-runtime version")
}

/// The failure signature a (lowercased) line carries, if any. Within one line the precedence
/// of causes applies too.
fn classify(lower: &str) -> Option<Cause> {
    let has = |needle: &str| lower.contains(needle);
    let errno = errno_of(lower);
    // EMFILE (24) and ENFILE (23): each NPU buffer is exported as a dma-buf fd.
    if has("too many open files") || matches!(errno, Some(23 | 24)) {
        return Some(Cause::TooManyOpenFiles);
    }
    if has("failed to malloc npu memory")
        || has("failed to allocate handle")
        || has("create weight memory")
        || has("cannot allocate memory")
        || has("out of memory")
        || errno == Some(12)
    {
        return Some(Cause::NpuOutOfMemory);
    }
    let model_version_bad = has("model version")
        && ["too old", "too low", "mismatch", "not match", "not support"]
            .iter()
            .any(|w| has(w));
    if has("model magic")
        || model_version_bad
        || has("invalid model")
        || has("invalid rkllm model")
        || has("quantized_dtype")
        || has("w4a16")
    {
        return Some(Cause::InvalidModel);
    }
    let platform_bad = has("platform")
        && [
            "error",
            "not support",
            "unsupported",
            "mismatch",
            "not match",
            "invalid",
        ]
        .iter()
        .any(|w| has(w));
    if platform_bad {
        return Some(Cause::PlatformMismatch);
    }
    None
}

/// Whether an unmarked line holds one of the runtime's own failure phrases. Unmarked lines
/// may be the application's, so the looser signatures of [`classify`] are not enough there.
fn is_runtime_phrase(lower: &str) -> bool {
    const PHRASES: [&str; 7] = [
        "query platform error",
        "rknn llm model magic",
        "failed to malloc npu memory",
        "failed to allocate handle",
        "create weight memory",
        "failed to convert handle",
        "model version is too old",
    ];
    PHRASES.iter().any(|p| lower.contains(p))
}

/// The runtime's warning `Your rknpu driver version is too low, please upgrade to 0.9.7.`
fn warns_driver_too_low(lower: &str) -> bool {
    lower.contains("driver version") && (lower.contains("too low") || lower.contains("too old"))
}

/// The number after `errno:` (or `errno=`, `errno `) in a lowercased line.
fn errno_of(lower: &str) -> Option<i32> {
    lower.match_indices("errno").find_map(|(i, key)| {
        let digits = number_after(&lower[i + key.len()..], true)?;
        digits.parse().ok()
    })
}

/// The `size:` of a "failed to malloc npu memory" line (decimal, or hexadecimal with `0x`).
fn malloc_size_of(lower: &str) -> Option<u64> {
    const KEY: &str = "failed to malloc npu memory";
    let at = lower.find(KEY)? + KEY.len();
    let rest = &lower[at..];
    let size_at = rest.find("size")? + "size".len();
    let rest = rest[size_at..]
        .trim_start()
        .trim_start_matches([':', '='])
        .trim_start();
    if let Some(hex) = rest.strip_prefix("0x") {
        let end = hex
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(hex.len());
        return u64::from_str_radix(&hex[..end], 16).ok();
    }
    number_after(rest, false)?.parse().ok()
}

/// The decimal number at the start of `s`, after spaces and one optional `:` or `=`.
fn number_after(s: &str, signed: bool) -> Option<&str> {
    let s = s.trim_start();
    let s = s.strip_prefix([':', '=']).unwrap_or(s).trim_start();
    let sign = usize::from(signed && s.starts_with('-'));
    let end = s[sign..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(s.len(), |e| e + sign);
    (end > sign).then(|| &s[..end])
}

/// The fields of a version line: runtime version, driver version, platform.
fn version_line(line: &str, lower: &str) -> Option<(String, Option<String>, Option<String>)> {
    const KEY: &str = "rkllm-runtime version";
    let at = lower.find(KEY)?;
    // The keys are ASCII, so byte offsets in `lower` are offsets in `line` too.
    let runtime = value_after(line, at, KEY)?;
    let driver_at = lower[at..].find("driver version").map(|i| i + at);
    let driver = driver_at.and_then(|i| value_after(line, i, "driver version"));
    let platform_at = lower[at..].find("platform").map(|i| i + at);
    let platform = platform_at.and_then(|i| value_after(line, i, "platform"));
    Some((runtime, driver, platform))
}

/// The value after `key` at byte `at`: past spaces and one `:`, up to a comma or whitespace.
fn value_after(line: &str, at: usize, key: &str) -> Option<String> {
    let rest = line[at + key.len()..].trim_start();
    let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
    let end = rest
        .find(|c: char| c == ',' || c.is_whitespace())
        .unwrap_or(rest.len());
    let value = rest[..end].trim_end_matches(['.', ';']);
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colour_codes() {
        assert_eq!(strip_ansi("\x1b[31mE RKNN:\x1b[0m x"), "E RKNN: x");
        assert_eq!(strip_ansi("\x1b[1;33mW\x1b[m"), "W");
        assert_eq!(strip_ansi("cut \x1b[3"), "cut ");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn level_marks() {
        assert_eq!(level_mark("E RKNN: [00:14:18.994] failed"), Some('E'));
        assert_eq!(level_mark("  E rkllm: failed"), Some('E'));
        assert_eq!(level_mark("[00:00:01.000] E RKNN: failed"), Some('E'));
        assert_eq!(level_mark("W rkllm: Warning"), Some('W'));
        assert_eq!(
            level_mark("I rkllm: rkllm-runtime version: 1.1.1"),
            Some('I')
        );
        assert_eq!(level_mark("rknn_init fail! ret=-1"), None);
        assert_eq!(level_mark("E is for elephant: no tag"), None);
        assert_eq!(level_mark("Error: something"), None);
        assert_eq!(level_mark("E"), None);
        assert_eq!(level_mark("[unclosed E RKNN: x"), None);
    }

    #[test]
    fn runtime_lines_are_told_from_the_hosts() {
        for line in [
            "I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: 0.9.8, platform: RK3588",
            "W rkllm: Warning: Your rknpu driver version is too low, please upgrade to 0.9.7.",
            "E RKNN: [00:14:18.994] failed to allocate handle, ret: -1, errno: 14",
            "[12:00:00.001] E RKNN: load model file error!",
            "E rkllm: max_context_len 9 is invalid",
            "rknn_init fail! ret=-1",
            "Query platform error!",
            "rkllm-runtime version: 1.0.1, rknpu driver version: 0.9.6, platform: RK3588",
        ] {
            assert!(is_runtime_line(line), "{line:?}");
        }
        for line in [
            "host: serving on port 8080",
            "E myapp: database unreachable",
            "I server: request done",
            "test streaming ... ok",
            "x",
            "",
        ] {
            assert!(!is_runtime_line(line), "{line:?}");
        }
    }

    #[test]
    fn errno_and_size() {
        assert_eq!(
            errno_of("ret: -1, errno: 14, errstr: bad address"),
            Some(14)
        );
        assert_eq!(errno_of("errno=12"), Some(12));
        assert_eq!(errno_of("errno: -5"), Some(-5));
        assert_eq!(errno_of("errno: none"), None);
        assert_eq!(errno_of("errnos errno: 7"), Some(7));
        assert_eq!(
            malloc_size_of("failed to malloc npu memory, size: 4022861824, flags: 0x2"),
            Some(4_022_861_824)
        );
        assert_eq!(
            malloc_size_of("failed to malloc npu memory, size: 0x1000"),
            Some(4096)
        );
        assert_eq!(malloc_size_of("failed to malloc npu memory"), None);
        assert_eq!(malloc_size_of("size: 5"), None);
    }

    #[test]
    fn cause_names_round_trip() {
        for cause in Cause::ALL {
            assert_eq!(Cause::from_name(cause.as_str()), Some(cause));
            assert_eq!(cause.to_string(), cause.as_str());
        }
        assert_eq!(Cause::from_name("oom"), None);
        assert_eq!(Cause::from_name("None"), None, "names are exact");
    }
}
