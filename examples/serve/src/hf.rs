//! Chat with the model's own chat template (feature `template`): the `chat_template` of
//! its `tokenizer_config.json`, rendered as Hugging Face transformers'
//! `apply_chat_template` renders it, so any family RKLLM runs (Qwen2.5, Llama 3.2,
//! DeepSeek-R1-Distill, ...) gets the prompt it was trained on.
//!
//! * With the model's `tokenizer.json` the prompt goes to the runtime as token ids, and a
//!   special token's text inside a message is plain text (it cannot open or close a turn);
//!   without it the prompt goes as text, and a message holding such text is refused (400).
//! * `tools` go to templates whose source mentions `tools`; the history's assistant
//!   `tool_calls` (arguments parsed to objects, as templates print them) and `tool`
//!   messages go in as the client sent them, keys in the client's order.
//! * The reply ends at the template's end-of-turn tokens; its reasoning (templates with
//!   `<think>`) and tool calls (the format the template teaches) are read out of it. A
//!   `tool_choice` that forces a call ends the prompt with the call's opening.
//! * With the prompt cache on, a plain chat runs as a [`Conversation`] on the chat session
//!   (see [`HfChat::conversation`]), which reuses the prefill of its earlier turns.

use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use rkllm::chat::reasoning::{prompt_opens_reasoning, ReasoningSplitter, THINK_OPEN};
use rkllm::chat::tool_calls::ToolCallFormat;
use rkllm::chat::{
    ContextBudget, Conversation, HfChatTemplate, Message, Role, TemplateError, TemplateInput,
    TemplateTokenizer,
};
use rkllm::{GenerateOptions, Input};
use serde::de::{MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::openai::{
    unsupported, ApiError, ChatMessage, ChatRequest, Content, ToolChoice, WithRaw,
};
use crate::reply::ReplyParser;

/// The turn-end tokens of the families RKLLM runs (ChatML, Llama 3, Phi-3, Gemma,
/// DeepSeek-R1).
const TURN_ENDS: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
];

/// The model's template and what the server learned from it at load.
#[derive(Debug)]
pub struct HfChat {
    template: Arc<HfChatTemplate>,
    tokenizer: Option<Arc<TemplateTokenizer>>,
    takes_tools: bool,
    tool_format: Option<ToolCallFormat>,
    thinks: bool,
    end_ids: Vec<u32>,
    end_texts: Vec<String>,
    vocab_size: Option<u32>,
    /// In token mode, refuses the control-token texts named with `--special-token` (in
    /// text mode the template refuses them with its own).
    named_specials: Option<HfChatTemplate>,
}

/// A request made ready to run.
pub struct Prepared {
    pub input: Input,
    pub parser: ReplyParser,
    /// Prompt tokens (an upper bound, the UTF-8 length, in text mode).
    pub prompt_tokens: usize,
    /// The prompt as rendered, and its ids in token mode.
    text: String,
    ids: Option<Vec<u32>>,
    /// Whether tools went to the template.
    tools: bool,
}

impl HfChat {
    /// Loads the template of `config` (a `tokenizer_config.json`) and, for token mode, the
    /// model's `tokenizer.json`. A message holding one of `special_tokens` (control-token
    /// texts the model's files do not mark special) is refused in either mode.
    pub fn load(
        config: &Path,
        tokenizer: Option<&Path>,
        special_tokens: &[String],
    ) -> Result<HfChat, Box<dyn Error>> {
        if let Some(empty) = special_tokens.iter().position(String::is_empty) {
            return Err(format!("--special-token number {} is empty", empty + 1).into());
        }
        let template = HfChatTemplate::from_config_file(config)?
            .with_special_token_texts(special_tokens.iter().cloned());
        // Token mode refuses only these (the template's own special tokens stay plain text
        // there): an empty template that knows just them does the library's scan.
        let named_specials = match special_tokens.is_empty() {
            true => None,
            false => Some(
                HfChatTemplate::from_template_str("", std::iter::empty::<(String, String)>())?
                    .with_special_token_texts(special_tokens.iter().cloned()),
            ),
        };
        let sources = template_sources(config)?;
        // With the special tokens only the configuration declares (InternLM2's).
        let tokenizer = match tokenizer {
            Some(path) => Some(Arc::new(
                TemplateTokenizer::from_file(path)?.with_template_tokens(&template),
            )),
            None => None,
        };
        // In token mode, the tokenizer's own special tokens are refused nowhere (they are
        // plain text); in text mode the template's list is what the runtime would read.
        let mut end_texts: Vec<String> = template
            .end_of_turn_texts()
            .into_iter()
            .map(str::to_owned)
            .collect();
        // A family's turn ends that the tokenizer marks special, when the configuration
        // did not list them.
        if let Some(t) = &tokenizer {
            let specials: Vec<&str> = t.special_token_texts().collect();
            for end in TURN_ENDS {
                if specials.contains(&end) && !end_texts.iter().any(|e| e == end) {
                    end_texts.push(end.to_owned());
                }
            }
        }
        let end_ids = match &tokenizer {
            Some(t) => t.token_ids(end_texts.iter().map(String::as_str)),
            None => Vec::new(),
        };
        if tokenizer.is_some() && end_ids.is_empty() {
            return Err(format!(
                "{}: none of the template's end-of-turn tokens ({}) is a token of the tokenizer",
                config.display(),
                end_texts.join(", ")
            )
            .into());
        }
        let vocab_size = tokenizer.as_deref().map(vocabulary_size);
        Ok(HfChat {
            takes_tools: sources.contains("tools"),
            tool_format: ToolCallFormat::detect(&sources),
            thinks: sources.contains(THINK_OPEN),
            template: Arc::new(template),
            tokenizer,
            end_ids,
            end_texts,
            vocab_size,
            named_specials,
        })
    }

