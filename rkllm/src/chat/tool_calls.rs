//! Tool calls read out of a model's reply, streamed or one-shot.
//!
//! Chat templates that take `tools` teach the model a form for calling one. This module
//! recognises the forms of the families RKLLM runs and turns them into structured calls
//! (a name, the arguments as a JSON string, a generated id), as OpenAI's `tool_calls`:
//!
//! * [`ToolCallFormat::Hermes`]: Qwen2.5 and Hermes 2/3, one or more
//!   `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>` blocks, possibly after some
//!   text. `"parameters"` is accepted for `"arguments"`, and the keys may come in any order.
//! * [`ToolCallFormat::Llama3Json`]: Llama 3.1 and 3.2, a JSON object
//!   `{"name": …, "parameters": {…}}` as the whole reply, optionally after `<|python_tag|>`;
//!   several calls may follow one another, separated by `;`. A reply that does not start with
//!   such an object is plain text, so a model answering in JSON is not taken for a call.
//!
//! [`ToolCallParser`] reads the reply as it streams and reports [`ToolCallEvent`]s: text
//! outside calls, a call started (index, id, name), pieces of its arguments, the call ended;
//! a server turns them into OpenAI's `tool_calls` deltas as they come. [`parse_tool_calls`]
//! reads a completed reply.
//!
//! # Rules
//!
//! * The JSON is checked as it arrives, by a strict JSON lexer. A call is *committed* (its
//!   `Started` event is sent) once its name is known and its arguments object has begun (or
//!   the object ended, for a Hermes call without arguments). Until then nothing of it is
//!   returned, and a block that turns out not to be a call (not JSON, no name, arguments that
//!   are not an object, a name the caller did not offer; for Llama 3, a key other than `name`,
//!   `parameters`, `arguments` or `type`) is returned as plain text, never an error.
//! * The arguments are the model's own text of the arguments object, byte for byte, so the
//!   streamed pieces add up to [`ToolCall::arguments`] exactly. A call cut off after it was
//!   committed (the reply ended, or the JSON broke) keeps the arguments written so far, which
//!   are then not valid JSON: as with OpenAI's API, validate the arguments before calling
//!   the tool. The rest of a broken Hermes block, up to `</tool_call>`, is dropped.
//! * Text is held back only while it could still be the start of a call tag, a call not yet
//!   committed, or (once a call has been seen) a run of whitespace, which is dropped when
//!   another call or the end follows it.
//! * Cutting the reply into pieces differently never changes the result.
//!
//! ```
//! use rkllm::chat::tool_calls::{parse_tool_calls, ToolCallFormat};
//!
//! let reply = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \
//!              \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
//! let parsed = parse_tool_calls(ToolCallFormat::Hermes, reply);
//! assert_eq!(parsed.content, "Let me check.\n");
//! assert_eq!(parsed.calls[0].name, "get_weather");
//! assert_eq!(parsed.calls[0].arguments, r#"{"city": "Paris"}"#);
//! assert!(parsed.calls[0].id.starts_with("call_"));
//! ```

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The tag that opens a Hermes-style call.
const HERMES_OPEN: &str = "<tool_call>";
/// The tag that closes a Hermes-style call.
const HERMES_CLOSE: &str = "</tool_call>";
/// Llama 3.1's marker before a tool call.
const PYTHON_TAG: &str = "<|python_tag|>";

/// The form a model family writes its tool calls in.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolCallFormat {
    /// `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, possibly several, possibly
    /// after text: Qwen2.5, Qwen3, Hermes 2 Pro and Hermes 3.
    Hermes,
    /// `{"name": …, "parameters": {…}}` as the whole reply, optionally after
    /// `<|python_tag|>`, several separated by `;`: Llama 3.1, 3.2 and 3.3.
    Llama3Json,
}

impl ToolCallFormat {
    /// Guesses the format from a chat template's text (or a prompt rendered with tools):
    /// `<tool_call>` means [`Hermes`](Self::Hermes); `<|python_tag|>`, or a `"parameters"`
    /// call format next to the `ipython` role, means [`Llama3Json`](Self::Llama3Json).
    /// `None` when the template shows no known form (it may take no tools at all).
    ///
    /// ```
    /// use rkllm::chat::tool_calls::ToolCallFormat;
    /// let qwen = r#"...For each function call, return a json object with function name and
    /// arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": ..."#;
    /// assert_eq!(ToolCallFormat::detect(qwen), Some(ToolCallFormat::Hermes));
    /// let llama32 = r#"{{- 'Respond in the format {"name": function name, "parameters":
    /// dictionary of argument name and its value}.' }} ... {%- elif message.role == "tool"
    /// or message.role == "ipython" %}"#;
    /// assert_eq!(ToolCallFormat::detect(llama32), Some(ToolCallFormat::Llama3Json));
    /// assert_eq!(ToolCallFormat::detect("{{ bos_token }}{{ messages }}"), None);
    /// ```
    pub fn detect(template: &str) -> Option<ToolCallFormat> {
        if template.contains(HERMES_OPEN) {
            Some(ToolCallFormat::Hermes)
        } else if template.contains(PYTHON_TAG)
            || (template.contains("\"parameters\"") && template.contains("ipython"))
        {
            Some(ToolCallFormat::Llama3Json)
        } else {
            None
        }
    }

    /// The text that opens a call in this format, up to the function's name (`name` is
    /// `None`) or, with the name, up to its arguments' value. A prompt that ends with it
    /// leaves the model to complete a call, which is how a server honours OpenAI's
    /// `tool_choice: "required"` or a named function without constrained decoding. Fed
    /// to a [`ToolCallParser`] before the model's text, it reads as the model's own.
    ///
    /// ```
    /// use rkllm::chat::tool_calls::ToolCallFormat;
    /// assert_eq!(ToolCallFormat::Hermes.call_opening(None), "<tool_call>\n{\"name\": \"");
    /// assert_eq!(
    ///     ToolCallFormat::Llama3Json.call_opening(Some("get_weather")),
    ///     r#"{"name": "get_weather", "parameters": "#
    /// );
    /// ```
    pub fn call_opening(self, name: Option<&str>) -> String {
        let (open, arguments) = match self {
            ToolCallFormat::Hermes => ("<tool_call>\n{\"name\": ", "arguments"),
            ToolCallFormat::Llama3Json => ("{\"name\": ", "parameters"),
        };
        match name {
            None => format!("{open}\""),
            Some(name) => {
                let mut out = open.to_owned();
                write_json_string(name, false, &mut out);
                let _ = write!(out, ", \"{arguments}\": ");
                out
            }
        }
    }
}

