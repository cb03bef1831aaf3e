//! Tokenizers: the mock's built-in one, and a real `tokenizer.json` (feature `tokenizer`).

use std::borrow::Cow;

use crate::gemma;

/// Gemma's special tokens, recognised as text in prompts by the built-in tokenizer.
const SPECIALS: [(&str, i32); 5] = [
    ("<pad>", gemma::PAD as i32),
    ("<eos>", gemma::EOS as i32),
    ("<bos>", gemma::BOS as i32),
    ("<start_of_turn>", gemma::START_OF_TURN as i32),
    ("<end_of_turn>", gemma::END_OF_TURN as i32),
];

/// Gemma's `<bos>` as the runtime's `int32` id (the mock is a C runtime).
pub const BOS_ID: i32 = gemma::BOS as i32;
/// Gemma's `<end_of_turn>` as the runtime's `int32` id.
pub const END_OF_TURN_ID: i32 = gemma::END_OF_TURN as i32;
/// Id of the byte-fallback token for byte 0x00 (Gemma's `<0x00>`); byte `b` is `217 + b`.
pub const BYTE_TOKEN_BASE: i32 = 217;
/// First id of the ASCII pieces (above every Gemma special and byte-fallback id).
pub const PIECE_BASE: i32 = 512;
/// Longest piece of letters and digits, in characters.
const WORD_MAX: usize = 3;
/// Longest piece of whitespace, in characters.
const SPACE_MAX: usize = 4;
/// Letters and digits, in the order of their piece digits.
const WORD_CHARS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Whitespace characters, in the order of their piece digits.
const SPACE_CHARS: &[u8; 6] = b" \t\n\x0b\x0c\r";

/// The pieces of one class: every string of 1 to `max` characters of `alphabet` has one id,
/// strings of length `n` numbered after all shorter ones, first character most significant.
struct PieceSet {
    alphabet: &'static [u8],
    max: usize,
    /// The first id of the set.
    base: i32,
}

impl PieceSet {
    /// How many ids the set takes: `a + a² + … + a^max`.
    const fn len(alphabet: usize, max: usize) -> i32 {
        let mut total = 0;
        let mut power = 1;
        let mut n = 0;
        while n < max {
            power *= alphabet;
            total += power;
            n += 1;
        }
        total as i32
    }

    fn end(&self) -> i32 {
        self.base + PieceSet::len(self.alphabet.len(), self.max)
    }

    fn digit(&self, ch: u8) -> Option<i32> {
        self.alphabet
            .iter()
            .position(|&c| c == ch)
            .map(|d| d as i32)
    }

    fn id(&self, piece: &[u8]) -> i32 {
        let shorter = PieceSet::len(self.alphabet.len(), piece.len() - 1);
        let radix = self.alphabet.len() as i32;
        let value = piece.iter().fold(0, |acc, &ch| {
            acc * radix + self.digit(ch).unwrap_or_default()
        });
        self.base + shorter + value
    }

    fn bytes(&self, id: i32) -> Option<Vec<u8>> {
        if !(self.base..self.end()).contains(&id) {
            return None;
        }
        let radix = self.alphabet.len() as i32;
        let mut rest = id - self.base;
        let mut len = 1;
        let mut count = radix;
        while rest >= count {
            rest -= count;
            count *= radix;
            len += 1;
        }
        let mut out = vec![0; len];
        for slot in out.iter_mut().rev() {
            *slot = self.alphabet[(rest % radix) as usize];
            rest /= radix;
        }
        Some(out)
    }
}

const WORDS: PieceSet = PieceSet {
    alphabet: WORD_CHARS,
    max: WORD_MAX,
    base: PIECE_BASE,
};
const SPACES: PieceSet = PieceSet {
    alphabet: SPACE_CHARS,
    max: SPACE_MAX,
    base: PIECE_BASE + PieceSet::len(WORD_CHARS.len(), WORD_MAX),
};
/// The first id of the single-character pieces of other ASCII characters (id = base + byte).
const OTHER_BASE: i32 = PIECE_BASE
    + PieceSet::len(WORD_CHARS.len(), WORD_MAX)
    + PieceSet::len(SPACE_CHARS.len(), SPACE_MAX);

