//! Tokenizers: the mock's built-in one, and a real `tokenizer.json` (feature `tokenizer`).

use std::borrow::Cow;

use crate::gemma;

/// Gemma's special tokens, recognised as text in prompts by the built-in tokenizer.
const SPECIALS: [(&str, i32); 5] = [
    ("<pad>", gemma::PAD),
    ("<eos>", gemma::EOS),
    ("<bos>", gemma::BOS),
    ("<start_of_turn>", gemma::START_OF_TURN),
    ("<end_of_turn>", gemma::END_OF_TURN),
];

pub use crate::gemma::{BOS as BOS_ID, END_OF_TURN as END_OF_TURN_ID};
/// Id of the byte-fallback token for byte 0x00 (Gemma's `<0x00>`); byte `b` is `217 + b`.
pub const BYTE_TOKEN_BASE: i32 = 217;
/// First id of the ASCII pieces.
pub const PIECE_BASE: i32 = 1 << 28;
/// Longest ASCII piece, in characters.
const PIECE_MAX: usize = 4;

/// What the runtime needs from a tokenizer.
pub(crate) trait Tokenize: Send + Sync {
    /// The ids of `text`, special-token text recognised, no BOS added.
    fn encode(&self, text: &[u8]) -> Vec<i32>;
    /// The bytes a token stands for, `None` for an id outside the vocabulary.
    fn token_bytes(&self, id: i32) -> Option<Cow<'_, [u8]>>;
    /// Whether `id` is a special token (its text hidden by `skip_special_token`).
    fn is_special(&self, id: i32) -> bool;
    /// The BOS id.
    fn bos(&self) -> i32;
    /// The `<end_of_turn>` id.
    fn end_of_turn(&self) -> i32;
    /// A short description, part of the model identity prompt caches record.
    fn describe(&self) -> String;
    /// The bytes of `ids`, or the first id outside the vocabulary.
    fn decode(&self, ids: &[i32]) -> Result<Vec<u8>, i32> {
        let mut out = Vec::new();
        for &id in ids {
            out.extend_from_slice(&self.token_bytes(id).ok_or(id)?);
        }
        Ok(out)
    }
}

/// The mock's built-in tokenizer: deterministic, no vocabulary file, and
/// `decode(encode(s)) == s` for every string.
///
/// * Gemma's special tokens written as text are recognised: `<pad>` 0, `<eos>` 1, `<bos>` 2,
///   `<start_of_turn>` 106, `<end_of_turn>` 107.
/// * ASCII text is cut into pieces: runs of letters and digits, runs of whitespace, and each
///   other character alone; runs longer than 4 characters are split every 4. A piece's id is
///   `PIECE_BASE` (2²⁸) plus its characters packed 7 bits each, first character lowest.
/// * Every other byte (so each byte of a non-ASCII character, and NUL) is a byte-fallback
///   token `217 + byte`, as Gemma numbers `<0x00>`…`<0xFF>`.
///
/// ```
/// use rkllm::mock::BuiltinTokenizer;
///
/// let ids = BuiltinTokenizer.encode("<start_of_turn>user\nHi é");
/// assert_eq!(ids[0], 106);
/// assert_eq!(&ids[ids.len() - 2..], &[217 + 0xC3, 217 + 0xA9]);
/// assert_eq!(BuiltinTokenizer.decode(&ids).unwrap(), "<start_of_turn>user\nHi é");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinTokenizer;

#[derive(PartialEq, Eq, Clone, Copy)]
enum Class {
    Word,
    Space,
    Other,
}

fn class(b: u8) -> Class {
    if b.is_ascii_alphanumeric() {
        Class::Word
    } else if b.is_ascii_whitespace() {
        Class::Space
    } else {
        Class::Other
    }
}

impl BuiltinTokenizer {
    /// The ids of `text` (special-token text recognised, no BOS added).
    pub fn encode(&self, text: &str) -> Vec<i32> {
        self.encode_bytes(text.as_bytes())
    }

    /// The ids of arbitrary bytes (a prompt need not be UTF-8).
    pub fn encode_bytes(&self, text: &[u8]) -> Vec<i32> {
        let mut ids = Vec::new();
        let mut i = 0;
        'outer: while i < text.len() {
            if text[i] == b'<' {
                for (s, id) in SPECIALS {
                    if text[i..].starts_with(s.as_bytes()) {
                        ids.push(id);
                        i += s.len();
                        continue 'outer;
                    }
                }
            }
            let b = text[i];
            if b == 0 || !b.is_ascii() {
                ids.push(BYTE_TOKEN_BASE + i32::from(b));
                i += 1;
                continue;
            }
            let c = class(b);
            let mut end = i + 1;
            if c != Class::Other {
                while end < text.len()
                    && end - i < PIECE_MAX
                    && text[end] != 0
                    && text[end].is_ascii()
                    && class(text[end]) == c
                {
                    end += 1;
                }
            }
            let packed = text[i..end]
                .iter()
                .rev()
                .fold(0i32, |acc, &ch| (acc << 7) | i32::from(ch));
            ids.push(PIECE_BASE + packed);
            i = end;
        }
        ids
    }

    /// The text of `ids`, or the first id outside the vocabulary. Byte-fallback tokens that
    /// do not form UTF-8 come back as U+FFFD.
    pub fn decode(&self, ids: &[i32]) -> Result<String, i32> {
        Tokenize::decode(self, ids).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The bytes one token stands for, `None` outside the vocabulary.
    pub fn token_bytes(&self, id: i32) -> Option<Vec<u8>> {
        Tokenize::token_bytes(self, id).map(Cow::into_owned)
    }
}