    /// Whether the template takes `tools`.
    pub fn takes_tools(&self) -> bool {
        self.takes_tools
    }

    /// The tokenizer's vocabulary size (token mode).
    pub fn vocab_size(&self) -> Option<u32> {
        self.vocab_size
    }

    /// A text's length in tokens with the model's tokenizer (token mode).
    pub fn count_text(&self, text: &str) -> Option<Result<usize, ApiError>> {
        self.tokenizer.as_ref().map(|t| {
            t.encode_text(text)
                .map(|ids| ids.len())
                .map_err(|e| ApiError::bad_request(format!("tokenizing the input: {e}"), None))
        })
    }

    /// The end-of-turn stops added to a request's options.
    pub fn options(&self, mut options: GenerateOptions) -> GenerateOptions {
        if self.tokenizer.is_some() {
            options = options.end_tokens(self.end_ids.iter().copied());
        } else {
            // Text mode: the ids are not known; the texts stop the reply where the runtime
            // shows them.
            for text in &self.end_texts {
                options = options.stop_string(text.clone());
            }
        }
        options
    }

    /// The prompt for `request` (its messages, tools and `system` default), its reply
    /// parser, and its size.
    pub fn prepare(
        &self,
        request: &ChatRequest,
        system: Option<&str>,
    ) -> Result<Prepared, ApiError> {
        let messages = template_messages(&request.messages, system)?;
        let mut input = TemplateInput::from_json(&messages).map_err(|e| template_error(&e))?;
        let mut offered = Vec::new();
        let mut tools = false;
        if self.takes_tools {
            if let Some((json, names)) = tools_for(request)? {
                input = input.tools_json(&json).map_err(|e| template_error(&e))?;
                offered = names;
                tools = true;
            }
        }
        let (mut text, mut ids) = match &self.tokenizer {
            Some(tokenizer) => {
                if let Some(named) = &self.named_specials {
                    named
                        .check_text_mode(&input)
                        .map_err(|e| named_special_error(&e))?;
                }
                let prompt = tokenizer
                    .encode(&self.template, &input)
                    .map_err(|e| template_error(&e))?;
                (prompt.text, Some(prompt.token_ids))
            }
            None => {
                let text = self
                    .template
                    .render_text_mode(&input)
                    .map_err(|e| template_error(&e))?;
                (text, None)
            }
        };
        if text.is_empty() {
            return Err(ApiError::bad_request(
                "the chat template rendered an empty prompt",
                Some("messages"),
            ));
        }
        let reasons = self.thinks || prompt_opens_reasoning(&text);
        let mut parser = ReplyParser::plain();
        if reasons {
            parser = parser.with_reasoning(ReasoningSplitter::for_prompt(&text));
        }
        let forced = if tools {
            self.forced_call(request, &offered, reasons)?
        } else {
            None
        };
        if let (Some(format), false) = (self.tool_format, offered.is_empty()) {
            parser = parser.with_tools(format, offered);
        }
        if let Some(opening) = &forced {
            // The prompt ends with the call's opening; the reply parser reads it as the
            // model's. Its text is the server's, so its special tokens are control tokens.
            if let (Some(ids), Some(tokenizer)) = (&mut ids, &self.tokenizer) {
                let more = tokenizer
                    .encode_prompt_text(opening)
                    .map_err(|e| template_error(&e))?;
                ids.extend(more);
            }
            text.push_str(opening);
            parser.prime(opening);
        }
        let (input, prompt_tokens) = match &ids {
            Some(ids) => (Input::tokens(ids.clone()), ids.len()),
            None => (Input::prompt(text.clone()), text.len()),
        };
        Ok(Prepared {
            input,
            parser,
            prompt_tokens,
            text,
            ids,
            tools,
        })
    }

