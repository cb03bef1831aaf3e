//! The OpenAI wire format: requests as they arrive, responses and errors as clients expect
//! them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// `POST /v1/chat/completions`. Every field may be `null`, as OpenAI's schema allows.
/// `temperature` and `top_p` are accepted and ignored: sampling is fixed per model in
/// RKLLM 1.1.1 (set when the model is loaded). Parameters that would change the answer and
/// are not supported are refused by [`ChatRequest::check_supported`].
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<WithRaw<ChatMessage>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Only one choice is supported.
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// Function tools, for templates that take them (kept as sent, for the template).
    #[serde(default)]
    pub tools: Option<WithRaw<Vec<Tool>>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    /// The deprecated form of `tools`.
    #[serde(default)]
    pub functions: Option<Vec<Value>>,
    #[serde(default)]
    pub function_call: Option<Value>,
}

impl ChatRequest {
    /// Refuses, naming it, any parameter that would change the answer and is not supported.
    /// `takes_tools`: whether the chat template takes tools (then `tools`, `tool_choice`
    /// and the history's tool calls go to it).
    pub fn check_supported(&self, takes_tools: bool) -> Result<(), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(unsupported("n", "only n = 1 is supported"));
        }
        if self.logprobs == Some(true) {
            return Err(unsupported("logprobs", "logprobs are not supported"));
        }
        if self.top_logprobs.is_some_and(|n| n > 0) {
            return Err(unsupported("top_logprobs", "logprobs are not supported"));
        }
        if let Some(format) = &self.response_format {
            if format.kind != "text" {
                return Err(unsupported(
                    "response_format",
                    &format!(
                        "response_format `{}` is not supported; only `text`",
                        format.kind
                    ),
                ));
            }
        }
        if self.functions.as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(unsupported(
                "functions",
                "the deprecated `functions` are not supported; send them as `tools`",
            ));
        }
        match &self.function_call {
            None => {}
            Some(Value::String(mode)) if mode == "none" || mode == "auto" => {}
            Some(_) => {
                return Err(unsupported(
                    "function_call",
                    "the deprecated `function_call` is not supported; use `tool_choice`",
                ))
            }
        }
        if let Some(ToolChoice::Named(choice)) = &self.tool_choice {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            let offered = self.tool_names();
            match name {
                Some(name) if offered.iter().any(|n| n == name) => {}
                Some(name) => {
                    return Err(ApiError::bad_request(
                        format!("tool_choice names `{name}`, which is not among the tools"),
                        Some("tool_choice"),
                    ))
                }
                None => {
                    return Err(ApiError::bad_request(
                        "tool_choice must be \"none\", \"auto\", \"required\" or \
                         {\"type\": \"function\", \"function\": {\"name\": ...}}",
                        Some("tool_choice"),
                    ))
                }
            }
        }
        if let Some(ToolChoice::Mode(mode)) = &self.tool_choice {
            if !matches!(mode.as_str(), "none" | "auto" | "required") {
                return Err(ApiError::bad_request(
                    format!("tool_choice `{mode}` is not one of none, auto, required"),
                    Some("tool_choice"),
                ));
            }
        }
        if takes_tools {
            return Ok(());
        }
        // The template takes no tools: asking for them would be silently ignored.
        let none = matches!(&self.tool_choice, Some(ToolChoice::Mode(m)) if m == "none");
        if !none && self.tools.as_ref().is_some_and(|t| !t.value.is_empty()) {
            return Err(unsupported(
                "tools",
                "tools are not supported: this server's chat template takes none",
            ));
        }
        match &self.tool_choice {
            None => {}
            Some(ToolChoice::Mode(mode)) if mode == "none" || mode == "auto" => {}
            Some(_) => {
                return Err(unsupported(
                    "tool_choice",
                    "tool_choice cannot force a tool: this server's chat template takes none",
                ))
            }
        }
        for message in &self.messages {
            let message = &message.value;
            if message.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) {
                return Err(unsupported(
                    "messages",
                    "assistant tool_calls are not supported: this server's chat template takes none",
                ));
            }
        }
        Ok(())
    }

    /// The names of the function tools offered.
    pub fn tool_names(&self) -> Vec<String> {
        self.tools
            .iter()
            .flat_map(|t| &t.value)
            .filter_map(|t| t.function.as_ref())
            .filter_map(|f| f.get("name").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }
}