/// Writes `s` as a JSON string literal, as Python's `json` encoder writes it (with
/// `ensure_ascii`, every non-ASCII character as `\u` escapes). Used by the template's
/// `tojson` too.
pub(crate) fn write_json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A tool call the model made, as OpenAI's `tool_calls[i]` of type `function`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The call's id (`call_` and 24 random letters and digits, unless
    /// [`ToolCallParser::with_id_prefix`] set another form).
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments object as the model wrote it (JSON text; see the [module](self) on
    /// calls cut off midway).
    pub arguments: String,
}

/// What the parser found in the text fed to it, in order.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolCallEvent {
    /// Text outside tool calls (the message's `content`).
    Content(String),
    /// A tool call began: OpenAI's first delta of `tool_calls[index]`, with its id and name.
    Started {
        /// The call's position among this reply's calls, from 0.
        index: usize,
        /// The call's id.
        id: String,
        /// The function's name.
        name: String,
    },
    /// More of the call's arguments (`tool_calls[index].function.arguments`, appended).
    Arguments {
        /// The call's index.
        index: usize,
        /// The next piece of the arguments' JSON text.
        delta: String,
    },
    /// The call is complete (or was cut off); no more events for this index.
    Ended {
        /// The call's index.
        index: usize,
    },
}

/// A completed reply read by [`parse_tool_calls`].
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedReply {
    /// The text outside tool calls.
    pub content: String,
    /// The calls, in order.
    pub calls: Vec<ToolCall>,
}

/// Reads the tool calls out of a completed reply; see the [module](self) for the rules.
/// Ids are random, as [`ToolCallParser::new`] makes them.
pub fn parse_tool_calls(format: ToolCallFormat, text: &str) -> ParsedReply {
    let mut parser = ToolCallParser::new(format);
    let mut content = String::new();
    for event in parser.push(text).into_iter().chain(parser.finish()) {
        if let ToolCallEvent::Content(text) = event {
            content.push_str(&text);
        }
    }
    ParsedReply {
        content,
        calls: parser.calls,
    }
}

/// Finds tool calls in a reply that arrives in pieces.
///
/// Feed each piece to [`push`](Self::push) and the end of the reply to
/// [`finish`](Self::finish); each returns the events decided so far (consecutive `Content`
/// text, and consecutive arguments of one call, merged into one event). The calls are
/// then in [`calls`](Self::calls). One parser reads one reply; text pushed after `finish` is
/// returned as content.
///
/// A server streaming OpenAI chat-completion chunks maps the events one to one:
///
/// ```
/// use rkllm::chat::tool_calls::{ToolCallEvent, ToolCallFormat, ToolCallParser};
///
/// let mut parser = ToolCallParser::new(ToolCallFormat::Hermes).with_id_prefix("call_");
/// let mut chunks = Vec::new();
/// let pieces = ["<tool_", "call>\n{\"name\": \"add\", \"argu", "ments\": {\"a\": 1,",
///               " \"b\": 2}}\n</tool_call>"];
/// for piece in pieces {
///     for event in parser.push(piece) {
///         chunks.push(match event {
///             ToolCallEvent::Content(text) => format!("content {text:?}"),
///             ToolCallEvent::Started { index, id, name } => {
///                 format!("tool_calls[{index}] id={id} name={name}")
///             }
///             ToolCallEvent::Arguments { index, delta } => {
///                 format!("tool_calls[{index}] arguments+={delta}")
///             }
///             ToolCallEvent::Ended { index } => format!("end {index}"),
///             _ => unreachable!(),
///         });
///     }
/// }
/// assert!(parser.finish().is_empty());
/// assert_eq!(chunks, [
///     "tool_calls[0] id=call_0 name=add",
///     "tool_calls[0] arguments+={\"a\": 1,",
///     "tool_calls[0] arguments+= \"b\": 2}",
///     "end 0",
/// ]);
/// // finish_reason "tool_calls" when the reply made calls:
/// assert_eq!(parser.calls().len(), 1);
/// assert_eq!(parser.calls()[0].arguments, "{\"a\": 1, \"b\": 2}");
/// ```
#[derive(Debug, Clone)]
pub struct ToolCallParser {
    format: ToolCallFormat,
    tool_names: Option<Vec<String>>,
    ids: Ids,
    state: State,
    calls: Vec<ToolCall>,
    /// A call has been committed: whitespace between and after calls is held.
    seen_call: bool,
}

#[derive(Debug, Clone)]
enum Ids {
    Random(u64),
    Prefix(String),
}

impl Ids {
    fn random() -> Ids {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        Ids::Random(hasher.finish())
    }

    fn next(&mut self, index: usize) -> String {
        match self {
            Ids::Prefix(prefix) => format!("{prefix}{index}"),
            Ids::Random(state) => {
                const ALPHABET: &[u8] =
                    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
                let mut id = String::from("call_");
                for _ in 0..24 {
                    // splitmix64
                    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = *state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    id.push(char::from(ALPHABET[(z % ALPHABET.len() as u64) as usize]));
                }
                id
            }
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    /// Hermes: text outside calls. `held`: a prefix of `<tool_call>`; `spaces`: whitespace
    /// held after a call.
    Text { held: String, spaces: String },
    /// Inside a call (or a Llama 3 candidate).
    Call(Box<Call>),
    /// Hermes: the call's object ended; whitespace and a prefix of `</tool_call>` are held.
    AfterCall { held: String },
    /// Hermes: a committed call broke; text is dropped up to `</tool_call>`.
    Dangling { held: String },
    /// Llama 3: the start of the reply (whitespace and `<|python_tag|>` held).
    LlamaStart { held: String },
    /// Llama 3: after a call (whitespace and `;` held).
    LlamaBetween { held: String },
    /// Everything is content.
    Plain,
}

/// Events of one call, merged as they are added.
#[derive(Default)]
struct Events(Vec<ToolCallEvent>);

impl Events {
    fn content(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Some(ToolCallEvent::Content(last)) = self.0.last_mut() {
            last.push_str(text);
        } else {
            self.0.push(ToolCallEvent::Content(text.to_owned()));
        }
    }

    fn content_char(&mut self, c: char) {
        self.content(c.encode_utf8(&mut [0; 4]));
    }

    fn arguments(&mut self, index: usize, text: &str) {
        if text.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some(ToolCallEvent::Arguments { index: last, delta }) if *last == index => {
                delta.push_str(text)
            }
            _ => self.0.push(ToolCallEvent::Arguments {
                index,
                delta: text.to_owned(),
            }),
        }
    }
}

/// The member of the call object whose value is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Name,
    Arguments,
    Skip,
}

/// A call being read.
#[derive(Debug, Clone, Default)]
struct Call {
    /// The text since the call began, returned as content if it is not a call.
    raw: String,
    lexer: Lexer,
    /// The raw text of the key being read (depth 1), while `in_key`.
    key: String,
    in_key: bool,
    member: Option<Member>,
    /// The raw text of the name, or of arguments read before the name.
    value: String,
    name: Option<String>,
    /// Arguments complete before the name was known.
    arguments: Option<String>,
    /// Whether an arguments member has begun.
    has_arguments: bool,
    /// The index, once committed.
    index: Option<usize>,
}

