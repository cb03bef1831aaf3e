//! Chat messages and their roles.

use std::fmt;
use std::str::FromStr;

use super::ChatError;

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

impl FromStr for Role {
    type Err = ChatError;

    /// Parses `system`, `developer`, `user`, `assistant` or `model` (exact, lower case, as
    /// the templates compare them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "system" | "developer" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" | "model" => Ok(Role::Assistant),
            other => Err(ChatError::UnknownRole(other.to_owned())),
        }
    }
}

/// One message of a conversation.
///
/// ```
/// use rkllm::chat::{Message, Role};
/// let m = Message::user("Hello");
/// assert_eq!(m.role, Role::User);
/// assert_eq!(m.content, "Hello");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text, as written (templates trim it when rendering).
    pub content: String,
}

impl Message {
    /// A message with any role.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message::new(Role::User, content)
    }

    /// An assistant (model) message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new(Role::Assistant, content)
    }

    /// A message whose role is given as text (`system`, `developer`, `user`, `assistant` or
    /// `model`), as in an OpenAI-style request.
    ///
    /// ```
    /// use rkllm::chat::{Message, Role};
    /// assert_eq!(Message::parse("developer", "Be brief.").unwrap().role, Role::System);
    /// assert!(Message::parse("tool", "{}").is_err());
    /// ```
    ///
    /// # Errors
    /// [`ChatError::UnknownRole`] for any other role.
    pub fn parse(role: &str, content: impl Into<String>) -> Result<Self, ChatError> {
        Ok(Message::new(role.parse()?, content))
    }
}
