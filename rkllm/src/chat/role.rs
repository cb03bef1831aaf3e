//! Who wrote a message: a plain value (its parsing lives with the messages).

use std::fmt;

/// Who wrote a message.
///
/// Gemma 2 itself knows only `user` and `model`; `System` is placed according to the
/// template's [`SystemStyle`](super::SystemStyle). Parsing accepts `model` as a synonym of
/// `assistant`, as the Gemma templates do, and `developer` (the name OpenAI's newer models
/// give system instructions) as a synonym of `system`.
///
/// ```
/// use rkllm::chat::Role;
/// assert_eq!("model".parse::<Role>().unwrap(), Role::Assistant);
/// assert_eq!("developer".parse::<Role>().unwrap(), Role::System);
/// assert_eq!(Role::Assistant.gemma_name(), "model");
/// let err = "tool".parse::<Role>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "unknown role `tool`; expected system, developer, user, assistant or model"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions for the model (placement depends on the style).
    System,
    /// The person talking to the model.
    User,
    /// The model's replies (written `model` in Gemma turns).
    Assistant,
}

impl Role {
    /// The role word written after `<start_of_turn>`: `system`, `user` or `model`.
    pub fn gemma_name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "model",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        })
    }
}