/// What reading one character of a call came to.
enum Outcome {
    /// Go on reading the call.
    More,
    /// The call object is complete.
    Complete,
    /// Not a call: its text is content, and this character is read again outside it.
    Rejected,
    /// A committed call broke at this character, which is read again outside it.
    Broken,
}

impl ToolCallParser {
    /// A parser for `format`, making random `call_…` ids.
    pub fn new(format: ToolCallFormat) -> ToolCallParser {
        ToolCallParser {
            format,
            tool_names: None,
            ids: Ids::random(),
            state: ToolCallParser::initial(format),
            calls: Vec::new(),
            seen_call: false,
        }
    }

    fn initial(format: ToolCallFormat) -> State {
        match format {
            ToolCallFormat::Hermes => State::Text {
                held: String::new(),
                spaces: String::new(),
            },
            ToolCallFormat::Llama3Json => State::LlamaStart {
                held: String::new(),
            },
        }
    }

    /// Ids `prefix` followed by the call's index (`call_0`, `call_1`, …) instead of random
    /// ones: for tests, or where the caller keeps ids unique itself.
    pub fn with_id_prefix(mut self, prefix: impl Into<String>) -> ToolCallParser {
        self.ids = Ids::Prefix(prefix.into());
        self
    }

    /// Accepts only calls of these functions (the request's `tools`); a call of any other
    /// name is plain text. Without this, any name is accepted.
    pub fn with_tool_names<I, S>(mut self, names: I) -> ToolCallParser
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tool_names = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The format this parser reads.
    pub fn format(&self) -> ToolCallFormat {
        self.format
    }

    /// The calls committed so far, complete once [`finish`](Self::finish) has been called.
    pub fn calls(&self) -> &[ToolCall] {
        &self.calls
    }

    /// The calls, taking them out of the parser.
    pub fn into_calls(self) -> Vec<ToolCall> {
        self.calls
    }

    /// Feeds the next piece of the reply; returns the events it decided.
    pub fn push(&mut self, text: &str) -> Vec<ToolCallEvent> {
        let mut events = Events::default();
        for c in text.chars() {
            self.step(c, &mut events);
        }
        events.0
    }

    /// Ends the reply: returns what was held back (a call not yet committed is content; a
    /// committed one cut off ends here).
    pub fn finish(&mut self) -> Vec<ToolCallEvent> {
        let mut events = Events::default();
        match std::mem::replace(&mut self.state, State::Plain) {
            State::Text { held, spaces } => {
                if !held.is_empty() {
                    events.content(&spaces);
                    events.content(&held);
                }
            }
            State::LlamaStart { held } => events.content(&held),
            State::Call(call) => match call.index {
                Some(index) => events.0.push(ToolCallEvent::Ended { index }),
                None => events.content(&call.raw),
            },
            State::AfterCall { .. }
            | State::Dangling { .. }
            | State::LlamaBetween { .. }
            | State::Plain => {}
        }
        events.0
    }

    fn step(&mut self, c: char, events: &mut Events) {
        match &mut self.state {
            State::Plain => events.content_char(c),
            State::Text { held, spaces } => {
                if held.is_empty() {
                    if c == '<' {
                        held.push(c);
                    } else if self.seen_call && c.is_whitespace() {
                        spaces.push(c);
                    } else {
                        events.content(spaces);
                        spaces.clear();
                        events.content_char(c);
                    }
                    return;
                }
                held.push(c);
                if held == HERMES_OPEN {
                    let raw = std::mem::take(spaces) + held;
                    self.state = State::Call(Box::new(Call {
                        raw,
                        ..Call::default()
                    }));
                } else if !HERMES_OPEN.starts_with(held.as_str()) {
                    // Not the tag: its first character is text, the rest goes round again.
                    let held = std::mem::take(held);
                    events.content(spaces);
                    spaces.clear();
                    let mut rest = held.chars();
                    events.content_char(rest.next().expect("held text is not empty"));
                    for c in rest {
                        self.step(c, events);
                    }
                }
            }
            State::AfterCall { held } => {
                held.push(c);
                let tag = held.trim_start_matches(char::is_whitespace);
                if tag == HERMES_CLOSE {
                    self.state = ToolCallParser::initial(self.format);
                } else if !HERMES_CLOSE.starts_with(tag) {
                    let held = std::mem::take(held);
                    self.state = ToolCallParser::initial(self.format);
                    for c in held.chars() {
                        self.step(c, events);
                    }
                }
            }
            State::Dangling { held } => {
                held.push(c);
                if held == HERMES_CLOSE {
                    self.state = ToolCallParser::initial(self.format);
                } else if !HERMES_CLOSE.starts_with(held.as_str()) {
                    let held = std::mem::take(held);
                    for c in held.chars().skip(1) {
                        self.step(c, events);
                    }
                }
            }
            State::LlamaStart { held } => {
                if c == '{' && llama_prefix_complete(held) {
                    let raw = std::mem::take(held);
                    self.start_call(raw, c, events);
                    return;
                }
                held.push(c);
                if !llama_prefix_possible(held) {
                    events.content(held);
                    self.state = State::Plain;
                }
            }
            State::LlamaBetween { held } => {
                if c == '{' {
                    let raw = std::mem::take(held);
                    self.start_call(raw, c, events);
                } else if c.is_whitespace() || c == ';' {
                    held.push(c);
                } else {
                    events.content(held);
                    events.content_char(c);
                    self.state = State::Plain;
                }
            }
            State::Call(_) => self.call_step(c, events),
        }
    }

    fn start_call(&mut self, raw: String, c: char, events: &mut Events) {
        self.state = State::Call(Box::new(Call {
            raw,
            ..Call::default()
        }));
        self.call_step(c, events);
    }

    fn call_step(&mut self, c: char, events: &mut Events) {
        let State::Call(call) = &mut self.state else {
            unreachable!("call_step outside a call")
        };
        let outcome = call.step(
            c,
            self.format,
            self.tool_names.as_deref(),
            &mut self.ids,
            &mut self.calls,
            events,
        );
        match outcome {
            Outcome::More => {}
            Outcome::Complete => {
                self.seen_call = true;
                self.state = match self.format {
                    ToolCallFormat::Hermes => State::AfterCall {
                        held: String::new(),
                    },
                    ToolCallFormat::Llama3Json => State::LlamaBetween {
                        held: String::new(),
                    },
                };
            }
            Outcome::Rejected => {
                events.content(&call.raw);
                self.state = match self.format {
                    ToolCallFormat::Hermes => State::Text {
                        held: String::new(),
                        spaces: String::new(),
                    },
                    ToolCallFormat::Llama3Json => State::Plain,
                };
                self.step(c, events);
            }
            Outcome::Broken => {
                let index = call.index.expect("a broken call was committed");
                events.0.push(ToolCallEvent::Ended { index });
                self.seen_call = true;
                self.state = match self.format {
                    ToolCallFormat::Hermes => State::Dangling {
                        held: String::new(),
                    },
                    ToolCallFormat::Llama3Json => State::Plain,
                };
                self.step(c, events);
            }
        }
    }
}

