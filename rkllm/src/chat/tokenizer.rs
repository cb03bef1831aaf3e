//! Token mode: the Gemma 2 prompt as token ids, through the `tokenizers` crate.
//!
//! Message content is encoded with special-token parsing **off**, so a user who types
//! `<start_of_turn>` gets those characters, not the control token 106 (in text mode the
//! runtime's tokenizer would turn it into the real token: a prompt injection). The control
//! tokens of the format are inserted as ids, and each text run between them is encoded
//! whole. The real tokenizer splits its input at every special token before anything else,
//! so for content without special-token text the ids equal those of tokenizing the rendered
//! text (checked against the golden vectors).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::lean_tokenizer::{self, LeanTokenizer, LoadError};
use super::strip::python_strip;
use super::template::Piece;
use super::{Gemma2Template, Message, SpecialToken};
use crate::{Error, Result};

/// The Gemma 2 tokenizer (`tokenizer.json` of any Gemma 2 model).
///
/// Loading reads the 17 MB file in one streaming pass into a compact form: a process holding
/// it is about 29 MiB resident, 53 MiB at the peak of the load, where the `tokenizers`
/// crate's own loader takes 126 and 169 MiB (`benches/tokenizer_footprint.rs`, on a 2-core
/// x86 VM; the load takes 50-60% of its time). [`from_file`](Self::from_file) shares
/// one loaded copy per file within the process: a second `from_file` of the same file (or the
/// mock runtime loading it for a model) reuses it while any user holds it. Clones share it
/// too.
///
/// ```no_run
/// use rkllm::chat::{Gemma2Template, GemmaTokenizer, Message};
/// # fn main() -> rkllm::Result<()> {
/// let tok = GemmaTokenizer::from_file("tokenizer.json")?;
/// let ids = tok.encode(&Gemma2Template::default(), &[Message::user("Hello")], true)?;
/// assert_eq!(ids, [2, 106, 1645, 108, 4521, 107, 108, 106, 2516, 108]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GemmaTokenizer {
    shared: Arc<SharedTokenizer>,
}

/// A loaded `tokenizer.json`, shared within the process by everything that tokenizes with
/// the same file (the chat and the mock runtime).
pub(crate) struct SharedTokenizer {
    /// Configured with `encode_special_tokens = true`: special-token text is not parsed.
    inner: LeanTokenizer,
    /// The `special: true` added tokens, longest first, for text-mode encoding.
    specials: Vec<(String, u32)>,
    /// Whether every special token matches as plain text (no strip or single-word rules), so
    /// [`encode_prompt_text`](Self::encode_prompt_text) equals the tokenizer's own
    /// special-token parsing.
    #[cfg_attr(not(feature = "mock"), allow(dead_code))]
    plain_specials: bool,
}

/// Why a shared tokenizer did not load.
#[derive(Debug)]
pub(crate) enum SharedLoadError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The lean loader refused it.
    Load(LoadError),
}

impl std::fmt::Display for SharedLoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SharedLoadError::Io(e) => write!(f, "{e}"),
            SharedLoadError::Load(e) => write!(f, "{e}"),
        }
    }
}

/// What identifies a file: its canonical path, and its size, modification time and (on
/// Unix) device and inode, so a file replaced in place is loaded again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileKey {
    path: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: (u64, u64),
}

impl FileKey {
    fn of(path: &Path) -> std::io::Result<FileKey> {
        let path = std::fs::canonicalize(path)?;
        let meta = std::fs::metadata(&path)?;
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let inode = (0, 0);
        Ok(FileKey {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
            path,
        })
    }
}

/// The tokenizers loaded in this process, held weakly: one dropped by all its users is freed.
static LOADED: Mutex<Vec<(FileKey, Weak<SharedTokenizer>)>> = Mutex::new(Vec::new());

