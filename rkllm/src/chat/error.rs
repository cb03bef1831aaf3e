//! Why a conversation could not be formatted or fitted.

/// Why a conversation could not be formatted, or could not be fitted into the context.
///
/// The two texts Hugging Face's Gemma templates raise (`System role not supported`,
/// `Conversation roles must alternate user/assistant/user/assistant/...`) appear verbatim in
/// the messages of the variants that correspond to them, so logs match the Python side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The message list is empty.
    #[error("the conversation is empty; add a user message before rendering")]
    Empty,

    /// `SystemStyle::Strict` (the official Gemma 2 template) got a system message first.
    #[error(
        "System role not supported by the official Gemma 2 template (SystemStyle::Strict); \
         use SystemStyle::Merge to put the system prompt into the first user turn"
    )]
    SystemRoleNotSupported,

    /// The user/assistant order is broken (two users in a row, an assistant first, ...).
    #[error(
        "Conversation roles must alternate user/assistant/user/assistant/... \
         (message {index} is out of order)"
    )]
    RolesMustAlternate {
        /// Index of the offending message in the list given to the template.
        index: usize,
    },

    /// A system message somewhere other than first (or a second one).
    #[error(
        "a system message is only allowed as the first message, found one at index {index}; \
         put all system instructions into one leading system message"
    )]
    MisplacedSystem {
        /// Index of the offending message.
        index: usize,
    },

    /// `SystemStyle::SystemGemma2` got a second system message. Its template allows one,
    /// first, and raises its alternation error for any other.
    #[error(
        "Conversation roles must alternate user/assistant/user/assistant/... : the SystemGemma2 \
         template allows one system message, first, but found another at index {index}; put \
         all system instructions into the first message"
    )]
    SecondSystem {
        /// Index of the second system message.
        index: usize,
    },

    /// `SystemStyle::Merge` or `SystemStyle::Turn` got no user message to respond to.
    #[error("the conversation has no user message; Gemma 2 needs a user turn to respond to")]
    NoUserMessage,

    /// `SystemStyle::SystemGemma2` got no leading system message (its template requires one).
    #[error(
        "Conversation roles must alternate user/assistant/user/assistant/... : the SystemGemma2 \
         template requires a system message first; set one (it may be empty) or use \
         SystemStyle::Merge"
    )]
    MissingSystem,

    /// A reply was asked for, but the conversation's last message is not from the user.
    #[error(
        "the last message is from the {role}, but a reply needs the user's message last; end \
         the messages with a user message (continuing an assistant message is not supported)"
    )]
    LastMessageNotFromUser {
        /// The role of the last message.
        role: super::role::Role,
    },

    /// A role string other than `system`, `developer`, `user`, `assistant` or `model`.
    #[error("unknown role `{0}`; expected system, developer, user, assistant or model")]
    UnknownRole(String),

    /// A system-style name other than `merge`, `systemgemma2`, `turn` or `strict`.
    #[error("unknown system style `{0}`; expected merge, systemgemma2, turn or strict")]
    UnknownStyle(String),

    /// A model's own chat template (feature `template`) could not be loaded or rendered,
    /// or refused the conversation (its `raise_exception` message is in
    /// [`TemplateError::Raised`](crate::chat::TemplateError::Raised)).
    #[cfg(feature = "template")]
    #[cfg_attr(docsrs, doc(cfg(feature = "template")))]
    #[error(transparent)]
    Template(#[from] super::hf::error::TemplateError),

    /// The newest exchange does not fit the context budget even with all older history
    /// dropped.
    #[error(
        "the prompt needs {needed} tokens even with all older history dropped, but the context \
         budget allows {available} (max_context_len minus the tokens reserved for the reply); \
         shorten the message or system prompt, raise max_context_len, or reserve fewer new tokens"
    )]
    MessageTooLong {
        /// Tokens the smallest possible prompt needs (an upper bound without a tokenizer).
        needed: u32,
        /// Tokens the budget allows for the prompt.
        available: u32,
    },
}
