//! Reading the performance table the runtime prints after each run at `RKLLM_LOG_LEVEL=1`:
//!
//! ```text
//! I rkllm:  Stage         Total Time (ms)  Tokens    Time per Token (ms)      Tokens per Second
//! I rkllm:  Prefill       131.24           26        5.05                      198.11
//! I rkllm:  Generate      2513.01          24        104.71                    9.55
//! ```

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stage {
    /// Total time of the stage, in milliseconds.
    pub millis: f64,
    /// Tokens the stage processed.
    pub tokens: usize,
}

/// The last row named `name` (`Prefill` or `Generate`) in `log`.
pub(crate) fn stage(log: &str, name: &str) -> Option<Stage> {
    log.lines()
        .rev()
        .find_map(|line| row(&strip_escapes(line), name))
}

fn row(line: &str, name: &str) -> Option<Stage> {
    let mut words = line.split_whitespace();
    words.by_ref().find(|w| w.eq_ignore_ascii_case(name))?;
    let millis = words.next()?.parse().ok()?;
    let tokens = words.next()?.parse().ok()?;
    Some(Stage { millis, tokens })
}

/// The line without terminal colour sequences (`ESC [ … m`).
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{stage, Stage};

    #[test]
    fn reads_the_table() {
        let log = "I rkllm: rkllm-runtime version: 1.1.1\n\
            I rkllm: ------------------------------\n\
            I rkllm:  Stage         Total Time (ms)  Tokens    Time per Token (ms)      Tokens per Second\n\
            I rkllm:  Prefill       131.24           26        5.05                      198.11\n\
            \u{1b}[32mI rkllm:  Generate      2513.01          24        104.71      9.55\u{1b}[0m\n";
        assert_eq!(
            stage(log, "Prefill"),
            Some(Stage {
                millis: 131.24,
                tokens: 26
            })
        );
        assert_eq!(stage(log, "Generate").map(|s| s.tokens), Some(24));
        assert_eq!(stage("no table here", "Prefill"), None);
        // The header row names no stage with numbers.
        assert_eq!(stage("I rkllm:  Stage  Prefill Total", "Prefill"), None);
    }

    #[test]
    fn the_last_table_wins() {
        let log = " Prefill 1.0 5 0.2 5000\n Prefill 2.0 7 0.3 3500\n";
        assert_eq!(stage(log, "Prefill").map(|s| s.tokens), Some(7));
    }
}