impl SharedTokenizer {
    /// The tokenizer of the file at `path`: the one already loaded in this process if a user
    /// still holds it, else a new load.
    pub(crate) fn load(path: &Path) -> std::result::Result<Arc<Self>, SharedLoadError> {
        let key = FileKey::of(path).map_err(SharedLoadError::Io)?;
        // Held across the load, so two threads wanting the same file load it once.
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        loaded.retain(|(_, w)| w.strong_count() > 0);
        if let Some(t) = loaded
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(t);
        }
        let bytes = std::fs::read(&key.path).map_err(SharedLoadError::Io)?;
        let shared = Arc::new(Self::from_bytes(&bytes).map_err(SharedLoadError::Load)?);
        loaded.push((key, Arc::downgrade(&shared)));
        Ok(shared)
    }

    /// A tokenizer from the bytes of its `tokenizer.json` (not shared).
    pub(crate) fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, LoadError> {
        let mut inner = lean_tokenizer::load(bytes)?;
        // `true` means special tokens are *not* parsed out of the input (they are encoded
        // as the plain text they are); non-special added tokens such as `\n` still apply.
        inner.set_encode_special_tokens(true);
        let added = inner.get_added_tokens_decoder();
        let plain_specials = added
            .values()
            .filter(|t| t.special)
            .all(|t| !t.lstrip && !t.rstrip && !t.single_word);
        let mut specials: Vec<(String, u32)> = added
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (t.content, id))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Ok(SharedTokenizer {
            inner,
            specials,
            plain_specials,
        })
    }

    /// The underlying tokenizer (special-token text not parsed).
    #[cfg_attr(not(feature = "mock"), allow(dead_code))]
    pub(crate) fn inner(&self) -> &LeanTokenizer {
        &self.inner
    }

    /// Whether [`encode_prompt_text`](Self::encode_prompt_text) equals the tokenizer's own
    /// special-token parsing for this file.
    #[cfg_attr(not(feature = "mock"), allow(dead_code))]
    pub(crate) fn plain_specials(&self) -> bool {
        self.plain_specials
    }

    /// Ids of plain text, special-token text encoded as ordinary characters.
    pub(crate) fn encode_text(&self, text: &str) -> tokenizers::Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.inner.encode_fast(text, false)?.get_ids().to_vec())
    }

    /// Ids of a text-mode prompt: special-token text becomes the special ids, no BOS added.
    pub(crate) fn encode_prompt_text(&self, text: &str) -> tokenizers::Result<Vec<u32>> {
        // Next occurrence of each special text at or after `at`; refreshed only when the
        // cursor passes it, so the scan stays linear in practice.
        let find = |from: usize, special: &str| text[from..].find(special).map(|i| from + i);
        let mut next: Vec<Option<usize>> = self.specials.iter().map(|(s, _)| find(0, s)).collect();
        let mut ids = Vec::new();
        let mut at = 0;
        loop {
            // Leftmost match; `specials` is sorted longest first, so ties go to the longest.
            let best = next
                .iter()
                .enumerate()
                .filter_map(|(i, pos)| pos.map(|p| (p, i)))
                .min_by_key(|&(p, i)| (p, i));
            let Some((pos, i)) = best else { break };
            let (special, id) = &self.specials[i];
            ids.extend(self.encode_text(&text[at..pos])?);
            ids.push(*id);
            at = pos + special.len();
            for (slot, (s, _)) in next.iter_mut().zip(&self.specials) {
                if slot.is_some_and(|p| p < at) {
                    *slot = find(at, s);
                }
            }
        }
        ids.extend(self.encode_text(&text[at..])?);
        Ok(ids)
    }
}