// Every piece id fits in the vocabulary.
const _: () = assert!(OTHER_BASE + 128 <= crate::gemma::VOCAB_SIZE as i32);

/// What the runtime needs from a tokenizer.
pub(crate) trait Tokenize: Send + Sync {
    /// The ids of `text`, special-token text recognised, no BOS added.
    fn encode(&self, text: &[u8]) -> Vec<i32>;
    /// The bytes a token stands for, `None` for an id outside the vocabulary.
    fn token_bytes(&self, id: i32) -> Option<Cow<'_, [u8]>>;
    /// Whether `id` is a special token (its text hidden by `skip_special_token`).
    fn is_special(&self, id: i32) -> bool;
    /// The BOS id, `None` for a vocabulary without one (Qwen's): nothing is added then.
    fn bos(&self) -> Option<i32>;
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
/// * ASCII text is cut into pieces: runs of letters and digits (split every 3 characters),
///   runs of whitespace (split every 4), and each other character alone. Each piece has its
///   own id from [`PIECE_BASE`] (512) up, so every id is below [`gemma::VOCAB_SIZE`] (256,000, Gemma
///   2's vocabulary) and a model with a real vocabulary of that size accepts it.
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

/// The class of an ASCII byte other than NUL (every other byte is a byte-fallback token).
fn class(b: u8) -> Class {
    if b.is_ascii_alphanumeric() {
        Class::Word
    } else if SPACE_CHARS.contains(&b) {
        Class::Space
    } else {
        Class::Other
    }
}

/// The class of a byte that can be part of a piece, `None` for NUL and non-ASCII bytes.
fn class_of(b: u8) -> Option<Class> {
    (b != 0 && b.is_ascii()).then(|| class(b))
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
            let max = match c {
                Class::Word => WORD_MAX,
                Class::Space => SPACE_MAX,
                Class::Other => 1,
            };
            let mut end = i + 1;
            while end < text.len() && end - i < max && class_of(text[end]) == Some(c) {
                end += 1;
            }
            let piece = &text[i..end];
            ids.push(match c {
                Class::Word => WORDS.id(piece),
                Class::Space => SPACES.id(piece),
                Class::Other => OTHER_BASE + i32::from(b),
            });
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
        if let Some(piece) = WORDS.bytes(id).or_else(|| SPACES.bytes(id)) {
            return Some(Cow::Owned(piece));
        }
        let other = u8::try_from(id.checked_sub(OTHER_BASE)?).ok()?;
        (other != 0 && other.is_ascii() && class(other) == Class::Other)
            .then(|| Cow::Owned(vec![other]))
    }

    fn is_special(&self, id: i32) -> bool {
        SPECIALS.iter().any(|(_, i)| *i == id)
    }

    fn bos(&self) -> Option<i32> {
        Some(BOS_ID)
    }

    fn end_of_turn(&self) -> i32 {
        END_OF_TURN_ID
    }

    fn describe(&self) -> String {
        "builtin".to_owned()
    }
}

/// A Hugging Face `tokenizer.json` of the SentencePiece kind.
///
/// A BPE file the lean loader reads (Gemma 2's) is shared with every other user of the same
/// file in the process, the chat's `GemmaTokenizer` included, so it is in memory once. Other
/// files go through the `tokenizers` crate's own loader.
#[cfg(feature = "tokenizer")]
pub(crate) struct JsonTokenizer {
    backend: Backend,
    bos: Option<i32>,
    end_of_turn: i32,
    specials: std::collections::HashSet<i32>,
    /// Added tokens' ids: their text is their content, never byte-level mapped.
    added: std::collections::HashSet<i32>,
    /// A byte-level BPE (GPT-2's byte-to-character mapping: Qwen, Llama 3): a piece's
    /// characters stand for bytes.
    byte_level: bool,
    describe: String,
}