impl Tokenize for BuiltinTokenizer {
    fn encode(&self, text: &[u8]) -> Vec<i32> {
        self.encode_bytes(text)
    }

    fn token_bytes(&self, id: i32) -> Option<Cow<'_, [u8]>> {
        if let Some((s, _)) = SPECIALS.iter().find(|(_, i)| *i == id) {
            return Some(Cow::Borrowed(s.as_bytes()));
        }
        if (BYTE_TOKEN_BASE..BYTE_TOKEN_BASE + 256).contains(&id) {
            return Some(Cow::Owned(vec![(id - BYTE_TOKEN_BASE) as u8]));
        }
        if id >= PIECE_BASE {
            let mut packed = id - PIECE_BASE;
            let mut out = Vec::with_capacity(PIECE_MAX);
            while packed != 0 {
                let ch = (packed & 0x7f) as u8;
                if ch == 0 {
                    return None;
                }
                out.push(ch);
                packed >>= 7;
            }
            return (!out.is_empty()).then_some(Cow::Owned(out));
        }
        None
    }

    fn is_special(&self, id: i32) -> bool {
        SPECIALS.iter().any(|(_, i)| *i == id)
    }

    fn bos(&self) -> i32 {
        BOS_ID
    }

    fn end_of_turn(&self) -> i32 {
        END_OF_TURN_ID
    }

    fn describe(&self) -> String {
        "builtin".to_owned()
    }
}

/// A Hugging Face `tokenizer.json` of the SentencePiece kind.
#[cfg(feature = "tokenizer")]
pub(crate) struct JsonTokenizer {
    inner: tokenizers::Tokenizer,
    bos: i32,
    end_of_turn: i32,
    specials: std::collections::HashSet<i32>,
    describe: String,
}

#[cfg(feature = "tokenizer")]
impl JsonTokenizer {
    /// Loads `path`; the error is the log line's text.
    pub(crate) fn load(path: &std::path::Path) -> Result<JsonTokenizer, String> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| format!("failed to load tokenizer {}: {e}", path.display()))?;
        let id = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos = id(&["<bos>", "<s>"])
            .ok_or_else(|| format!("tokenizer {} has no <bos> token", path.display()))?;
        let end_of_turn = id(&["<end_of_turn>", "<eos>", "</s>"])
            .ok_or_else(|| format!("tokenizer {} has no <end_of_turn> token", path.display()))?;
        let specials = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id as i32)
            .collect();
        Ok(JsonTokenizer {
            bos: bos as i32,
            end_of_turn: end_of_turn as i32,
            specials,
            describe: format!("json:{}", inner.get_vocab_size(true)),
            inner,
        })
    }
}

#[cfg(feature = "tokenizer")]
impl Tokenize for JsonTokenizer {
    fn encode(&self, text: &[u8]) -> Vec<i32> {
        let text = String::from_utf8_lossy(text);
        match self.inner.encode(text.as_ref(), false) {
            Ok(enc) => enc.get_ids().iter().map(|&i| i as i32).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn token_bytes(&self, id: i32) -> Option<Cow<'_, [u8]>> {
        let piece = self.inner.id_to_token(u32::try_from(id).ok()?)?;
        // SentencePiece byte fallback: `<0xHH>` stands for one raw byte.
        if piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>') {
            if let Ok(b) = u8::from_str_radix(&piece[3..5], 16) {
                return Some(Cow::Owned(vec![b]));
            }
        }
        Some(Cow::Owned(piece.replace('\u{2581}', " ").into_bytes()))
    }

    fn is_special(&self, id: i32) -> bool {
        self.specials.contains(&id)
    }

    fn bos(&self) -> i32 {
        self.bos
    }

    fn end_of_turn(&self) -> i32 {
        self.end_of_turn
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// Whether `bytes` end inside a UTF-8 character (a lead byte whose continuation bytes have
/// not all arrived). Invalid sequences count as complete, so a bad byte never stalls output.
pub(crate) fn ends_inside_char(bytes: &[u8]) -> bool {
    let n = bytes.len();
    for back in 1..=n.min(4) {
        let c = bytes[n - back];
        if c & 0xC0 == 0x80 {
            continue;
        }
        let need = match c {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return need > back;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_pieces() {
        let t = BuiltinTokenizer;
        for s in [
            "",
            "Hello, world!",
            "  \n\n\tx",
            "naïve 世界 🙂",
            "<bos><end_of_turn>",
            "a<b",
        ] {
            assert_eq!(t.decode(&t.encode(s)).unwrap(), s);
        }
        assert_eq!(t.encode("Hello").len(), 2); // "Hell" + "o"
        assert_eq!(t.encode("é").len(), 2);
        assert!(!ends_inside_char("é".as_bytes()));
        assert!(ends_inside_char(&"é".as_bytes()[..1]));
        assert!(ends_inside_char(&"🙂".as_bytes()[..3]));
    }
}