    /// The opening of a tool call the prompt ends with, when `tool_choice` forces a call
    /// (`"required"`, or a named function, the one in `offered`): without constrained
    /// decoding, a prompt that has begun the call is how the reply is made one. Refused
    /// (400) where that cannot work: a template whose call format the server does not read,
    /// or one whose reply reasons first.
    fn forced_call(
        &self,
        request: &ChatRequest,
        offered: &[String],
        reasons: bool,
    ) -> Result<Option<String>, ApiError> {
        let name = match &request.tool_choice {
            Some(ToolChoice::Mode(mode)) if mode == "required" => None,
            Some(ToolChoice::Named(_)) => offered.first().map(String::as_str),
            _ => return Ok(None),
        };
        let Some(format) = self.tool_format else {
            return Err(unsupported(
                "tool_choice",
                "tool_choice cannot force a call: the chat template's tool-call format is \
                 not one this server reads (Hermes <tool_call> or Llama 3 JSON); use \"auto\"",
            ));
        };
        if reasons {
            return Err(unsupported(
                "tool_choice",
                "tool_choice cannot force a call with a reasoning template (its reply \
                 thinks first); use \"auto\"",
            ));
        }
        Ok(Some(format.call_opening(name)))
    }

    /// The request as a conversation the chat session runs with its prompt cache, and its
    /// last user message (taken out, for the turn). Only for a plain chat: no tools went to
    /// the template, the messages are an optional system (or developer) message first, then
    /// user and assistant turns in alternation ending with the user's, each with text
    /// content and no other field; and the conversation renders exactly the prompt of
    /// `prepared` and fits `reply_tokens` beside it in `max_context`. `None` otherwise: the
    /// request then runs as the raw prompt `prepared` holds, which is always the prompt
    /// sent, so the choice never changes what the model sees.
    pub fn conversation(
        &self,
        request: &ChatRequest,
        system: Option<&str>,
        prepared: &Prepared,
        budget: ContextBudget,
    ) -> Option<(Conversation, String)> {
        if prepared.tools {
            return None;
        }
        let mut messages = Vec::with_capacity(request.messages.len() + 1);
        for (n, message) in request.messages.iter().enumerate() {
            let role = match message.value.role.as_str() {
                "system" | "developer" if n == 0 => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                _ => return None,
            };
            let mut content = None;
            for (key, value) in ordered(&message.raw, "a message").ok()?.0 {
                match key.as_str() {
                    _ if value.get() == "null" => {}
                    "role" => {}
                    "content" => {
                        let parsed = serde_json::from_str::<Content>(value.get()).ok()?;
                        content = Some(parsed.into_text().ok()?);
                    }
                    _ => return None,
                }
            }
            messages.push(Message::new(role, content?));
        }
        if let (Some(system), false) = (system, messages.first()?.role == Role::System) {
            messages.insert(0, Message::system(system));
        }
        let turns = messages.iter().filter(|m| m.role != Role::System);
        let alternates = turns.enumerate().all(|(i, m)| {
            m.role
                == if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                }
        });
        if !alternates || messages.last()?.role != Role::User {
            return None;
        }
        let mut conversation =
            Conversation::from_messages_for(Arc::clone(&self.template), messages)
                .ok()?
                .with_budget(budget);
        if let Some(tokenizer) = &self.tokenizer {
            conversation = conversation.with_template_tokenizer(Arc::clone(tokenizer));
        }
        let same = match &prepared.ids {
            Some(ids) => conversation.encode(true).ok()? == *ids,
            None => conversation.render(true).ok()? == prepared.text,
        };
        if !same || conversation.fit().ok()?.dropped_messages > 0 {
            return None;
        }
        let user = conversation.take_last_user().ok()?;
        Some((conversation, user))
    }
}