#[cfg(feature = "tokenizer")]
enum Backend {
    /// Loaded by the lean loader, shared in the process; special-token text is split out by
    /// [`SharedTokenizer::encode_prompt_text`].
    Shared(std::sync::Arc<crate::chat::tokenizer::SharedTokenizer>),
    /// Loaded by the `tokenizers` crate; it parses special-token text itself.
    Full(Box<tokenizers::Tokenizer>),
}

#[cfg(feature = "tokenizer")]
impl JsonTokenizer {
    /// Loads `path`; the error is the log line's text.
    pub(crate) fn load(path: &std::path::Path) -> Result<JsonTokenizer, String> {
        use crate::chat::tokenizer::{SharedLoadError, SharedTokenizer};
        use crate::chat::LoadError;
        let failed =
            |e: &dyn std::fmt::Display| format!("failed to load tokenizer {}: {e}", path.display());
        let backend = match SharedTokenizer::load(path) {
            Ok(shared) if shared.plain_specials() => Backend::Shared(shared),
            Ok(_) | Err(SharedLoadError::Load(LoadError::Unsupported(_))) => Backend::Full(
                Box::new(tokenizers::Tokenizer::from_file(path).map_err(|e| failed(&e))?),
            ),
            Err(e) => return Err(failed(&e)),
        };
        let (token_to_id, added, vocab_size) = match &backend {
            Backend::Shared(t) => (
                Box::new(|n: &str| t.inner().token_to_id(n)) as Box<dyn Fn(&str) -> Option<u32>>,
                t.inner().get_added_tokens_decoder(),
                t.inner().get_vocab_size(true),
            ),
            Backend::Full(t) => (
                Box::new(|n: &str| t.token_to_id(n)) as Box<dyn Fn(&str) -> Option<u32>>,
                t.get_added_tokens_decoder(),
                t.get_vocab_size(true),
            ),
        };
        let byte_level = match &backend {
            Backend::Shared(t) => t.inner().get_decoder().is_some_and(is_byte_level),
            Backend::Full(t) => t.get_decoder().is_some_and(is_byte_level),
        };
        // Only added tokens: a byte-level vocabulary may hold `<s>` as an ordinary piece.
        let id = |names: &[&str]| {
            names.iter().find_map(|n| {
                token_to_id(n).filter(|id| added.get(id).is_some_and(|t| t.content == *n))
            })
        };
        // Gemma's and SentencePiece Llama's names, then Llama 3's; Qwen has no BOS.
        let bos = id(&["<bos>", "<s>", "<|begin_of_text|>"]);
        // The turn's end first (Gemma, ChatML, Llama 3, Phi-3), then the sequence's end.
        let end_of_turn = id(&[
            "<end_of_turn>",
            "<|im_end|>",
            "<|eot_id|>",
            "<|end|>",
            "<eos>",
            "</s>",
            "<|endoftext|>",
            "<|end_of_text|>",
        ])
        .or_else(|| {
            // A SentencePiece vocabulary whose tokenizer.json lists no added tokens
            // (InternLM2's: its turn markers are only in tokenizer_config.json) holds its
            // sequence end as an ordinary piece; a byte-level one may hold `</s>` as text.
            (!byte_level).then(|| token_to_id("</s>")).flatten()
        })
        .ok_or_else(|| format!("tokenizer {} has no end-of-turn token", path.display()))?;
        let mut specials: std::collections::HashSet<i32> = added
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id as i32)
            .collect();
        specials.insert(end_of_turn as i32);
        let added = added.keys().map(|id| *id as i32).collect();
        drop(token_to_id);
        Ok(JsonTokenizer {
            bos: bos.map(|b| b as i32),
            end_of_turn: end_of_turn as i32,
            specials,
            added,
            byte_level,
            describe: format!("json:{vocab_size}"),
            backend,
        })
    }
}

#[cfg(feature = "tokenizer")]
impl Tokenize for JsonTokenizer {
    fn encode(&self, text: &[u8]) -> Vec<i32> {
        let text = String::from_utf8_lossy(text);
        let ids = match &self.backend {
            Backend::Shared(t) => t.encode_prompt_text(text.as_ref()).ok(),
            Backend::Full(t) => t
                .encode(text.as_ref(), false)
                .ok()
                .map(|enc| enc.get_ids().to_vec()),
        };
        ids.unwrap_or_default()
            .into_iter()
            .map(|i| i as i32)
            .collect()
    }

