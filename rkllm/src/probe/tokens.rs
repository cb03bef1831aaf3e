//! Exact token counts of prompt text, from the model's Gemma 2 tokenizer when one is given
//! (feature `tokenizer`).

use std::path::Path;

/// Counts a text-mode prompt's tokens as the runtime's tokenizer would (special-token text
/// recognised, no BOS added), or nothing without a tokenizer.
pub(crate) struct TokenCounter {
    #[cfg(feature = "tokenizer")]
    tokenizer: Option<crate::chat::GemmaTokenizer>,
    note: Option<String>,
}

impl TokenCounter {
    /// Loads the tokenizer at `path`; a failure becomes a note for the report.
    #[cfg(feature = "tokenizer")]
    pub(crate) fn load(path: Option<&Path>) -> TokenCounter {
        let Some(path) = path else {
            return TokenCounter {
                tokenizer: None,
                note: None,
            };
        };
        match crate::chat::GemmaTokenizer::from_file(path) {
            Ok(t) => TokenCounter {
                tokenizer: Some(t),
                note: None,
            },
            Err(e) => TokenCounter {
                tokenizer: None,
                note: Some(format!(
                    "tokenizer {} not used: {e}; the BOS answer relies on special-token counts",
                    path.display()
                )),
            },
        }
    }

    /// Without the `tokenizer` feature a given tokenizer is noted and ignored.
    #[cfg(not(feature = "tokenizer"))]
    pub(crate) fn load(path: Option<&Path>) -> TokenCounter {
        TokenCounter {
            note: path.map(|p| {
                format!(
                    "tokenizer {} not used: rkllm was built without the `tokenizer` feature",
                    p.display()
                )
            }),
        }
    }

    /// The prompt's token count, without BOS.
    pub(crate) fn count(&self, text: &str) -> Option<usize> {
        #[cfg(feature = "tokenizer")]
        if let Some(t) = &self.tokenizer {
            return t.encode_prompt_text(text).ok().map(|ids| ids.len());
        }
        let _ = text;
        None
    }

    /// What the report should say about the tokenizer, if anything.
    pub(crate) fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }
}