/// A value and the JSON text it was read from (for templates that print it: the client's
/// key order kept).
#[derive(Debug)]
pub struct WithRaw<T> {
    pub value: T,
    // Read by the model's-own-template path (feature `template`).
    #[cfg_attr(not(feature = "template"), allow(dead_code))]
    pub raw: Box<RawValue>,
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for WithRaw<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let value = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
        Ok(WithRaw { value, raw })
    }
}

/// A 400 for a parameter that is not supported, naming it.
pub fn unsupported(param: &'static str, message: &str) -> ApiError {
    ApiError::bad_request(message.to_owned(), Some(param)).with_code("unsupported_parameter")
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
}

/// A function tool as OpenAI describes it.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub function: Option<Value>,
}

/// `"none"`, `"auto"`, `"required"`, or a named function.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named(Value),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// A message of the conversation, and its JSON text (what a model's own template is given).
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    /// An assistant's tool calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
}

/// A message's content: a string, or parts of which only text is supported.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    pub fn into_text(self) -> Result<String, ApiError> {
        match self {
            Content::Text(s) => Ok(s),
            Content::Parts(parts) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::bad_request(
                                format!(
                                    "content parts of type `{kind}` are not supported; only `text`"
                                ),
                                Some("messages"),
                            ))
                        }
                    }
                }
                Ok(text)
            }
        }
    }
}

/// `POST /v1/completions`: a raw prompt, no template.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub best_of: Option<u32>,
    #[serde(default)]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub suffix: Option<String>,
}

impl CompletionRequest {
    /// Refuses, naming it, any parameter that would change the answer and is not supported.
    pub fn check_supported(&self) -> Result<(), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(unsupported("n", "only n = 1 is supported"));
        }
        if self.best_of.is_some_and(|n| n != 1) {
            return Err(unsupported("best_of", "only best_of = 1 is supported"));
        }
        if self.logprobs.is_some() {
            return Err(unsupported("logprobs", "logprobs are not supported"));
        }
        if self.echo == Some(true) {
            return Err(unsupported("echo", "echo is not supported"));
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(unsupported("suffix", "suffix (insertion) is not supported"));
        }
        Ok(())
    }
}

/// A legacy completion's prompt: text or token ids, one prompt only.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i64>),
    TokenBatch(Vec<Vec<i64>>),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub input: EmbeddingInput,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<u32>,
}

/// Token ids are read as `i64` so that an id past `i32` is refused as out of the
/// vocabulary rather than as malformed JSON.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<i64>),
    TokenBatch(Vec<Vec<i64>>),
}

/// An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>, kind: &'static str) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub fn with_param(mut self, param: &'static str) -> ApiError {
        self.param = Some(param);
        self
    }

    /// 503 while the server shuts down.
    pub fn shutting_down() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is shutting down".into(),
            kind: "server_error",
            param: None,
            code: Some("shutting_down"),
            retry_after: Some(5),
        }
    }

    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
            retry_after: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn server(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// What the library's errors mean to a client: its own mistake (400), a busy server (503),
/// or a failure on this side (500).
pub fn error_of(e: &rkllm::Error) -> ApiError {
    use rkllm::ErrorKind;
    match e.kind() {
        ErrorKind::TooLong => ApiError::bad_request(e.to_string(), Some("messages"))
            .with_code("context_length_exceeded"),
        // (A missing file or adapter is this server's own configuration: a server error.)
        ErrorKind::InvalidInput => {
            let param = matches!(e, rkllm::Error::Chat(_)).then_some("messages");
            ApiError::bad_request(e.to_string(), param)
        }
        ErrorKind::Busy | ErrorKind::Unavailable | ErrorKind::TimedOut => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: Some(1),
        },
        _ => ApiError::server(e.to_string()),
    }
}

/// Little-endian `f32`s in standard base64, as `encoding_format: "base64"` wants (the
/// official Python SDK asks for it by default).
pub fn base64_f32(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        // 1.0f32 = 00 00 80 3f; 2.0f32 = 00 00 00 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(base64_f32(&[]), "");
    }
}
