//! What a template renders: the conversation, tools, documents and extra variables.

use minijinja::value::{Value, ValueKind};

use super::TemplateError;
use crate::chat::Message;

/// The data a chat template renders, as transformers' `apply_chat_template` takes it:
/// `messages`, `tools`, `documents`, `add_generation_prompt`, and extra variables
/// (`date_string`, `enable_thinking`, ...).
///
/// Messages, tools and documents are free-form (OpenAI-style objects with any fields:
/// `tool_calls`, `name`, content parts, ...). Given as JSON text they keep their keys in the
/// order written, which templates that print them with `tojson` depend on.
/// `add_generation_prompt` starts `true` (a prompt that asks for the next reply); set it to
/// `false` to render a finished conversation.
///
/// ```
/// use rkllm::chat::{Message, TemplateInput};
/// let a = TemplateInput::new(&[Message::system("Be brief."), Message::user("Hi")]);
/// let b = TemplateInput::from_json(
///     r#"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]"#,
/// )
/// .unwrap()
/// .tools_json(r#"[{"type": "function", "function": {"name": "now", "parameters": {}}}]"#)
/// .unwrap()
/// .var("date_string", "26 Jul 2024");
/// assert_eq!(a.message_count(), 2);
/// assert_eq!(b.message_count(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct TemplateInput {
    pub(crate) messages: Value,
    pub(crate) tools: Option<Value>,
    pub(crate) documents: Option<Value>,
    pub(crate) add_generation_prompt: bool,
    pub(crate) vars: Vec<(String, Value)>,
    pub(crate) template_name: Option<String>,
}

