//! Token counts for the context budget: exact with the Gemma tokenizer, a safe upper bound
//! without it.
//!
//! A prompt's count is additive: BOS, plus the system part, plus each turn, plus the
//! generation prompt. That holds exactly for the real tokenizer because every turn is
//! delimited by control tokens (where the tokenizer always splits), the role word is
//! followed by the added token `\n`, the `Merge` joiner `\n\n` is one added token, and
//! trimmed content never begins or ends with a newline that could merge with them. The
//! Conversation tests check the sum against [`GemmaTokenizer::encode`] on real prompts.
//!
//! Without a tokenizer, a text run counts as its UTF-8 byte length. That is an upper bound
//! for Gemma 2: its BPE starts from one symbol per character when the character is in the
//! vocabulary (a space becomes the single symbol `▁`), else one byte-fallback token per byte,
//! and merges only shrink that; an added token also covers at least one byte. Real English
//! text takes about a quarter of that, so the estimate trims history early but never
//! overflows the context.

#[cfg(feature = "tokenizer")]
use std::sync::Arc;

use super::strip::python_strip;
#[cfg(feature = "tokenizer")]
use super::GemmaTokenizer;
use super::{Message, SystemStyle};
use crate::Result;

/// `<bos>`.
pub(crate) const BOS_TOKENS: usize = 1;
/// `<start_of_turn>`, the role word, `\n`, `<end_of_turn>`, `\n`.
pub(crate) const TURN_OVERHEAD: usize = 5;
/// `<start_of_turn>model\n`.
pub(crate) const GENERATION_PROMPT_TOKENS: usize = 3;
/// The `\n\n` between the system text and the first user message in `Merge`.
const MERGE_JOINER_TOKENS: usize = 1;

/// How a conversation counts tokens.
#[derive(Debug, Clone, Default)]
pub(crate) enum Counter {
    /// UTF-8 bytes: an upper bound.
    #[default]
    Estimate,
    /// The real tokenizer: exact for token mode.
    #[cfg(feature = "tokenizer")]
    Exact(Arc<GemmaTokenizer>),
}

impl Counter {
    pub(crate) fn is_exact(&self) -> bool {
        !matches!(self, Counter::Estimate)
    }

    /// Tokens of a text run between control tokens.
    fn text(&self, s: &str) -> Result<usize> {
        match self {
            Counter::Estimate => Ok(s.len()),
            #[cfg(feature = "tokenizer")]
            Counter::Exact(t) => t.count_text(s),
        }
    }

    /// Tokens of a user or assistant message rendered as its own turn.
    pub(crate) fn turn(&self, m: &Message) -> Result<usize> {
        Ok(TURN_OVERHEAD + self.text(python_strip(&m.content))?)
    }

    /// Tokens the leading system message adds to the prompt in `style`.
    pub(crate) fn system(&self, style: SystemStyle, content: &str) -> Result<usize> {
        let trimmed = python_strip(content);
        Ok(match style {
            SystemStyle::Merge if trimmed.is_empty() => 0,
            SystemStyle::Merge => self.text(trimmed)? + MERGE_JOINER_TOKENS,
            SystemStyle::Turn if trimmed.is_empty() => 0,
            SystemStyle::Turn | SystemStyle::Strict => self.text(trimmed)? + TURN_OVERHEAD,
            // The preamble is untrimmed and followed by `\n`; count them as one run since a
            // trailing newline in the system text merges with it.
            SystemStyle::SystemGemma2 => self.text(&format!("{content}\n"))?,
        })
    }
}