    fn token_bytes(&self, id: i32) -> Option<Cow<'_, [u8]>> {
        let id = u32::try_from(id).ok()?;
        let piece = match &self.backend {
            Backend::Shared(t) => t.inner().id_to_token(id)?,
            Backend::Full(t) => t.id_to_token(id)?,
        };
        if self.byte_level && !self.added.contains(&(id as i32)) {
            return piece
                .chars()
                .map(byte_of_char)
                .collect::<Option<Vec<u8>>>()
                .map(Cow::Owned);
        }
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

    fn bos(&self) -> Option<i32> {
        self.bos
    }

    fn end_of_turn(&self) -> i32 {
        self.end_of_turn
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// Whether a decoder is (or holds) the byte-level one.
#[cfg(feature = "tokenizer")]
fn is_byte_level(decoder: &tokenizers::DecoderWrapper) -> bool {
    use tokenizers::DecoderWrapper;
    match decoder {
        DecoderWrapper::ByteLevel(_) => true,
        DecoderWrapper::Sequence(seq) => seq.get_decoders().iter().any(is_byte_level),
        _ => false,
    }
}

/// The byte a byte-level BPE character stands for (GPT-2's table: printable Latin-1 bytes
/// are themselves, the other 68 bytes are U+0100 upwards in byte order).
#[cfg(feature = "tokenizer")]
fn byte_of_char(c: char) -> Option<u8> {
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    let code = u32::from(c);
    if printable(code) {
        return u8::try_from(code).ok();
    }
    let n = code.checked_sub(0x100)?;
    (0u32..=255)
        .filter(|b| !printable(*b))
        .nth(n as usize)
        .and_then(|b| u8::try_from(b).ok())
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
    /// Gemma 2's vocabulary size, as the runtime's `int32` ids.
    const VOCAB_SIZE: i32 = crate::gemma::VOCAB_SIZE as i32;

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
        assert_eq!(t.encode("Hello").len(), 2); // "Hel" + "lo"
        assert_eq!(t.encode("é").len(), 2);
        assert!(!ends_inside_char("é".as_bytes()));
        assert!(ends_inside_char(&"é".as_bytes()[..1]));
        assert!(ends_inside_char(&"🙂".as_bytes()[..3]));
    }

    /// The mock and the chat share one loaded Gemma 2 tokenizer.
    #[cfg(feature = "tokenizer")]
    #[test]
    fn the_mock_shares_the_chats_tokenizer() {
        // `$GEMMA2_TOKENIZER`, else the workspace's copy (scripts/fetch-gemma-tokenizer.sh);
        // the published package has neither (the file is 17 MB, under Gemma's licence).
        let path = match std::env::var_os("GEMMA2_TOKENIZER") {
            Some(p) => std::path::PathBuf::from(p),
            None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../testdata/gemma2-tokenizer/tokenizer.json"),
        };
        if !path.exists() && std::env::var("RKLLM_SKIP_TOKENIZER_TESTS").as_deref() == Ok("1") {
            // Straight to stderr: the test harness swallows `eprintln!` of a passing test.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!! RKLLM_SKIP_TOKENIZER_TESTS=1: SKIPPING the_mock_shares_the_chats_tokenizer \
                 ({} is missing) !!!!!\n",
                path.display()
            );
            return;
        }
        assert!(
            path.exists(),
            "{} is missing: run scripts/fetch-gemma-tokenizer.sh or point GEMMA2_TOKENIZER at a \
             Gemma 2 tokenizer.json (or set RKLLM_SKIP_TOKENIZER_TESTS=1 to skip this check \
             explicitly)",
            path.display()
        );
        let chat = crate::chat::tokenizer::SharedTokenizer::load(&path).unwrap();
        let mock = JsonTokenizer::load(&path).unwrap();
        let Backend::Shared(shared) = &mock.backend else {
            panic!("the Gemma 2 tokenizer is not shared");
        };
        assert!(std::sync::Arc::ptr_eq(shared, &chat));
        assert_eq!(mock.describe(), "json:256000");
        assert_eq!((mock.bos(), mock.end_of_turn()), (Some(2), 107));
        // Text mode: control-token text becomes the control ids.
        assert_eq!(
            mock.encode(b"<bos><start_of_turn>user\nHello"),
            [2, 106, 1645, 108, 4521]
        );
        assert_eq!(mock.decode(&[4521, 235269]).unwrap(), b"Hello,");
    }