impl Call {
    fn step(
        &mut self,
        c: char,
        format: ToolCallFormat,
        tool_names: Option<&[String]>,
        ids: &mut Ids,
        calls: &mut Vec<ToolCall>,
        events: &mut Events,
    ) -> Outcome {
        let failed = if self.index.is_some() {
            Outcome::Broken
        } else {
            Outcome::Rejected
        };
        let Ok(marks) = self.lexer.step(c) else {
            return failed;
        };
        // The object itself must be an object.
        if marks.start == Some(0) && c != '{' {
            return failed;
        }
        if marks.number_ended == Some(1) {
            self.member = None;
        }
        if marks.key_start == Some(1) {
            self.in_key = true;
            self.key.clear();
        }
        if self.in_key {
            self.key.push(c);
            if marks.key_end == Some(1) {
                self.in_key = false;
            }
        } else if marks.start == Some(1) {
            let key = decode_string(&self.key);
            let member = match key.as_str() {
                "name" if self.name.is_none() => Member::Name,
                "arguments" | "parameters" if !self.has_arguments => Member::Arguments,
                "name" | "arguments" | "parameters" | "type" => Member::Skip,
                _ if format == ToolCallFormat::Llama3Json && self.index.is_none() => {
                    return failed;
                }
                _ => Member::Skip,
            };
            match member {
                Member::Name if c != '"' => return failed,
                Member::Arguments if c != '{' => return failed,
                Member::Arguments => {
                    self.has_arguments = true;
                    if self.name.is_some() {
                        self.commit(ids, calls, events);
                    }
                }
                _ => {}
            }
            self.member = Some(member);
            self.value.clear();
        }
        match (self.member, self.index) {
            (Some(Member::Arguments), Some(index)) if !self.in_key => {
                let mut buf = [0; 4];
                let delta = c.encode_utf8(&mut buf);
                calls[index].arguments.push_str(delta);
                events.arguments(index, delta);
            }
            (Some(Member::Name | Member::Arguments), _) if !self.in_key => self.value.push(c),
            _ => {}
        }
        if marks.end == Some(1) {
            match self.member.take() {
                Some(Member::Name) => {
                    let name = decode_string(&self.value);
                    let offered = tool_names.is_none_or(|names| names.contains(&name));
                    if name.is_empty() || !offered {
                        return failed;
                    }
                    self.name = Some(name);
                    if let Some(arguments) = self.arguments.take() {
                        self.commit(ids, calls, events);
                        let index = self.index.expect("just committed");
                        calls[index].arguments.push_str(&arguments);
                        events.arguments(index, &arguments);
                    }
                }
                Some(Member::Arguments) if self.index.is_none() => {
                    self.arguments = Some(std::mem::take(&mut self.value));
                }
                _ => {}
            }
        }
        if marks.end == Some(0) {
            if self.index.is_none() {
                if self.name.is_none() || self.has_arguments || format == ToolCallFormat::Llama3Json
                {
                    return failed;
                }
                // A Hermes call without arguments: an empty object.
                self.commit(ids, calls, events);
                let index = self.index.expect("just committed");
                calls[index].arguments.push_str("{}");
                events.arguments(index, "{}");
            }
            let index = self.index.expect("committed");
            events.0.push(ToolCallEvent::Ended { index });
            return Outcome::Complete;
        }
        if self.index.is_none() {
            self.raw.push(c);
        }
        Outcome::More
    }

    fn commit(&mut self, ids: &mut Ids, calls: &mut Vec<ToolCall>, events: &mut Events) {
        let index = calls.len();
        let id = ids.next(index);
        let name = self
            .name
            .clone()
            .expect("a call is committed with its name");
        calls.push(ToolCall {
            id: id.clone(),
            name: name.clone(),
            arguments: String::new(),
        });
        events.0.push(ToolCallEvent::Started { index, id, name });
        self.index = Some(index);
        self.raw.clear();
    }
}

/// Whether `held` (the start of a Llama 3 reply) may still lead up to a call.
fn llama_prefix_possible(held: &str) -> bool {
    let rest = held.trim_start_matches(char::is_whitespace);
    PYTHON_TAG.starts_with(rest) || llama_prefix_complete(held)
}

/// Whether `held` is whitespace, optionally `<|python_tag|>`, and whitespace: a `{` now
/// opens a call.
fn llama_prefix_complete(held: &str) -> bool {
    let rest = held.trim_start_matches(char::is_whitespace);
    rest.is_empty()
        || rest
            .strip_prefix(PYTHON_TAG)
            .is_some_and(|r| r.chars().all(char::is_whitespace))
}

/// The value of a JSON string literal (quotes included) the lexer accepted. Unpaired
/// surrogates become U+FFFD.
fn decode_string(raw: &str) -> String {
    let inner = raw
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(raw);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    let mut pending_high: Option<u32> = None;
    while let Some(c) = chars.next() {
        if c != '\\' {
            if pending_high.take().is_some() {
                out.push(char::REPLACEMENT_CHARACTER);
            }
            out.push(c);
            continue;
        }
        let escaped = match chars.next() {
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let unit = u32::from_str_radix(&hex, 16).unwrap_or(0xFFFD);
                match (pending_high.take(), unit) {
                    (Some(high), 0xDC00..=0xDFFF) => {
                        let code = 0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00);
                        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                        continue;
                    }
                    (high, 0xD800..=0xDBFF) => {
                        if high.is_some() {
                            out.push(char::REPLACEMENT_CHARACTER);
                        }
                        pending_high = Some(unit);
                        continue;
                    }
                    (high, _) => {
                        if high.is_some() {
                            out.push(char::REPLACEMENT_CHARACTER);
                        }
                        char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER)
                    }
                }
            }
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some(other) => other,
            None => break,
        };
        if pending_high.take().is_some() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
        out.push(escaped);
    }
    if pending_high.is_some() {
        out.push(char::REPLACEMENT_CHARACTER);
    }
    out
}

/// A container the lexer is inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

/// Where a number is in JSON's number grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Number {
    Minus,
    Zero,
    Int,
    Dot,
    Fraction,
    E,
    ESign,
    Exponent,
}

impl Number {
    fn next(self, c: char) -> Option<Number> {
        use Number::*;
        let digit = c.is_ascii_digit();
        match (self, c) {
            (Minus, '0') => Some(Zero),
            (Minus, _) if digit => Some(Int),
            (Int, _) if digit => Some(Int),
            (Zero | Int, '.') => Some(Dot),
            (Dot | Fraction, _) if digit => Some(Fraction),
            (Zero | Int | Fraction, 'e' | 'E') => Some(E),
            (E, '+' | '-') => Some(ESign),
            (E | ESign | Exponent, _) if digit => Some(Exponent),
            _ => None,
        }
    }

    fn complete(self) -> bool {
        matches!(
            self,
            Number::Zero | Number::Int | Number::Fraction | Number::Exponent
        )
    }
}