/// What a template error means to a client: its conversation refused (400), or this
/// server's template failing (500).
fn template_error(e: &TemplateError) -> ApiError {
    match e {
        TemplateError::Config { .. } | TemplateError::Syntax { .. } => {
            ApiError::server(e.to_string())
        }
        TemplateError::InvalidJson { what, .. } if what == "tools" => {
            ApiError::bad_request(e.to_string(), Some("tools"))
        }
        TemplateError::SpecialTokenInText { location, .. } => {
            ApiError::bad_request(e.to_string(), Some(param_of(location)))
        }
        _ => ApiError::bad_request(e.to_string(), Some("messages")),
    }
}

/// A token-mode request holding a text named with `--special-token`.
fn named_special_error(e: &TemplateError) -> ApiError {
    match e {
        TemplateError::SpecialTokenInText { token, location } => ApiError::bad_request(
            format!(
                "{location} contains `{token}`, a control token of this model (named with \
                 --special-token); remove it"
            ),
            Some(param_of(location)),
        ),
        other => template_error(other),
    }
}

/// The request field a special token was found in (`tools`, else `messages`).
fn param_of(location: &str) -> &'static str {
    match location.starts_with("tools") {
        true => "tools",
        false => "messages",
    }
}

/// Every chat template source of a `tokenizer_config.json`, joined (to see what the
/// templates read: `tools`, `<think>`, a tool-call format).
fn template_sources(config: &Path) -> Result<String, Box<dyn Error>> {
    let mut path = config.to_path_buf();
    if path.is_dir() {
        path.push("tokenizer_config.json");
    }
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    Ok(match json.get("chat_template") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|t| t.get("template").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    })
}

/// The vocabulary size: one more than the highest id that decodes (ids are contiguous).
fn vocabulary_size(t: &TemplateTokenizer) -> u32 {
    let valid = |id: u32| t.decode(&[id], false).is_ok_and(|s| !s.is_empty());
    let (mut lo, mut hi) = (0u32, 1u32 << 24);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if valid(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo + 1
}

/// A JSON object's entries in their order, values as their JSON text.
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(V)
    }
}

fn ordered(raw: &RawValue, what: &str) -> Result<Ordered, ApiError> {
    serde_json::from_str(raw.get()).map_err(|e| {
        ApiError::bad_request(format!("{what} must be an object: {e}"), Some("messages"))
    })
}

/// Writes `{"key": value, ...}` from entries.
fn write_object(out: &mut String, entries: &[(String, String)]) {
    out.push('{');
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}: {value}", Value::String(key.clone()));
    }
    out.push('}');
}

/// The messages as the template is given them (JSON text, the client's key order): nulls
/// left out (templates test `'tool_calls' in message`), `developer` as `system`, content
/// parts joined into text, each tool call's `function.arguments` parsed to the object it
/// holds (templates print it with `tojson`), and the server's system prompt first when the
/// request brings none.
fn template_messages(
    messages: &[WithRaw<ChatMessage>],
    system: Option<&str>,
) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    let mut out = String::from("[");
    let has_system = messages
        .iter()
        .any(|m| m.value.role == "system" || m.value.role == "developer");
    if let (Some(system), false) = (system, has_system) {
        write_object(
            &mut out,
            &[
                ("role".into(), "\"system\"".into()),
                ("content".into(), Value::String(system.into()).to_string()),
            ],
        );
    }
    for (n, message) in messages.iter().enumerate() {
        let role = message.value.role.as_str();
        if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
            return Err(ApiError::bad_request(
                format!(
                    "message {n} has the role `{role}`; expected system, developer, user, \
                     assistant or tool"
                ),
                Some("messages"),
            ));
        }
        let mut entries = Vec::new();
        for (key, value) in ordered(&message.raw, "a message")?.0 {
            let text = value.get();
            if text == "null" {
                continue;
            }
            let text = match key.as_str() {
                "role" if role == "developer" => "\"system\"".to_owned(),
                "content" if text.starts_with('[') => {
                    let content = serde_json::from_str::<crate::openai::Content>(text)
                        .map_err(|e| ApiError::bad_request(e.to_string(), Some("messages")))?
                        .into_text()?;
                    Value::String(content).to_string()
                }
                "tool_calls" => tool_calls(&value)?,
                _ => text.to_owned(),
            };
            entries.push((key, text));
        }
        if out.len() > 1 {
            out.push_str(", ");
        }
        write_object(&mut out, &entries);
    }
    out.push(']');
    Ok(out)
}

