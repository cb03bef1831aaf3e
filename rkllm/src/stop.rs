//! Stop strings matched across token boundaries.

/// Holds back text that could be the start of a stop string, and finds the first stop
/// string in the text seen so far.
#[derive(Debug, Default)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What feeding text produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StopOutcome {
    /// No stop string yet; this text is safe to emit.
    Continue(String),
    /// A stop string matched: emit this text (before the match) and stop.
    Stopped { text: String, stop: String },
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub fn is_active(&self) -> bool {
        !self.stops.is_empty()
    }

    pub fn feed(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue(text.to_owned());
        }
        self.held.push_str(text);
        // The earliest match wins; at one position, the longest stop string.
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|&(at, s)| (at, std::cmp::Reverse(s.len())));
        if let Some((at, stop)) = found {
            let stop = stop.clone();
            let text = self.held[..at].to_owned();
            self.held.clear();
            return StopOutcome::Stopped { text, stop };
        }
        // Keep the longest suffix that is a proper prefix of some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let emit = self.held[..keep].to_owned();
        self.held.drain(..keep);
        StopOutcome::Continue(emit)
    }

    /// The run ended without a stop string: whatever was held back is output.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.feed(p) {
                StopOutcome::Continue(t) => out.push_str(&t),
                StopOutcome::Stopped { text, stop } => {
                    out.push_str(&text);
                    return (out, Some(stop));
                }
            }
        }
        out.push_str(&m.flush());
        (out, None)
    }

    #[test]
    fn stop_across_tokens_is_cut() {
        assert_eq!(
            run(&["END"], &["abc E", "N", "D tail"]),
            ("abc ".into(), Some("END".into()))
        );
    }

    #[test]
    fn partial_prefix_is_released_when_it_does_not_match() {
        assert_eq!(
            run(&["END"], &["abc E", "N", "x"]),
            ("abc ENx".into(), None)
        );
        assert_eq!(run(&["END"], &["abc EN"]), ("abc EN".into(), None));
    }

    #[test]
    fn earliest_match_wins() {
        assert_eq!(
            run(&["b", "abc"], &["xabc"]),
            ("x".into(), Some("abc".into()))
        );
        assert_eq!(
            run(&["\n\n"], &["one\n", "\ntwo"]),
            ("one".into(), Some("\n\n".into()))
        );
    }

    #[test]
    fn multibyte_text_is_split_on_char_boundaries() {
        assert_eq!(
            run(&["世界!"], &["héllo 世", "界?"]),
            ("héllo 世界?".into(), None)
        );
    }
}
