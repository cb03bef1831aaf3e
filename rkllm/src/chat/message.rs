//! Chat messages, and parsing their roles.

use std::str::FromStr;

use super::role::Role;
use super::ChatError;

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