/// An assistant's `tool_calls` with each `function.arguments` string that holds a JSON
/// object replaced by that object.
fn tool_calls(raw: &RawValue) -> Result<String, ApiError> {
    let calls: Vec<Box<RawValue>> = serde_json::from_str(raw.get()).map_err(|e| {
        ApiError::bad_request(format!("tool_calls must be a list: {e}"), Some("messages"))
    })?;
    let mut out = String::from("[");
    for (i, call) in calls.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let mut entries = Vec::new();
        for (key, value) in ordered(call, "a tool call")?.0 {
            let text = if key == "function" {
                let mut function = Vec::new();
                for (k, v) in ordered(&value, "a tool call's function")?.0 {
                    let text = match (k.as_str(), serde_json::from_str::<String>(v.get())) {
                        ("arguments", Ok(args)) if is_json_object(&args) => args.trim().to_owned(),
                        _ => v.get().to_owned(),
                    };
                    function.push((k, text));
                }
                let mut s = String::new();
                write_object(&mut s, &function);
                s
            } else {
                value.get().to_owned()
            };
            entries.push((key, text));
        }
        write_object(&mut out, &entries);
    }
    out.push(']');
    Ok(out)
}

fn is_json_object(text: &str) -> bool {
    text.trim_start().starts_with('{') && serde_json::from_str::<&RawValue>(text).is_ok()
}

/// The tools to give the template (their JSON text, the client's key order) and their
/// names, or `None` when there are none or `tool_choice` is `"none"`. A named
/// `tool_choice` offers that tool only.
fn tools_for(request: &ChatRequest) -> Result<Option<(String, Vec<String>)>, ApiError> {
    let Some(tools) = &request.tools else {
        return Ok(None);
    };
    if tools.value.is_empty() {
        return Ok(None);
    }
    let named = match &request.tool_choice {
        Some(ToolChoice::Mode(m)) if m == "none" => return Ok(None),
        Some(ToolChoice::Named(choice)) => choice
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    let raw: Vec<Box<RawValue>> = serde_json::from_str(tools.raw.get())
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("tools")))?;
    let mut kept = Vec::new();
    let mut names = Vec::new();
    for (tool, raw) in tools.value.iter().zip(&raw) {
        if tool.kind != "function" {
            return Err(unsupported(
                "tools",
                &format!(
                    "tools of type `{}` are not supported; only `function`",
                    tool.kind
                ),
            ));
        }
        let name = tool
            .function
            .as_ref()
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("a tool's function has no name", Some("tools")))?;
        if named.as_deref().is_some_and(|n| n != name) {
            continue;
        }
        names.push(name.to_owned());
        kept.push(raw.get());
    }
    Ok(Some((format!("[{}]", kept.join(", ")), names)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(json: &str) -> Vec<WithRaw<ChatMessage>> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn history_goes_to_the_template_in_the_clients_order() {
        let m = messages(
            r#"[{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                 "type": "function", "function": {"name": "get_weather",
                 "arguments": "{\"zeta\": 1, \"alpha\": \"Paris\"}"}}]},
                {"tool_call_id": "call_1", "role": "tool", "content": "22 C"}]"#,
        );
        assert_eq!(
            template_messages(&m, Some("unused")).unwrap(),
            r#"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"zeta": 1, "alpha": "Paris"}}}]}, {"tool_call_id": "call_1", "role": "tool", "content": "22 C"}]"#
        );
        let m = messages(r#"[{"role": "user", "content": "Hi"}]"#);
        assert_eq!(
            template_messages(&m, Some("Sys")).unwrap(),
            r#"[{"role": "system", "content": "Sys"}, {"role": "user", "content": "Hi"}]"#
        );
        let bad = messages(r#"[{"role": "wizard", "content": "Hi"}]"#);
        assert_eq!(
            template_messages(&bad, None).unwrap_err().param,
            Some("messages")
        );
    }

    #[test]
    fn arguments_that_are_not_an_object_stay_a_string() {
        let raw = RawValue::from_string(
            r#"[{"function": {"name": "f", "arguments": "not json"}}]"#.to_owned(),
        )
        .unwrap();
        assert_eq!(
            tool_calls(&raw).unwrap(),
            r#"[{"function": {"name": "f", "arguments": "not json"}}]"#
        );
    }
}
