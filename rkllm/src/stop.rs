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
        self.decide(false)
    }

    /// The run ended: a stop string complete in the held text still stops it (the longest
    /// one at the earliest position); otherwise whatever was held back is output.
    pub fn flush(&mut self) -> StopOutcome {
        let outcome = self.decide(true);
        match outcome {
            StopOutcome::Continue(mut text) => {
                text.push_str(&std::mem::take(&mut self.held));
                StopOutcome::Continue(text)
            }
            stopped => stopped,
        }
    }

    fn decide(&mut self, at_end: bool) -> StopOutcome {
        // The earliest complete match; at one position, the longest stop string.
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|&(at, s)| (at, std::cmp::Reverse(s.len())));
        // The earliest position where a stop string could still complete with more text.
        // A match found after it (or a shorter one at it) is not final yet: the longer or
        // earlier stop string wins if it completes, whatever the token boundaries.
        let pending = if at_end {
            None
        } else {
            let held = &self.held;
            held.char_indices().map(|(i, _)| i).find(|&i| {
                let rest = &held[i..];
                self.stops
                    .iter()
                    .any(|s| s.len() > rest.len() && s.starts_with(rest))
            })
        };
        match (found, pending) {
            (Some((at, _)), Some(p)) if p <= at => self.emit_before(p),
            (Some((at, stop)), _) => {
                let stop = stop.clone();
                let text = self.held[..at].to_owned();
                self.held.clear();
                StopOutcome::Stopped { text, stop }
            }
            (None, Some(p)) => self.emit_before(p),
            (None, None) => StopOutcome::Continue(std::mem::take(&mut self.held)),
        }
    }

    /// Emits the held text before `at` and keeps the rest.
    fn emit_before(&mut self, at: usize) -> StopOutcome {
        let emit = self.held[..at].to_owned();
        self.held.drain(..at);
        StopOutcome::Continue(emit)
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
        match m.flush() {
            StopOutcome::Continue(t) => {
                out.push_str(&t);
                (out, None)
            }
            StopOutcome::Stopped { text, stop } => {
                out.push_str(&text);
                (out, Some(stop))
            }
        }
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

    #[test]
    fn the_longest_stop_string_wins_whatever_the_token_boundaries() {
        let stops = ["AB", "ABC"];
        for pieces in [
            &["xABCy"][..],
            &["xA", "BCy"],
            &["xAB", "Cy"],
            &["x", "A", "B", "C", "y"],
        ] {
            assert_eq!(
                run(&stops, pieces),
                ("x".into(), Some("ABC".into())),
                "{pieces:?}"
            );
        }
        // The shorter one wins when the longer one does not complete, also at the end.
        assert_eq!(run(&stops, &["xAB", "D"]), ("x".into(), Some("AB".into())));
        assert_eq!(run(&stops, &["xA", "B"]), ("x".into(), Some("AB".into())));
    }

    #[test]
    fn an_earlier_stop_string_still_completing_wins_over_a_later_complete_one() {
        assert_eq!(
            run(&["XABC", "AB"], &["-XA", "B", "C"]),
            ("-".into(), Some("XABC".into()))
        );
        assert_eq!(
            run(&["XABC", "AB"], &["-XA", "B", "D"]),
            ("-X".into(), Some("AB".into()))
        );
    }
}
