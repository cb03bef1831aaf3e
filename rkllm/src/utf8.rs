//! Reassembling UTF-8 that the runtime delivers in pieces.
//!
//! The runtime hands over a token's bytes, which for byte-fallback tokens may be part of a
//! character (`RKLLM_RUN_WAITING`, and possibly also `RKLLM_RUN_NORMAL`). The assembler keeps
//! an incomplete tail until the next piece completes it, never decodes lossily and never
//! panics; bytes that can never become UTF-8 are handed back as such.

/// What one piece of bytes produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Assembled {
    /// Complete text that became available.
    pub text: String,
    /// Byte runs that are not UTF-8 and cannot become UTF-8, in order, each with the byte
    /// offset in `text` where it stood (the text before it came before it).
    pub invalid: Vec<(usize, Vec<u8>)>,
}

#[derive(Debug, Default)]
pub(crate) struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Appends `bytes` and returns what is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> Assembled {
        let mut out = Assembled::default();
        if self.pending.is_empty() {
            // Fast path: a whole, valid piece (the common case) needs no buffering.
            if let Ok(s) = std::str::from_utf8(bytes) {
                out.text.push_str(s);
                return out;
            }
        }
        self.pending.extend_from_slice(bytes);
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.text.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is UTF-8 by the definition of valid_up_to, so this cannot fail.
                    out.text
                        .push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: keep it for the next piece.
                        None => {
                            rest = after;
                            break;
                        }
                        Some(n) => {
                            out.invalid.push((out.text.len(), after[..n].to_vec()));
                            rest = &after[n..];
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Ends the stream: an incomplete character left over is returned as invalid bytes.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if self.pending.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.pending))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_character_is_reassembled() {
        let bytes = "héllo 世界 🙂".as_bytes();
        for split in 0..=bytes.len() {
            let mut a = Utf8Assembler::default();
            let mut text = a.push(&bytes[..split]).text;
            text.push_str(&a.push(&bytes[split..]).text);
            assert_eq!(text, "héllo 世界 🙂", "split at {split}");
            assert_eq!(a.finish(), None);
        }
    }

    #[test]
    fn byte_by_byte() {
        let s = "a🙂b世";
        let mut a = Utf8Assembler::default();
        let mut text = String::new();
        for b in s.as_bytes() {
            let out = a.push(std::slice::from_ref(b));
            assert!(out.invalid.is_empty());
            text.push_str(&out.text);
        }
        assert_eq!(text, s);
    }

    #[test]
    fn invalid_bytes_are_reported_not_replaced() {
        let mut a = Utf8Assembler::default();
        let out = a.push(b"ok\xffgo\xc3");
        assert_eq!(out.text, "okgo");
        assert_eq!(out.invalid, vec![(2, vec![0xff])]);
        let out = a.push(b"\xa9!");
        assert_eq!(out.text, "é!");
        let out = a.push(b"\xe4\xb8");
        assert_eq!(out.text, "");
        assert_eq!(a.finish(), Some(vec![0xe4, 0xb8]));
    }
}