impl GemmaTokenizer {
    /// Loads a Gemma 2 `tokenizer.json`, or shares the copy this process already loaded from
    /// the same file.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::Tokenizer`] when it is not a
    /// tokenizer file or not Gemma 2's (its control tokens have other ids).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shared = SharedTokenizer::load(path).map_err(|e| match e {
            SharedLoadError::Io(source) => Error::Io {
                path: path.to_owned(),
                source,
            },
            SharedLoadError::Load(e) => not_a_tokenizer(e),
        })?;
        Self::checked(shared)
    }

    /// Loads a Gemma 2 tokenizer from the bytes of its `tokenizer.json` (a copy of its own,
    /// not shared).
    ///
    /// # Errors
    /// As [`from_file`](Self::from_file), without the I/O part.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let shared = SharedTokenizer::from_bytes(bytes).map_err(not_a_tokenizer)?;
        Self::checked(Arc::new(shared))
    }

    /// Checks the control tokens have Gemma 2's ids.
    fn checked(shared: Arc<SharedTokenizer>) -> Result<Self> {
        for token in [
            SpecialToken::Bos,
            SpecialToken::Eos,
            SpecialToken::StartOfTurn,
            SpecialToken::EndOfTurn,
        ] {
            let found = shared.inner.token_to_id(token.text());
            if found != Some(token.id()) {
                return Err(Error::Tokenizer {
                    message: format!(
                        "not a Gemma 2 tokenizer: {} has id {found:?}, expected {}",
                        token.text(),
                        token.id()
                    ),
                    source: None,
                });
            }
        }
        Ok(GemmaTokenizer { shared })
    }

    /// Whether `self` and `other` share one loaded tokenizer (both came from
    /// [`from_file`](Self::from_file) of the same file while one was alive, or are clones).
    pub fn shares_with(&self, other: &GemmaTokenizer) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Ids of plain `text`: no BOS added, special-token text encoded as ordinary characters.
    ///
    /// ```no_run
    /// # let tok = rkllm::chat::GemmaTokenizer::from_file("tokenizer.json")?;
    /// assert!(!tok.encode_text("<start_of_turn>")?.contains(&106));
    /// # Ok::<(), rkllm::Error>(())
    /// ```
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.shared.encode_text(text).map_err(tok_err)
    }

    /// How many tokens [`encode_text`](Self::encode_text) gives for `text`.
    pub fn count_text(&self, text: &str) -> Result<usize> {
        Ok(self.encode_text(text)?.len())
    }

    /// Ids of a text-mode prompt as a runtime's tokenizer makes them: special-token text
    /// (`<bos>`, `<start_of_turn>`, ...) becomes the special ids, no BOS is added. This is
    /// what a prompt sent as text costs; it is also how injected control text in content
    /// takes effect, which [`encode`](Self::encode) avoids.
    ///
    /// ```no_run
    /// # let tok = rkllm::chat::GemmaTokenizer::from_file("tokenizer.json")?;
    /// assert_eq!(tok.encode_prompt_text("<bos><start_of_turn>user\n")?, [2, 106, 1645, 108]);
    /// # Ok::<(), rkllm::Error>(())
    /// ```
    pub fn encode_prompt_text(&self, text: &str) -> Result<Vec<u32>> {
        self.shared.encode_prompt_text(text).map_err(tok_err)
    }

    /// The prompt for `messages` as ids: exactly one leading `<bos>` (whatever the template's
    /// [`Bos`](super::Bos) setting, which is for text mode), control tokens as ids, content
    /// encoded with special-token parsing off.
    ///
    /// # Errors
    /// [`Error::Chat`] when the template rejects the conversation, [`Error::Tokenizer`] when
    /// encoding fails.
    pub fn encode(
        &self,
        template: &Gemma2Template,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let plan = template.plan(messages, add_generation_prompt)?;
        let mut ids = Vec::new();
        for piece in &plan {
            match piece {
                Piece::Special(t) => ids.push(t.id()),
                Piece::Text(s) => ids.extend(self.encode_text(s)?),
            }
        }
        Ok(ids)
    }

    /// Tokens of `message` rendered as one turn, `<start_of_turn>ROLE\nCONTENT<end_of_turn>\n`,
    /// with its content trimmed. Turns are separated by control tokens, so a prompt's count is
    /// the sum of its turns' counts plus BOS, the system part and the generation prompt.
    ///
    /// ```no_run
    /// # let tok = rkllm::chat::GemmaTokenizer::from_file("tokenizer.json")?;
    /// // <start_of_turn> user \n Hello <end_of_turn> \n
    /// assert_eq!(tok.count_turn(&rkllm::chat::Message::user(" Hello "))?, 6);
    /// # Ok::<(), rkllm::Error>(())
    /// ```
    pub fn count_turn(&self, message: &Message) -> Result<usize> {
        let run = format!(
            "{}\n{}",
            message.role.gemma_name(),
            python_strip(&message.content)
        );
        Ok(self.count_text(&run)? + 3)
    }

    /// Text of `ids`; with `skip_special_tokens` the control tokens are left out.
    ///
    /// ```no_run
    /// # let tok = rkllm::chat::GemmaTokenizer::from_file("tokenizer.json")?;
    /// assert_eq!(tok.decode(&[2, 4521, 107], true)?, "Hello");
    /// # Ok::<(), rkllm::Error>(())
    /// ```
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.shared
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(tok_err)
    }

    /// The id of a token's text, if the vocabulary has it (e.g. `"<end_of_turn>"` → 107).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.shared.inner.token_to_id(token)
    }
}

impl std::fmt::Debug for GemmaTokenizer {
    /// Short on purpose: the derived form would print the whole 256k-token vocabulary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GemmaTokenizer")
            .field("vocab_size", &self.shared.inner.get_vocab_size(true))
            .finish_non_exhaustive()
    }
}

fn tok_err(e: tokenizers::Error) -> Error {
    Error::Tokenizer {
        message: "the tokenizer could not encode the text".to_owned(),
        source: Some(e),
    }
}

fn not_a_tokenizer(e: LoadError) -> Error {
    Error::Tokenizer {
        message: "the file is not a usable tokenizer.json".to_owned(),
        source: Some(Box::new(e)),
    }
}
