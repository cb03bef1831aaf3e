//! Choosing the style from a model's own `chat_template`.
//!
//! The converted RK3588 model repositories carry the source model's `tokenizer_config.json`.
//! Its template tells the official Gemma 2 one (which raises `System role not supported`)
//! from SystemGemma2's (whose alternation check is shifted by one to make room for the
//! system preamble). Recognising text rather than evaluating Jinja keeps this dependency-free.

use std::path::Path;

use super::SystemStyle;
use crate::{Error, Result};

impl SystemStyle {
    /// The style whose output equals `chat_template`'s, when it is one of the two known Gemma
    /// 2 templates: [`Strict`](SystemStyle::Strict) for the official one,
    /// [`SystemGemma2`](SystemStyle::SystemGemma2) for SystemGemma2's. `None` otherwise.
    /// The text may still be JSON-escaped.
    ///
    /// ```
    /// use rkllm::chat::SystemStyle;
    /// let official = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}\
    ///     {{ raise_exception('System role not supported') }}{% endif %}...";
    /// assert_eq!(SystemStyle::from_chat_template(official), Some(SystemStyle::Strict));
    /// assert_eq!(SystemStyle::from_chat_template("{{ messages }}"), None);
    /// ```
    pub fn from_chat_template(chat_template: &str) -> Option<SystemStyle> {
        let compact: String = chat_template
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if compact.contains("Systemrolenotsupported") {
            Some(SystemStyle::Strict)
        } else if compact.contains("loop.index0%2==1") && compact.contains("'system'") {
            Some(SystemStyle::SystemGemma2)
        } else {
            None
        }
    }

    /// Reads `tokenizer_config.json` in `model_dir` and applies
    /// [`from_chat_template`](Self::from_chat_template) to it. `Ok(None)` when the file has
    /// no recognised template (then [`Merge`](SystemStyle::Merge) is the sensible choice).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read.
    pub fn from_model_dir(model_dir: impl AsRef<Path>) -> Result<Option<SystemStyle>> {
        let path = model_dir.as_ref().join("tokenizer_config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })?;
        Ok(SystemStyle::from_chat_template(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_detects_system_gemma2_shifted_alternation() {
        let t = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\
                 {{ '\\n' }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') \
                 != (loop.index0 % 2 == 1) %}{{ raise_exception('Conversation roles must alternate \
                 user/assistant/user/assistant/...') }}{% endif %}{% endfor %}";
        assert_eq!(
            SystemStyle::from_chat_template(t),
            Some(SystemStyle::SystemGemma2)
        );
    }
}