/// What the lexer expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Expect {
    /// A value (at the top, after `:`, after `,` in an array).
    #[default]
    Value,
    /// A value or `]` (after `[`).
    ValueOrClose,
    /// A key or `}` (after `{`).
    KeyOrClose,
    /// A key (after `,` in an object).
    Key,
    /// `:` after a key.
    Colon,
    /// `,` or the container's close, after a value.
    After,
    /// Inside a string; `escape`: 0 none, 1 after `\`, 2..=5 reading `\u`'s hex digits.
    Str {
        key: bool,
        escape: u8,
    },
    Number(Number),
    /// Inside `true`, `false` or `null`, `at` characters read.
    Literal {
        word: &'static str,
        at: usize,
    },
    /// The top-level value is complete.
    Done,
}

/// A strict, incremental JSON lexer: one character at a time, it says where values and
/// keys start and end, and rejects anything that is not JSON.
#[derive(Debug, Clone, Default)]
struct Lexer {
    stack: Vec<Container>,
    expect: Expect,
}

/// What one character was, as depths: the number of containers around the value or key.
#[derive(Debug, Default)]
struct Marks {
    /// A number ended just before this character.
    number_ended: Option<usize>,
    /// This character starts a value.
    start: Option<usize>,
    /// This character ends a value (a string's quote, a container's close, a literal's last
    /// letter).
    end: Option<usize>,
    /// This character opens a key.
    key_start: Option<usize>,
    /// This character closes a key.
    key_end: Option<usize>,
}

impl Lexer {
    fn after_value(&self) -> Expect {
        if self.stack.is_empty() {
            Expect::Done
        } else {
            Expect::After
        }
    }

