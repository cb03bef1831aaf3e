//! Gemma 2 chat formatting (placeholder until the chat module lands).

/// Why a conversation could not be formatted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// Placeholder.
    #[error("chat: {0}")]
    Invalid(String),
}