    #[test]
    fn every_id_is_in_gemmas_vocabulary_and_decodes_back() {
        let t = BuiltinTokenizer;
        // Every ASCII string of up to 3 characters from a spread of classes, and long runs.
        let chars: Vec<u8> = (1u8..128).collect();
        let mut max_id = 0;
        for &a in &chars {
            for &b in chars.iter().step_by(7) {
                for &c in chars.iter().step_by(11) {
                    let s = String::from_utf8(vec![a, b, c]).unwrap();
                    let ids = t.encode(&s);
                    max_id = max_id.max(*ids.iter().max().unwrap());
                    assert!(
                        ids.iter().all(|&i| (0..VOCAB_SIZE).contains(&i)),
                        "{s:?} {ids:?}"
                    );
                    assert_eq!(t.decode(&ids).unwrap(), s);
                }
            }
        }
        for s in ["zzz", "\r\r\r\r", "~", "\x7f"] {
            let ids = t.encode(s);
            assert_eq!(ids.len(), 1, "{s:?}");
            max_id = max_id.max(ids[0]);
        }
        assert!(max_id < VOCAB_SIZE, "{max_id}");
        // Every id in range decodes to at most one piece, and no id past the pieces does.
        for id in [
            PIECE_BASE - 1,
            OTHER_BASE,
            OTHER_BASE + 128,
            VOCAB_SIZE,
            i32::MAX,
        ] {
            assert_eq!(t.token_bytes(id), None, "{id}");
        }
        for id in (PIECE_BASE..OTHER_BASE).step_by(97) {
            let bytes = t.token_bytes(id).expect("a piece");
            assert_eq!(t.encode_bytes(&bytes), [id]);
        }
    }

    /// A byte-level BPE (Qwen2.5's, Llama 3.2's): no `<bos>` needed, the turn's end found,
    /// pieces decoded to their bytes (not GPT-2's stand-in characters), added tokens as their
    /// text.
    #[cfg(feature = "tokenizer")]
    #[test]
    fn byte_level_tokenizers_decode_to_bytes() {
        let dir = match std::env::var_os("TEMPLATE_MODELS_DIR") {
            Some(p) => std::path::PathBuf::from(p),
            None => {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/template-models")
            }
        };
        for (family, bos, end) in [
            ("qwen2_5", None, "<|im_end|>"),
            ("llama3_2", Some("<|begin_of_text|>"), "<|eot_id|>"),
        ] {
            let path = dir.join(family).join("tokenizer.json");
            assert!(
                path.exists(),
                "{} is missing: run scripts/fetch-template-tokenizers.sh (or point \
                 TEMPLATE_MODELS_DIR at a directory holding it)",
                path.display()
            );
            let t = JsonTokenizer::load(&path).unwrap();
            let bos_id = bos.map(|b| t.encode(b.as_bytes())[0]);
            assert_eq!(t.bos(), bos_id, "{family}");
            assert_eq!(t.encode(end.as_bytes()), [t.end_of_turn()], "{family}");
            assert!(t.is_special(t.end_of_turn()), "{family}");
            let text = "<tool_call>\n{\"city\": \"Paris\"} caf\u{e9} \u{1f600}\n</tool_call>";
            let ids = t.encode(text.as_bytes());
            assert_eq!(t.decode(&ids).unwrap(), text.as_bytes(), "{family}");
            let end_text = t.decode(&[t.end_of_turn()]).unwrap();
            assert_eq!(end_text, end.as_bytes(), "{family}");
        }
    }
}