fn parse_json(what: &str, json: &str) -> Result<Value, TemplateError> {
    serde_json::from_str::<Value>(json).map_err(|e| TemplateError::InvalidJson {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

impl TemplateInput {
    /// Input from the crate's [`Message`]s (`{"role": ..., "content": ...}` each, roles
    /// written `system`, `user` and `assistant`).
    pub fn new(messages: &[Message]) -> Self {
        let messages = messages
            .iter()
            .map(|m| {
                Value::from_pairs([
                    ("role", Value::from(m.role.to_string())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect::<Vec<_>>();
        Self::from_value(Value::from(messages))
    }

    /// Input from a conversation's messages, each with its reasoning (if any) as the
    /// message's `reasoning_content` key.
    pub(crate) fn with_reasoning(messages: &[Message], reasoning: &[Option<String>]) -> Self {
        let messages = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut pairs = vec![
                    ("role", Value::from(m.role.to_string())),
                    ("content", Value::from(m.content.as_str())),
                ];
                if let Some(Some(r)) = reasoning.get(i) {
                    pairs.push(("reasoning_content", Value::from(r.as_str())));
                }
                Value::from_pairs(pairs)
            })
            .collect::<Vec<_>>();
        Self::from_value(Value::from(messages))
    }

    /// Input from the JSON text of a message list (keys kept in order).
    ///
    /// # Errors
    /// [`TemplateError::InvalidJson`] if the text is not JSON, or not a list.
    pub fn from_json(messages: &str) -> Result<Self, TemplateError> {
        let value = parse_json("messages", messages)?;
        if value.kind() != ValueKind::Seq {
            return Err(TemplateError::InvalidJson {
                what: "messages".to_owned(),
                message: "expected a list of messages".to_owned(),
            });
        }
        Ok(Self::from_value(value))
    }

    /// Input from any serializable message list (keys in the order the value serializes
    /// them; `serde_json::Value` sorts them unless serde_json's `preserve_order` is on).
    pub fn from_serialize<T: serde::Serialize + ?Sized>(messages: &T) -> Self {
        Self::from_value(Value::from(minijinja::value::Serde(messages)))
    }

    fn from_value(messages: Value) -> Self {
        TemplateInput {
            messages,
            tools: None,
            documents: None,
            add_generation_prompt: true,
            vars: Vec::new(),
            template_name: None,
        }
    }

    /// Whether the prompt ends with the template's generation prompt (the start of the
    /// assistant's turn). Default `true`.
    #[must_use]
    pub fn add_generation_prompt(mut self, yes: bool) -> Self {
        self.add_generation_prompt = yes;
        self
    }

    /// The tool definitions (OpenAI-style), as JSON text of a list.
    ///
    /// # Errors
    /// [`TemplateError::InvalidJson`] if the text is not JSON.
    pub fn tools_json(mut self, tools: &str) -> Result<Self, TemplateError> {
        self.tools = Some(parse_json("tools", tools)?);
        Ok(self)
    }

    /// The tool definitions from any serializable value.
    #[must_use]
    pub fn tools<T: serde::Serialize + ?Sized>(mut self, tools: &T) -> Self {
        self.tools = Some(Value::from(minijinja::value::Serde(tools)));
        self
    }

    /// The documents for retrieval-augmented templates, as JSON text of a list.
    ///
    /// # Errors
    /// [`TemplateError::InvalidJson`] if the text is not JSON.
    pub fn documents_json(mut self, documents: &str) -> Result<Self, TemplateError> {
        self.documents = Some(parse_json("documents", documents)?);
        Ok(self)
    }

    /// The documents from any serializable value.
    #[must_use]
    pub fn documents<T: serde::Serialize + ?Sized>(mut self, documents: &T) -> Self {
        self.documents = Some(Value::from(minijinja::value::Serde(documents)));
        self
    }

    /// An extra template variable (`date_string`, `enable_thinking`, ...), as transformers'
    /// keyword arguments: it overrides a special token of the same name.
    #[must_use]
    pub fn var<T: serde::Serialize + ?Sized>(mut self, name: &str, value: &T) -> Self {
        self.set_var(name, Value::from(minijinja::value::Serde(value)));
        self
    }

    /// An extra template variable given as JSON text.
    ///
    /// # Errors
    /// [`TemplateError::InvalidJson`] if the text is not JSON.
    pub fn var_json(mut self, name: &str, json: &str) -> Result<Self, TemplateError> {
        let value = parse_json(name, json)?;
        self.set_var(name, value);
        Ok(self)
    }

    fn set_var(&mut self, name: &str, value: Value) {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_owned(), value));
    }

    /// Which template of a named list to use (`default`, `tool_use`, `rag`, ...), instead
    /// of transformers' choice (`tool_use` when tools are given and it exists, else
    /// `default`).
    #[must_use]
    pub fn template_name(mut self, name: &str) -> Self {
        self.template_name = Some(name.to_owned());
        self
    }

    /// How many messages the input holds.
    pub fn message_count(&self) -> usize {
        self.messages.len().unwrap_or(0)
    }

    /// Whether tool definitions were given.
    pub fn has_tools(&self) -> bool {
        self.tools.is_some()
    }

    /// Calls `f` with every string of the caller's data (messages, tools, documents; values
    /// and keys) and where it is, stopping at the first error.
    pub(crate) fn visit_untrusted<E>(
        &self,
        f: &mut dyn FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Ok(iter) = self.messages.try_iter() {
            for (i, m) in iter.enumerate() {
                let role = m.get_attr("role").unwrap_or_default();
                let location = match role.as_str() {
                    Some(role) => format!("message {i} ({role})"),
                    None => format!("message {i}"),
                };
                visit_strings(&m, &location, f, 0)?;
            }
        }
        if let Some(tools) = &self.tools {
            visit_strings(tools, "tools", f, 0)?;
        }
        if let Some(documents) = &self.documents {
            visit_strings(documents, "documents", f, 0)?;
        }
        Ok(())
    }

    /// A copy with every string of the caller's data (messages, tools, documents) mapped
    /// through `f`.
    #[cfg_attr(not(feature = "tokenizer"), allow(dead_code))]
    pub(crate) fn map_untrusted(&self, f: &dyn Fn(&str) -> String) -> TemplateInput {
        TemplateInput {
            messages: map_strings(&self.messages, f, 0),
            tools: self.tools.as_ref().map(|v| map_strings(v, f, 0)),
            documents: self.documents.as_ref().map(|v| map_strings(v, f, 0)),
            add_generation_prompt: self.add_generation_prompt,
            vars: self.vars.clone(),
            template_name: self.template_name.clone(),
        }
    }
}

/// Deeper than this, data is left as it is (serde_json refuses such depths anyway).
const MAX_DEPTH: usize = 256;

fn visit_strings<E>(
    value: &Value,
    location: &str,
    f: &mut dyn FnMut(&str, &str) -> Result<(), E>,
    depth: usize,
) -> Result<(), E> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    match value.kind() {
        ValueKind::String => f(location, value.as_str().unwrap_or_default()),
        ValueKind::Seq => {
            if let Ok(iter) = value.try_iter() {
                for item in iter {
                    visit_strings(&item, location, f, depth + 1)?;
                }
            }
            Ok(())
        }
        ValueKind::Map => {
            if let Ok(iter) = value.try_iter() {
                for key in iter {
                    visit_strings(&key, location, f, depth + 1)?;
                    let item = value.get_item(&key).unwrap_or_default();
                    visit_strings(&item, location, f, depth + 1)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg_attr(not(feature = "tokenizer"), allow(dead_code))]
fn map_strings(value: &Value, f: &dyn Fn(&str) -> String, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return value.clone();
    }
    match value.kind() {
        ValueKind::String => Value::from(f(value.as_str().unwrap_or_default())),
        ValueKind::Seq => match value.try_iter() {
            Ok(iter) => iter.map(|v| map_strings(&v, f, depth + 1)).collect(),
            Err(_) => value.clone(),
        },
        ValueKind::Map => match value.try_iter() {
            Ok(iter) => Value::from_pairs(
                iter.map(|k| {
                    let item = value.get_item(&k).unwrap_or_default();
                    (
                        map_strings(&k, f, depth + 1),
                        map_strings(&item, f, depth + 1),
                    )
                })
                .collect::<Vec<_>>(),
            ),
            Err(_) => value.clone(),
        },
        _ => value.clone(),
    }
}