    fn step(&mut self, c: char) -> Result<Marks, ()> {
        let mut marks = Marks::default();
        let depth = self.stack.len();
        if let Expect::Number(number) = self.expect {
            if let Some(next) = number.next(c) {
                self.expect = Expect::Number(next);
                return Ok(marks);
            }
            if !number.complete() {
                return Err(());
            }
            marks.number_ended = Some(depth);
            self.expect = self.after_value();
        }
        match self.expect {
            Expect::Str { key, escape } => {
                let escape = match escape {
                    0 if c == '"' => {
                        if key {
                            marks.key_end = Some(depth);
                            self.expect = Expect::Colon;
                        } else {
                            marks.end = Some(depth);
                            self.expect = self.after_value();
                        }
                        return Ok(marks);
                    }
                    0 if c == '\\' => 1,
                    0 if c < ' ' => return Err(()),
                    0 => 0,
                    1 if c == 'u' => 2,
                    1 if matches!(c, '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => 0,
                    2..=4 if c.is_ascii_hexdigit() => escape + 1,
                    5 if c.is_ascii_hexdigit() => 0,
                    _ => return Err(()),
                };
                self.expect = Expect::Str { key, escape };
                Ok(marks)
            }
            Expect::Literal { word, at } => {
                if word[at..].starts_with(c) {
                    if at + 1 == word.len() {
                        marks.end = Some(depth);
                        self.expect = self.after_value();
                    } else {
                        self.expect = Expect::Literal { word, at: at + 1 };
                    }
                    Ok(marks)
                } else {
                    Err(())
                }
            }
            _ if matches!(c, ' ' | '\t' | '\n' | '\r') => Ok(marks),
            Expect::Done | Expect::Number(_) => Err(()),
            Expect::ValueOrClose if c == ']' => self.close(Container::Array, marks),
            Expect::Value | Expect::ValueOrClose => {
                marks.start = Some(depth);
                self.expect = match c {
                    '{' => {
                        self.stack.push(Container::Object);
                        Expect::KeyOrClose
                    }
                    '[' => {
                        self.stack.push(Container::Array);
                        Expect::ValueOrClose
                    }
                    '"' => Expect::Str {
                        key: false,
                        escape: 0,
                    },
                    '-' => Expect::Number(Number::Minus),
                    '0' => Expect::Number(Number::Zero),
                    '1'..='9' => Expect::Number(Number::Int),
                    't' => Expect::Literal {
                        word: "true",
                        at: 1,
                    },
                    'f' => Expect::Literal {
                        word: "false",
                        at: 1,
                    },
                    'n' => Expect::Literal {
                        word: "null",
                        at: 1,
                    },
                    _ => return Err(()),
                };
                Ok(marks)
            }
            Expect::KeyOrClose | Expect::Key if c == '"' => {
                marks.key_start = Some(depth);
                self.expect = Expect::Str {
                    key: true,
                    escape: 0,
                };
                Ok(marks)
            }
            Expect::KeyOrClose if c == '}' => self.close(Container::Object, marks),
            Expect::Colon if c == ':' => {
                self.expect = Expect::Value;
                Ok(marks)
            }
            Expect::After if c == ',' => {
                self.expect = match self.stack.last() {
                    Some(Container::Object) => Expect::Key,
                    _ => Expect::Value,
                };
                Ok(marks)
            }
            Expect::After if c == '}' => self.close(Container::Object, marks),
            Expect::After if c == ']' => self.close(Container::Array, marks),
            _ => Err(()),
        }
    }

    fn close(&mut self, container: Container, mut marks: Marks) -> Result<Marks, ()> {
        if self.stack.pop() != Some(container) {
            return Err(());
        }
        marks.end = Some(self.stack.len());
        self.expect = self.after_value();
        Ok(marks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ToolCallFormat::{Hermes, Llama3Json};

    /// The events of one reply with consecutive content and arguments of one call merged,
    /// so that replies cut differently compare equal.
    fn normalize(events: Vec<ToolCallEvent>) -> Vec<ToolCallEvent> {
        let mut out = Events::default();
        for event in events {
            match event {
                ToolCallEvent::Content(text) => {
                    assert!(!text.is_empty(), "empty content event");
                    out.content(&text)
                }
                ToolCallEvent::Arguments { index, delta } => {
                    assert!(!delta.is_empty(), "empty arguments event");
                    out.arguments(index, &delta)
                }
                other => out.0.push(other),
            }
        }
        out.0
    }

    #[derive(Debug, PartialEq)]
    struct Outcome {
        events: Vec<ToolCallEvent>,
        content: String,
        calls: Vec<ToolCall>,
    }

    fn parser(format: ToolCallFormat) -> ToolCallParser {
        ToolCallParser::new(format).with_id_prefix("call_")
    }

    fn stream_with(mut parser: ToolCallParser, parts: &[&str]) -> Outcome {
        let mut events = Vec::new();
        for part in parts {
            events.extend(parser.push(part));
        }
        events.extend(parser.finish());
        let events = normalize(events);
        let mut content = String::new();
        let mut assembled: Vec<(String, String, String)> = Vec::new();
        let mut open = Vec::new();
        for event in &events {
            match event {
                ToolCallEvent::Content(text) => content.push_str(text),
                ToolCallEvent::Started { index, id, name } => {
                    assert_eq!(*index, assembled.len(), "calls start in order");
                    assembled.push((id.clone(), name.clone(), String::new()));
                    open.push(*index);
                }
                ToolCallEvent::Arguments { index, delta } => {
                    assert!(open.contains(index), "arguments of a call not open");
                    assembled[*index].2.push_str(delta);
                }
                ToolCallEvent::Ended { index } => {
                    assert_eq!(open.pop(), Some(*index), "ended a call not open");
                }
            }
        }
        assert!(open.is_empty(), "calls left open after finish: {events:?}");
        let calls = parser.into_calls();
        let from_events: Vec<(String, String, String)> = calls
            .iter()
            .map(|c| (c.id.clone(), c.name.clone(), c.arguments.clone()))
            .collect();
        assert_eq!(assembled, from_events, "events and calls agree");
        Outcome {
            events,
            content,
            calls,
        }
    }

    fn stream(format: ToolCallFormat, parts: &[&str]) -> Outcome {
        stream_with(parser(format), parts)
    }

    fn one_shot(format: ToolCallFormat, text: &str) -> (String, Vec<(String, String)>) {
        let outcome = stream(format, &[text]);
        let parsed = parse_tool_calls(format, text);
        assert_eq!(parsed.content, outcome.content);
        assert_eq!(parsed.calls.len(), outcome.calls.len());
        let calls: Vec<(String, String)> = outcome
            .calls
            .iter()
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect();
        for (call, (name, arguments)) in parsed.calls.iter().zip(&calls) {
            assert_eq!((&call.name, &call.arguments), (name, arguments));
            assert!(
                call.id.starts_with("call_") && call.id.len() == 29,
                "{}",
                call.id
            );
        }
        (outcome.content, calls)
    }

    fn calls(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect()
    }

    fn boundaries(text: &str) -> Vec<usize> {
        (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect()
    }

    /// Every 2- and 3-way split at character boundaries, and one character at a time, gives
    /// the events of the reply fed whole.
    fn assert_split_invariant(format: ToolCallFormat, text: &str) {
        let expected = stream(format, &[text]);
        let cuts = boundaries(text);
        for &i in &cuts {
            let got = stream(format, &[&text[..i], &text[i..]]);
            assert_eq!(got, expected, "split at {i} of {text:?}");
            for &j in cuts.iter().filter(|&&j| j >= i) {
                let got = stream(format, &[&text[..i], &text[i..j], &text[j..]]);
                assert_eq!(got, expected, "split at {i}, {j} of {text:?}");
            }
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let parts: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(stream(format, &parts), expected, "char by char: {text:?}");
    }

    const HERMES_CASES: &[&str] = &[
        "",
        "Plain answer.",
        "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"x\": [1, 2.5e-3, true, null]}}\n</tool_call>\n",
        "<tool_call>{\"arguments\": {\"q\": \"x\"}, \"name\": \"search\"}</tool_call>",
        "<tool_call>{\"name\": \"now\"}</tool_call>",
        "<tool_call>{\"name\": \"f\", \"parameters\": {\"a\": -0.5}}</tool_call>",
        "<tool_call>\nnot json\n</tool_call> then text",
        "<tool_call>{\"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": 5, \"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>",
        "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": ",
        "<tool_call>{\"name\":\"f\",\"arguments\":{\"a\":1 x}}</tool_call>after",
        "<tool_call>{\"name\": \"日本\\u00e9\\ud83e\\udd80\", \"arguments\": {\"t\": \"🦀 é\\n\\\"q\\\"\"}}</tool_call>",
        "<tool_call>{\"name\":\"echo\",\"arguments\":{\"text\":\"<tool_call></tool_call>\"}}</tool_call>",
        "hello <tool_c",
        "<<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>",
        "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>\n\nDone.  \n",
        "<tool_call>{\"name\":\"f\",\"arguments\":{}}<tool_call>{\"name\":\"g\",\"arguments\":{}}</tool_call>",
        "<tool_call>{\"name\":\"f\",\"arguments\":{},\"id\":[1,{\"k\":false}],\"name\":\"g\"}</tool_call>",
        "<tool_call>{\"name\":\"\",\"arguments\":{}}</tool_call>",
        "<tool_call>{\"name\":\"f\",\"arguments\":{\"n\":01}}</tool_call>",
        "<tool_call>{\"name\":\"f\",\"arguments\":{\"n\":1}}</tool_call junk",
        "<tool_call>[{\"name\":\"f\"}]</tool_call>",
        "</tool_call><tool_call>",
    ];

    const LLAMA_CASES: &[&str] = &[
        "",
        "Plain answer.",
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        "\n\n <|python_tag|> {\"name\": \"f\", \"arguments\": {}}",
        "{\"answer\": 42}",
        "{\"name\": \"Bob\", \"age\": 3}",
        "{\"name\": \"f\"}",
        "Sure! {\"name\": \"f\", \"parameters\": {}}",
        "{\"name\": \"a\", \"parameters\": {\"x\": 1}}; {\"name\": \"b\", \"parameters\": {\"y\": [true]}}",
        "{\"type\": \"function\", \"name\": \"f\", \"parameters\": {\"z\": \"日本 🦀\"}}",
        "<|python_tag|>brave_search.call(query=\"x\")",
        "<|python_",
        "{\"name\": \"f\", \"parameters\": {}} and some text",
        "{\"name\": \"f\", \"parameters\": {\"a\": tru",
        "{\"name\": \"f\", \"parameters\": {}}; {\"oops\": 1}",
        "{\"parameters\": {\"x\": {}}, \"name\": \"f\"}",
        "{\"name\": \"f\", \"parameters\": {\"s\": \"\\u12\"}}",
    ];

    #[test]
    fn every_split_matches_one_shot() {
        for text in HERMES_CASES {
            assert_split_invariant(Hermes, text);
        }
        for text in LLAMA_CASES {
            assert_split_invariant(Llama3Json, text);
        }
    }

    #[test]
    fn hermes_calls_after_text() {
        let (content, found) = one_shot(Hermes, HERMES_CASES[2]);
        assert_eq!(content, "Let me check.\n");
        assert_eq!(found, calls(&[("get_weather", r#"{"city": "Paris"}"#)]));
    }

    #[test]
    fn hermes_several_calls_and_whitespace_between() {
        let (content, found) = one_shot(Hermes, HERMES_CASES[3]);
        assert_eq!(content, "");
        assert_eq!(
            found,
            calls(&[("a", "{}"), ("b", r#"{"x": [1, 2.5e-3, true, null]}"#)])
        );
        let (content, _) = one_shot(Hermes, HERMES_CASES[17]);
        assert_eq!(content, "\n\nDone.");
    }

    #[test]
    fn hermes_keys_in_any_order_and_optional_arguments() {
        assert_eq!(
            one_shot(Hermes, HERMES_CASES[4]),
            (String::new(), calls(&[("search", r#"{"q": "x"}"#)]))
        );
        assert_eq!(
            one_shot(Hermes, HERMES_CASES[5]),
            (String::new(), calls(&[("now", "{}")]))
        );
        assert_eq!(
            one_shot(Hermes, HERMES_CASES[6]),
            (String::new(), calls(&[("f", r#"{"a": -0.5}"#)]))
        );
        // Later duplicates and unknown keys are skipped.
        assert_eq!(
            one_shot(Hermes, HERMES_CASES[19]),
            (String::new(), calls(&[("f", "{}")]))
        );
    }

    #[test]
    fn malformed_hermes_blocks_are_content() {
        for &i in &[7, 8, 9, 10, 20, 23, 24] {
            let text = HERMES_CASES[i];
            assert_eq!(one_shot(Hermes, text), (text.to_string(), vec![]), "{text}");
        }
        assert_eq!(
            one_shot(Hermes, "hello <tool_c"),
            ("hello <tool_c".into(), vec![])
        );
        assert_eq!(
            one_shot(Hermes, "<tool_call>{\"name\":\"f\"}</tool_call>\n<tool_c"),
            ("\n<tool_c".into(), calls(&[("f", "{}")]))
        );
        // A bad number (`01`) breaks the call after it was committed: it keeps what it had.
        assert_eq!(
            one_shot(Hermes, HERMES_CASES[21]),
            (String::new(), calls(&[("f", r#"{"n":0"#)]))
        );
    }

    #[test]
    fn cut_off_and_broken_calls_keep_their_arguments() {
        assert_eq!(
            one_shot(Hermes, HERMES_CASES[11]),
            (String::new(), calls(&[("f", r#"{"a": "#)]))
        );
        // The rest of a broken block is dropped up to its closing tag.
        assert_eq!(
            one_shot(Hermes, HERMES_CASES[12]),
            ("after".into(), calls(&[("f", r#"{"a":1 "#)]))
        );
        // A missing close tag before the next call.
        assert_eq!(
            one_shot(Hermes, HERMES_CASES[18]),
            (String::new(), calls(&[("f", "{}"), ("g", "{}")]))
        );
        // Text after the object that is not the close tag is content.
        assert_eq!(
            one_shot(Hermes, HERMES_CASES[22]),
            ("</tool_call junk".into(), calls(&[("f", r#"{"n":1}"#)]))
        );
    }

    #[test]
    fn unicode_and_escapes() {
        assert_eq!(
            one_shot(Hermes, HERMES_CASES[13]),
            (
                String::new(),
                calls(&[("日本é🦀", r#"{"t": "🦀 é\n\"q\""}"#)])
            )
        );
        assert_eq!(
            one_shot(Hermes, HERMES_CASES[14]),
            (
                String::new(),
                calls(&[("echo", r#"{"text":"<tool_call></tool_call>"}"#)])
            )
        );
        assert_eq!(
            decode_string(r#""\ud800x\udc00\u0041""#),
            "\u{fffd}x\u{fffd}A"
        );
        assert_eq!(decode_string(r#""\ud83e\ud83e\udd80""#), "\u{fffd}🦀");
    }

    #[test]
    fn tag_prefixes_are_held_only_as_long_as_needed() {
        let mut p = parser(Hermes);
        assert_eq!(p.push("a <"), [ToolCallEvent::Content("a ".into())]);
        assert_eq!(p.push("tool"), []);
        assert_eq!(p.push("s"), [ToolCallEvent::Content("<tools".into())]);
        assert_eq!(p.push("<<"), [ToolCallEvent::Content("<".into())]);
        assert_eq!(p.finish(), [ToolCallEvent::Content("<".into())]);
    }

    #[test]
    fn arguments_stream_as_they_arrive() {
        let mut p = parser(Hermes);
        assert_eq!(p.push("<tool_call>{\"name\": \"f\", "), []);
        assert_eq!(
            p.push("\"arguments\": {\"a\""),
            [
                ToolCallEvent::Started {
                    index: 0,
                    id: "call_0".into(),
                    name: "f".into()
                },
                ToolCallEvent::Arguments {
                    index: 0,
                    delta: "{\"a\"".into()
                },
            ]
        );
        assert_eq!(
            p.push(": 1}"),
            [ToolCallEvent::Arguments {
                index: 0,
                delta: ": 1}".into()
            }]
        );
        assert_eq!(p.push("}"), [ToolCallEvent::Ended { index: 0 }]);
        assert_eq!(p.push("\n</tool_call>"), []);
        assert_eq!(p.finish(), []);
        assert_eq!(p.calls()[0].arguments, "{\"a\": 1}");
    }

    #[test]
    fn offered_names_only() {
        let text = "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>";
        let only =
            |format, text| stream_with(parser(format).with_tool_names(["get_weather"]), &[text]);
        let outcome = only(Hermes, text);
        assert_eq!((outcome.content.as_str(), outcome.calls.len()), (text, 0));
        let ok = "<tool_call>{\"name\": \"get_weather\", \"arguments\": {}}</tool_call>";
        assert_eq!(only(Hermes, ok).calls.len(), 1);
        let outcome = only(Llama3Json, "{\"name\": \"Bob\", \"parameters\": {}}");
        assert_eq!(outcome.calls.len(), 0);
    }

    #[test]
    fn llama_calls() {
        let weather = calls(&[("get_weather", r#"{"city": "Paris"}"#)]);
        assert_eq!(
            one_shot(Llama3Json, LLAMA_CASES[2]),
            (String::new(), weather.clone())
        );
        assert_eq!(
            one_shot(Llama3Json, LLAMA_CASES[3]),
            (String::new(), weather)
        );
        assert_eq!(
            one_shot(Llama3Json, LLAMA_CASES[4]),
            (String::new(), calls(&[("f", "{}")]))
        );
        assert_eq!(
            one_shot(Llama3Json, LLAMA_CASES[9]),
            (
                String::new(),
                calls(&[("a", r#"{"x": 1}"#), ("b", r#"{"y": [true]}"#)])
            )
        );
        assert_eq!(
            one_shot(Llama3Json, LLAMA_CASES[10]),
            (String::new(), calls(&[("f", r#"{"z": "日本 🦀"}"#)]))
        );
        assert_eq!(
            one_shot(Llama3Json, LLAMA_CASES[13]),
            (" and some text".into(), calls(&[("f", "{}")]))
        );
        assert_eq!(
            one_shot(Llama3Json, LLAMA_CASES[16]),
            (String::new(), calls(&[("f", r#"{"x": {}}"#)]))
        );
    }

    #[test]
    fn llama_json_answers_and_text_are_content() {
        for &i in &[1, 5, 6, 7, 8, 11, 12] {
            let text = LLAMA_CASES[i];
            assert_eq!(
                one_shot(Llama3Json, text),
                (text.to_string(), vec![]),
                "{text}"
            );
        }
        // Cut off inside the arguments: the call keeps them.
        assert_eq!(
            one_shot(Llama3Json, LLAMA_CASES[14]),
            (String::new(), calls(&[("f", r#"{"a": tru"#)]))
        );
        // A second object that is not a call is content.
        assert_eq!(
            one_shot(Llama3Json, LLAMA_CASES[15]),
            ("; {\"oops\": 1}".into(), calls(&[("f", "{}")]))
        );
        // A bad escape breaks the call after it was committed.
        assert_eq!(
            one_shot(Llama3Json, LLAMA_CASES[17]),
            ("\"}}".into(), calls(&[("f", r#"{"s": "\u12"#)]))
        );
    }

    #[test]
    fn a_json_answer_is_released_as_soon_as_it_is_not_a_call() {
        let mut p = parser(Llama3Json);
        assert_eq!(p.push("{\"answ"), []);
        assert_eq!(
            p.push("er\": 4"),
            [ToolCallEvent::Content("{\"answer\": 4".into())]
        );
        assert_eq!(p.push("2}"), [ToolCallEvent::Content("2}".into())]);
    }

    #[test]
    fn pushing_after_finish_is_content() {
        let mut p = parser(Hermes);
        p.finish();
        assert_eq!(
            p.push("<tool_call>"),
            [ToolCallEvent::Content("<tool_call>".into())]
        );
    }

    #[test]
    fn random_ids_differ() {
        let text = "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>".repeat(2);
        let a = parse_tool_calls(Hermes, &text);
        let b = parse_tool_calls(Hermes, &text);
        let ids: std::collections::BTreeSet<&str> = a
            .calls
            .iter()
            .chain(&b.calls)
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids.len(), 4, "{ids:?}");
        for id in ids {
            assert!(id.starts_with("call_") && id[5..].chars().all(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn a_reply_after_the_call_opening_reads_as_the_call() {
        let cases = [
            (
                Hermes,
                None,
                "get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
            ),
            (
                Hermes,
                Some("get_weather"),
                "{\"city\": \"Paris\"}}\n</tool_call>",
            ),
            (
                Llama3Json,
                None,
                "get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
            ),
            (Llama3Json, Some("get_weather"), "{\"city\": \"Paris\"}}"),
        ];
        for (format, name, rest) in cases {
            let reply = format!("{}{rest}", format.call_opening(name));
            let parsed = parse_tool_calls(format, &reply);
            assert_eq!(parsed.content, "", "{reply}");
            assert_eq!(parsed.calls.len(), 1, "{reply}");
            assert_eq!(parsed.calls[0].name, "get_weather");
            assert_eq!(parsed.calls[0].arguments, "{\"city\": \"Paris\"}");
        }
        // A name that needs escaping stays one JSON string.
        let opening = Hermes.call_opening(Some("a\"b\\c\n\u{1}"));
        assert_eq!(
            opening,
            "<tool_call>\n{\"name\": \"a\\\"b\\\\c\\n\\u0001\", \"arguments\": "
        );
        let parsed = parse_tool_calls(Hermes, &format!("{opening}{{}}}}\n</tool_call>"));
        assert_eq!(parsed.calls[0].name, "a\"b\\c\n\u{1}");
    }

    #[test]
    fn detect_format() {
        let qwen = "{%- if tools %}...<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call>";
        assert_eq!(ToolCallFormat::detect(qwen), Some(Hermes));
        let llama31 = "{{- \"<|python_tag|>\" + tool_call.name }}";
        assert_eq!(ToolCallFormat::detect(llama31), Some(Llama3Json));
        let llama32 = "{{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}{%- elif message.role == \"tool\" or message.role == \"ipython\" %}";
        assert_eq!(ToolCallFormat::detect(llama32), Some(Llama3Json));
        assert_eq!(ToolCallFormat::detect("{\"parameters\": 1}"), None);
        assert_eq!(
            ToolCallFormat::detect("{% for m in messages %}<start_of_turn>{% endfor %}"),
            None
        );
    }

    /// The lexer accepts exactly what serde_json accepts, on valid and broken documents.
    #[test]
    fn lexer_agrees_with_serde_json() {
        let docs = [
            "{}",
            "[]",
            "0",
            "-0",
            "01",
            "1.",
            ".5",
            "1e5",
            "1E+5",
            "1e",
            "-",
            "--1",
            "2.5e-3",
            "true",
            "tru",
            "nul",
            "null",
            "\"a\\u00e9\"",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"\n\"",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":[{\"b\":null}]}",
            " { \"k\" : [ true , false ] } ",
            "[",
            "{\"a\":1",
            "\"🦀\"",
            "[1]]",
            "{\"a\":1}}",
            "[{]",
            "[}",
            "{]",
        ];
        for doc in docs {
            let mut lexer = Lexer::default();
            let ours = doc.chars().all(|c| lexer.step(c).is_ok())
                && match lexer.expect {
                    Expect::Done => true,
                    Expect::Number(n) => n.complete() && lexer.stack.is_empty(),
                    _ => false,
                };
            let theirs = serde_json::from_str::<serde_json::Value>(doc).is_ok();
            assert_eq!(ours, theirs, "{doc:?}");
        }
    }

    /// Arguments of calls that were closed properly are valid JSON objects.
    #[test]
    fn complete_arguments_are_json_objects() {
        for text in HERMES_CASES {
            let parsed = parse_tool_calls(Hermes, text);
            for call in parsed.calls.iter().filter(|c| c.arguments.ends_with('}')) {
                let value: serde_json::Value = serde_json::from_str(&call.arguments)
                    .unwrap_or_else(|e| panic!("{:?} in {text:?}: {e}", call.arguments));
                assert!(value.is_object());
            }
        }
    }

    /// Random replies made of call fragments, cut at random places: the same events as fed
    /// whole, and no panic.
    #[test]
    fn random_fragments() {
        const FRAGMENTS: &[&str] = &[
            "<tool_call>",
            "</tool_call>",
            "<|python_tag|>",
            "{",
            "}",
            "[",
            "]",
            "\"name\"",
            "\"arguments\"",
            "\"parameters\"",
            ":",
            ",",
            "\"f\"",
            "1",
            "\n",
            " ",
            "text",
            "<",
            "\\",
            "\"",
            "é",
            "🦀",
            ";",
            "null",
            "{\"name\": \"g\", \"arguments\": {\"a\": 1}}",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        for _ in 0..400 {
            let len = next(24);
            let text: String = (0..len).map(|_| FRAGMENTS[next(FRAGMENTS.len())]).collect();
            for format in [Hermes, Llama3Json] {
                let expected = stream(format, &[&text]);
                let cuts = boundaries(&text);
                let mut parts = Vec::new();
                let mut at = 0;
                while at < text.len() {
                    let end = cuts[cuts.partition_point(|&c| c <= at)..]
                        .get(next(4))
                        .copied()
                        .unwrap_or(text.len());
                    parts.push(&text[at..end]);
                    at = end;
                }
                assert_eq!(stream(format, &parts), expected, "{text:?} as {parts:?}");
            }
        }
    }
}
