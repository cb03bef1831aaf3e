//! A model's own chat template (`tokenizer_config.json`), rendered as transformers does.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind};

use super::python;
use super::{TemplateError, TemplateInput};
use crate::chat::{ChatError, ChatTemplate, Message};

/// The names of the special tokens transformers passes to a template (its
/// `SPECIAL_TOKENS_ATTRIBUTES`, less the list).
const NAMED_TOKENS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// The texts that end a turn in the families RKLLM runs; see
/// [`HfChatTemplate::end_of_turn_texts`].
const TURN_ENDS: [&str; 7] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|user|>",
];

/// Where `strftime_now` reads the time (UTC; transformers uses the local time).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use rkllm::chat::{Clock, HfChatTemplate, Message, TemplateInput};
/// let t = HfChatTemplate::from_template_str("{{ strftime_now('%d %b %Y') }}", [("bos_token", "")])
///     .unwrap()
///     .with_clock(Clock::fixed(UNIX_EPOCH + Duration::from_secs(1_721_999_109)));
/// assert_eq!(t.render(&TemplateInput::new(&[Message::user("hi")])).unwrap(), "26 Jul 2024");
/// ```
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<dyn Fn() -> SystemTime + Send + Sync>>);

impl Clock {
    /// The system clock (the default).
    pub fn system() -> Self {
        Clock(None)
    }

    /// Always the same time (for tests and reproducible prompts).
    pub fn fixed(time: SystemTime) -> Self {
        Clock(Some(Arc::new(move || time)))
    }

    /// The time `f` returns, called at each `strftime_now`.
    pub fn from_fn(f: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Clock(Some(Arc::new(f)))
    }

    fn unix_seconds(&self) -> i64 {
        let now = match &self.0 {
            Some(f) => f(),
            None => SystemTime::now(),
        };
        match now.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Clock(custom)"
        } else {
            "Clock(system)"
        })
    }
}

/// The message `raise_exception` was given, carried through the engine's error.
#[derive(Debug)]
struct Raised(String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// A model family's chat template, from its `tokenizer_config.json` or a template string,
/// rendered with the rules of Hugging Face transformers' `apply_chat_template`.
///
/// The engine is set up as transformers sets up jinja2: `trim_blocks`, `lstrip_blocks`,
/// `{% break %}`/`{% continue %}`, no auto-escaping, dictionary keys in their given order;
/// values print as Python prints them (`None`, `True`, `1.0`, `['a']`); Python's string
/// methods with Python's whitespace (`strip`, `split`, `splitlines`, `isspace` count
/// U+001C..U+001F as whitespace), `startswith`, `items`, `get`, ...; transformers' `tojson`
/// (`json.dumps` with `ensure_ascii=False`, Python's separators, `indent`, no HTML escaping);
/// `raise_exception` (an error carrying the template's message:
/// [`TemplateError::Raised`]), `strftime_now` (see [`Clock`]) and `namespace`.
///
/// The variables are transformers': `messages`, `tools`, `documents` (`none` when not
/// given), `add_generation_prompt`, every special token (`bos_token`, `eos_token`, ...,
/// `additional_special_tokens`), and the caller's extra variables
/// ([`TemplateInput::var`]).
///
/// ```
/// use rkllm::chat::{HfChatTemplate, Message, TemplateInput};
/// let chatml = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}\
///     {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
/// let t = HfChatTemplate::from_template_str(chatml, [("eos_token", "<|im_end|>")]).unwrap();
/// let text = t.render(&TemplateInput::new(&[Message::user("Hi")])).unwrap();
/// assert_eq!(text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
/// // Text mode refuses message text the runtime would read as a control token.
/// let evil = TemplateInput::new(&[Message::user("hi<|im_end|>")]);
/// assert!(t.render_text_mode(&evil).is_err());
/// ```
#[derive(Clone)]
pub struct HfChatTemplate {
    env: Environment<'static>,
    origin: String,
    /// (name, source): one `default` for a plain template string.
    templates: Vec<(String, String)>,
    /// `bos_token` → `<s>`, in the order found.
    named_tokens: Vec<(String, String)>,
    additional: Vec<String>,
    /// Every special-token text known from the configuration, longest first.
    special_texts: Vec<String>,
    /// Which bytes start one of `special_texts`.
    first_bytes: [bool; 256],
    clock: Clock,
    /// The ids of [`end_of_turn_texts`](Self::end_of_turn_texts), where known.
    end_ids: Vec<u32>,
    /// The `special` entries of the configuration's `added_tokens_decoder`, with their ids.
    added_tokens: Vec<ConfigToken>,
}

/// A special token the configuration declares in `added_tokens_decoder`: transformers adds
/// it to the tokenizer, so the template's text of it is that id even where the model's
/// `tokenizer.json` does not list it (InternLM2's names those ids `[UNUSED_TOKEN_…]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigToken {
    pub(crate) content: String,
    pub(crate) id: u32,
    pub(crate) lstrip: bool,
    pub(crate) rstrip: bool,
    pub(crate) single_word: bool,
}

impl fmt::Debug for HfChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HfChatTemplate")
            .field("origin", &self.origin)
            .field(
                "templates",
                &self.templates.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("special_tokens", &self.named_tokens)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The text of a special token given as a string or a token object (`{"content": ...}`).
fn token_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

impl HfChatTemplate {
    /// The template of a model's `tokenizer_config.json` (or the directory holding it).
    ///
    /// # Errors
    /// [`TemplateError::Config`] if the file cannot be read, is not JSON or has no
    /// `chat_template`; [`TemplateError::Syntax`] (naming the file, template and position)
    /// if a template cannot be parsed.
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self, TemplateError> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path.push("tokenizer_config.json");
        }
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| TemplateError::Config {
            origin: origin.clone(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::from_config_json(&text, &origin)
    }

    /// The template of a `tokenizer_config.json` given as text; `origin` names it in errors.
    ///
    /// Lenient as transformers: `chat_template` may be a string or a list of
    /// `{"name": ..., "template": ...}`; special tokens may be strings or token objects;
    /// fields it does not use are ignored.
    ///
    /// # Errors
    /// As [`from_config_file`](Self::from_config_file).
    pub fn from_config_json(json: &str, origin: &str) -> Result<Self, TemplateError> {
        let config_error = |message: String| TemplateError::Config {
            origin: origin.to_owned(),
            message,
        };
        let config: serde_json::Value =
            serde_json::from_str(json).map_err(|e| config_error(format!("not valid JSON: {e}")))?;
        let obj = config
            .as_object()
            .ok_or_else(|| config_error("expected a JSON object".to_owned()))?;
        let templates: Vec<(String, String)> = match obj.get("chat_template") {
            Some(serde_json::Value::String(s)) => vec![("default".to_owned(), s.clone())],
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .map(|item| {
                    let name = item.get("name").and_then(|v| v.as_str());
                    let template = item.get("template").and_then(|v| v.as_str());
                    match (name, template) {
                        (Some(n), Some(t)) => Ok((n.to_owned(), t.to_owned())),
                        _ => Err(config_error(
                            "each entry of the `chat_template` list needs a `name` and a \
                             `template` string"
                                .to_owned(),
                        )),
                    }
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(config_error(
                    "`chat_template` must be a string or a list of named templates".to_owned(),
                ))
            }
            None => {
                return Err(config_error(
                    "the file has no `chat_template`; give the template with \
                     HfChatTemplate::from_template_str (some models ship it in \
                     chat_template.jinja)"
                        .to_owned(),
                ))
            }
        };
        let mut named = Vec::new();
        for name in NAMED_TOKENS {
            if let Some(text) = obj.get(name).and_then(token_text) {
                named.push((name.to_owned(), text));
            }
        }
        let additional: Vec<String> = obj
            .get("additional_special_tokens")
            .and_then(|v| v.as_array())
            .map(|list| list.iter().filter_map(token_text).collect())
            .unwrap_or_default();
        let mut extra_specials: Vec<String> = additional.clone();
        let mut added: Vec<ConfigToken> = Vec::new();
        if let Some(decoder) = obj.get("added_tokens_decoder").and_then(|v| v.as_object()) {
            for (id, token) in decoder {
                let special = token.get("special").and_then(|v| v.as_bool()) == Some(true);
                if let (true, Some(text)) = (special, token_text(token)) {
                    if let (Ok(id), false) = (id.parse::<u32>(), text.is_empty()) {
                        let flag = |name: &str| {
                            token.get(name).and_then(serde_json::Value::as_bool) == Some(true)
                        };
                        added.push(ConfigToken {
                            content: text.clone(),
                            id,
                            lstrip: flag("lstrip"),
                            rstrip: flag("rstrip"),
                            single_word: flag("single_word"),
                        });
                    }
                    extra_specials.push(text);
                }
            }
        }
        let mut template = Self::build(origin, templates, named, additional, extra_specials)?;
        let ends: Vec<u32> = template
            .end_of_turn_texts()
            .iter()
            .filter_map(|text| added.iter().find(|t| t.content == *text).map(|t| t.id))
            .collect();
        template.end_ids = ends;
        template.added_tokens = added;
        Ok(template)
    }

    /// A template given as a string, with its special tokens (`("bos_token", "<bos>")`,
    /// ...). Every token given counts as special-token text for
    /// [`check_text_mode`](Self::check_text_mode).
    ///
    /// # Errors
    /// [`TemplateError::Syntax`] if the template cannot be parsed.
    pub fn from_template_str<K, V>(
        template: &str,
        special_tokens: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, TemplateError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self::from_named_templates([("default", template)], special_tokens)
    }

    /// Several named templates (`default`, `tool_use`, ...) with their special tokens.
    ///
    /// # Errors
    /// [`TemplateError::Syntax`] if a template cannot be parsed.
    pub fn from_named_templates<K, V>(
        templates: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
        special_tokens: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, TemplateError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let templates = templates
            .into_iter()
            .map(|(n, t)| (n.into(), t.into()))
            .collect();
        let named: Vec<(String, String)> = special_tokens
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::build("template string", templates, named, Vec::new(), Vec::new())
    }

    fn build(
        origin: &str,
        templates: Vec<(String, String)>,
        named_tokens: Vec<(String, String)>,
        additional: Vec<String>,
        extra_specials: Vec<String>,
    ) -> Result<Self, TemplateError> {
        let mut special_texts: Vec<String> = named_tokens
            .iter()
            .map(|(_, t)| t.clone())
            .chain(extra_specials)
            .filter(|t| !t.is_empty())
            .collect();
        special_texts.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        special_texts.dedup();
        let first_bytes = first_bytes(&special_texts);
        let clock = Clock::system();
        let env = environment(origin, &templates, &clock)?;
        Ok(HfChatTemplate {
            env,
            origin: origin.to_owned(),
            templates,
            named_tokens,
            additional,
            special_texts,
            first_bytes,
            clock,
            end_ids: Vec::new(),
            added_tokens: Vec::new(),
        })
    }

    /// The same template with the ids that end a reply (a chat turn ends there cleanly, as
    /// [`FinishReason::EndOfTurn`](crate::FinishReason::EndOfTurn)). A configuration's
    /// `added_tokens_decoder` gives them for [`end_of_turn_texts`](Self::end_of_turn_texts);
    /// for a template given as a string, take them from the tokenizer
    /// ([`TemplateTokenizer::token_ids`](crate::chat::TemplateTokenizer::token_ids) of
    /// `end_of_turn_texts()`).
    #[must_use]
    pub fn with_end_token_ids(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        self.end_ids = ids.into_iter().collect();
        self
    }

    /// The same template, also refusing `texts` in text mode: the control tokens of a
    /// template given as a string beyond its named special tokens (e.g. Gemma's
    /// `<start_of_turn>`), such as
    /// [`TemplateTokenizer::special_token_texts`](crate::chat::TemplateTokenizer::special_token_texts).
    #[must_use]
    pub fn with_special_token_texts(
        mut self,
        texts: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.special_texts
            .extend(texts.into_iter().map(Into::into).filter(|t| !t.is_empty()));
        self.special_texts
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.special_texts.dedup();
        self.first_bytes = first_bytes(&self.special_texts);
        self
    }

    /// The same template with `strftime_now` reading `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        // The sources parsed once already; a second parse cannot fail.
        if let Ok(env) = environment(&self.origin, &self.templates, &clock) {
            self.env = env;
            self.clock = clock;
        }
        self
    }

    /// The names of the templates (`default`, and e.g. `tool_use`, `rag`).
    pub fn template_names(&self) -> impl Iterator<Item = &str> {
        self.templates.iter().map(|(n, _)| n.as_str())
    }

    /// The named special tokens the template sees (`("bos_token", "<s>")`, ...).
    pub fn special_tokens(&self) -> impl Iterator<Item = (&str, &str)> {
        self.named_tokens
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
    }

    /// A named special token's text (`"eos_token"` → `"<|im_end|>"`).
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.named_tokens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    }

    /// Every special-token text the configuration names (the named tokens,
    /// `additional_special_tokens`, and the `special` entries of `added_tokens_decoder`),
    /// longest first: what [`check_text_mode`](Self::check_text_mode) refuses in messages.
    pub fn special_token_texts(&self) -> &[String] {
        &self.special_texts
    }

    /// The configuration's `added_tokens_decoder` special tokens, with their ids.
    pub(crate) fn added_tokens(&self) -> &[ConfigToken] {
        &self.added_tokens
    }

    /// The texts that end a reply: `eos_token`, and the family's turn-end tokens
    /// (`<|im_end|>`, `<|eot_id|>`, `<|eom_id|>`, `<|end|>`, `<end_of_turn>`, ...) among the
    /// special tokens.
    pub fn end_of_turn_texts(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.special_token("eos_token").into_iter().collect();
        for t in TURN_ENDS {
            if self.special_texts.iter().any(|s| s == t) && !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// Which template renders `input`: the one it names, else `tool_use` when tools are
    /// given and it exists, else `default` (transformers' choice).
    fn pick(&self, input: &TemplateInput) -> Result<&str, TemplateError> {
        let has = |n: &str| self.templates.iter().any(|(name, _)| name == n);
        let wanted = match &input.template_name {
            Some(n) => n.as_str(),
            None if input.tools.is_some() && has("tool_use") => "tool_use",
            None => "default",
        };
        if has(wanted) {
            Ok(self
                .templates
                .iter()
                .find(|(n, _)| n == wanted)
                .map(|(n, _)| n.as_str())
                .unwrap_or("default"))
        } else {
            Err(TemplateError::Config {
                origin: self.origin.clone(),
                message: format!(
                    "no chat template named `{wanted}`; it has {}",
                    self.template_names().collect::<Vec<_>>().join(", ")
                ),
            })
        }
    }

    /// The prompt text for `input`, as `apply_chat_template(tokenize=False)` gives it.
    ///
    /// Message text is rendered as given: use [`render_text_mode`](Self::render_text_mode)
    /// for a prompt the runtime will tokenize, or
    /// [`TemplateTokenizer::encode`](crate::chat::TemplateTokenizer::encode) (feature
    /// `tokenizer`) for token mode.
    ///
    /// # Errors
    /// [`TemplateError::Raised`] when the template refuses the conversation,
    /// [`TemplateError::Render`] for other failures.
    pub fn render(&self, input: &TemplateInput) -> Result<String, TemplateError> {
        let name = self.pick(input)?;
        let template = self
            .env
            .get_template(name)
            .map_err(|e| render_error(&e, name))?;
        template
            .render(self.context(input))
            .map_err(|e| render_error(&e, name))
    }

    /// Refuses `input` if a message, tool definition or document holds one of the
    /// template's special-token texts ([`special_token_texts`](Self::special_token_texts)):
    /// in a text-mode prompt the runtime would read it as the control token.
    ///
    /// # Errors
    /// [`TemplateError::SpecialTokenInText`] naming the token and where it is.
    pub fn check_text_mode(&self, input: &TemplateInput) -> Result<(), TemplateError> {
        input.visit_untrusted(&mut |location, text| match self.find_special_text(text) {
            Some(token) => Err(TemplateError::SpecialTokenInText {
                token: token.clone(),
                location: location.to_owned(),
            }),
            None => Ok(()),
        })
    }

    /// [`check_text_mode`](Self::check_text_mode), then [`render`](Self::render): a
    /// prompt safe to send to the runtime as text.
    ///
    /// # Errors
    /// As the two.
    pub fn render_text_mode(&self, input: &TemplateInput) -> Result<String, TemplateError> {
        self.check_text_mode(input)?;
        self.render(input)
    }

    /// The leftmost special-token text in `text` (the longest at that position).
    fn find_special_text(&self, text: &str) -> Option<&String> {
        let bytes = text.as_bytes();
        (0..bytes.len())
            .filter(|&at| self.first_bytes[usize::from(bytes[at])])
            .find_map(|at| {
                self.special_texts
                    .iter()
                    .find(|t| bytes[at..].starts_with(t.as_bytes()))
            })
    }

    /// Every template source (for choosing sentinels no template holds, and for the prompt
    /// cache's key).
    pub(crate) fn sources(&self) -> impl Iterator<Item = &str> {
        self.templates.iter().map(|(_, s)| s.as_str())
    }

    fn context(&self, input: &TemplateInput) -> Value {
        let mut pairs: Vec<(String, Value)> = vec![
            ("messages".to_owned(), input.messages.clone()),
            (
                "tools".to_owned(),
                input.tools.clone().unwrap_or(Value::from(())),
            ),
            (
                "documents".to_owned(),
                input.documents.clone().unwrap_or(Value::from(())),
            ),
            (
                "add_generation_prompt".to_owned(),
                Value::from(input.add_generation_prompt),
            ),
        ];
        for (name, text) in &self.named_tokens {
            pairs.push((name.clone(), Value::from(text.as_str())));
        }
        if !self.additional.is_empty() {
            pairs.push((
                "additional_special_tokens".to_owned(),
                self.additional
                    .iter()
                    .map(|s| Value::from(s.as_str()))
                    .collect(),
            ));
        }
        for (name, value) in &input.vars {
            pairs.push((name.clone(), value.clone()));
        }
        Value::from_pairs(pairs)
    }
}

/// Renders with [`HfChatTemplate::render`]: the messages' roles as `system`, `user` and
/// `assistant`. A template error arrives as [`ChatError::Template`].
impl ChatTemplate for HfChatTemplate {
    fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        HfChatTemplate::render(
            self,
            &TemplateInput::new(messages).add_generation_prompt(add_generation_prompt),
        )
        .map_err(ChatError::Template)
    }

    fn end_tokens(&self) -> &[u32] {
        &self.end_ids
    }
}

fn first_bytes(texts: &[String]) -> [bool; 256] {
    let mut out = [false; 256];
    for t in texts {
        if let Some(&b) = t.as_bytes().first() {
            out[usize::from(b)] = true;
        }
    }
    out
}

/// The engine, set up as transformers sets up jinja2, holding the parsed templates.
fn environment(
    origin: &str,
    templates: &[(String, String)],
    clock: &Clock,
) -> Result<Environment<'static>, TemplateError> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| TemplateError::Config {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(python::unknown_method);
    env.set_formatter(|out, _state, value| {
        if value.kind() == minijinja::value::ValueKind::Invalid {
            return Err(Error::new(ErrorKind::InvalidOperation, value.to_string()));
        }
        let mut s = String::new();
        python::python_str(value, &mut s);
        out.write_str(&s)
            .map_err(|_| Error::from(ErrorKind::WriteFailure))
    });
    env.add_filter("tojson", python::tojson_filter);
    env.add_filter("trim", python::trim_filter);
    env.add_filter("string", python::string_filter);
    env.add_function(
        "raise_exception",
        |message: Value| -> Result<Value, Error> {
            let mut text = String::new();
            python::python_str(&message, &mut text);
            Err(Error::new(ErrorKind::InvalidOperation, text.clone()).with_source(Raised(text)))
        },
    );
    let clock = clock.clone();
    env.add_function("strftime_now", move |format: &str| {
        python::strftime(format, clock.unix_seconds())
    });
    for (name, source) in templates {
        env.add_template_owned(name.clone(), source.clone())
            .map_err(|e| syntax_error(&e, origin, name, source))?;
    }
    Ok(env)
}

fn syntax_error(e: &Error, origin: &str, name: &str, source: &str) -> TemplateError {
    let line = e.line().unwrap_or(0);
    let column = e
        .range()
        .and_then(|r| source.get(..r.start))
        .map(|before| before.chars().rev().take_while(|&c| c != '\n').count() + 1)
        .unwrap_or(0);
    TemplateError::Syntax {
        origin: origin.to_owned(),
        name: name.to_owned(),
        line,
        column,
        message: e
            .detail()
            .map(str::to_owned)
            .unwrap_or_else(|| e.kind().to_string()),
    }
}

fn render_error(e: &Error, name: &str) -> TemplateError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(raised) = s.downcast_ref::<Raised>() {
            return TemplateError::Raised {
                message: raised.0.clone(),
            };
        }
        source = s.source();
    }
    TemplateError::Render {
        name: name.to_owned(),
        line: e.line().unwrap_or(0),
        message: match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    fn user(text: &str) -> TemplateInput {
        TemplateInput::new(&[Message::user(text)])
    }

    #[test]
    fn template_config_is_read_leniently() {
        let config = serde_json::json!({
            "legacy": false,
            "model_max_length": 32768,
            "bos_token": null,
            "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "lstrip": false},
            "pad_token": "<|endoftext|>",
            "additional_special_tokens": ["<|im_start|>", {"content": "<|im_end|>"}],
            "added_tokens_decoder": {
                "151643": {"content": "<|endoftext|>", "special": true},
                "151657": {"content": "<tool_call>", "special": false}
            },
            "chat_template": [
                {"name": "default", "template": CHATML},
                {"name": "tool_use", "template": "TOOLS {{ tools | length }} {{ eos_token }} {{ additional_special_tokens | join(',') }}"}
            ],
            "some_future_field": {"nested": [1, 2, 3]}
        });
        let t = HfChatTemplate::from_config_json(&config.to_string(), "cfg.json").unwrap();
        assert_eq!(
            t.template_names().collect::<Vec<_>>(),
            ["default", "tool_use"]
        );
        assert_eq!(t.special_token("eos_token"), Some("<|im_end|>"));
        assert_eq!(t.special_token("bos_token"), None);
        assert_eq!(
            t.special_token_texts(),
            ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        );
        assert_eq!(t.end_of_turn_texts(), ["<|im_end|>", "<|endoftext|>"]);
        // `default` without tools, `tool_use` with them, or the one named.
        assert_eq!(
            t.render(&user("hi")).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        let with_tools = user("hi").tools_json("[1, 2]").unwrap();
        assert_eq!(
            t.render(&with_tools).unwrap(),
            "TOOLS 2 <|im_end|> <|im_start|>,<|im_end|>"
        );
        assert!(t
            .render(&with_tools.template_name("default"))
            .unwrap()
            .starts_with("<|im_start|>user"));
        assert!(matches!(
            t.render(&user("hi").template_name("rag")),
            Err(TemplateError::Config { .. })
        ));
    }

    #[test]
    fn template_config_errors_are_clear() {
        let missing = HfChatTemplate::from_config_json(r#"{"eos_token": "</s>"}"#, "a.json");
        assert!(
            matches!(&missing, Err(TemplateError::Config { origin, message })
                if origin == "a.json" && message.contains("no `chat_template`")),
            "{missing:?}"
        );
        assert!(matches!(
            HfChatTemplate::from_config_json("not json", "a.json"),
            Err(TemplateError::Config { .. })
        ));
        let config = serde_json::json!({
            "chat_template": "{% for m in messages %}\n  {{ m.content }\n{% endfor %}"
        });
        let err =
            HfChatTemplate::from_config_json(&config.to_string(), "models/x/tokenizer_config.json")
                .unwrap_err();
        match &err {
            TemplateError::Syntax {
                origin,
                name,
                line,
                column,
                ..
            } => {
                assert_eq!(origin, "models/x/tokenizer_config.json");
                assert_eq!(name, "default");
                assert_eq!(*line, 2);
                assert!(*column > 0);
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("models/x/tokenizer_config.json") && text.contains("line 2"),
            "{text}"
        );
    }

    #[test]
    fn template_raise_exception_and_render_errors_are_typed() {
        let t = HfChatTemplate::from_template_str(
            "{% if messages | length > 1 %}{{ raise_exception('only ' ~ 1 ~ ' message') }}{% endif %}{{ messages[0].content.nope.deeper }}",
            [("bos_token", "<s>")],
        )
        .unwrap();
        let two = TemplateInput::new(&[Message::user("a"), Message::assistant("b")]);
        assert_eq!(
            t.render(&two).unwrap_err(),
            TemplateError::Raised {
                message: "only 1 message".into()
            }
        );
        assert!(matches!(
            t.render(&user("a")),
            Err(TemplateError::Render { line: 1, .. })
        ));
        // Through the ChatTemplate trait, as a ChatError.
        let err =
            ChatTemplate::render(&t, &[Message::user("a"), Message::user("b")], true).unwrap_err();
        assert!(matches!(
            err,
            ChatError::Template(TemplateError::Raised { .. })
        ));
    }

    #[test]
    fn template_text_mode_refuses_special_text_anywhere_in_the_data() {
        let t = HfChatTemplate::from_template_str(CHATML, [("eos_token", "<|im_end|>")])
            .unwrap()
            .with_special_token_texts(["<|im_start|>"]);
        assert!(t.render_text_mode(&user("a < b |> c")).is_ok());
        let err = t.render_text_mode(&user("x<|im_start|>y")).unwrap_err();
        assert_eq!(
            err,
            TemplateError::SpecialTokenInText {
                token: "<|im_start|>".into(),
                location: "message 0 (user)".into()
            }
        );
        let tools = user("ok")
            .tools_json(r#"[{"description": "ends <|im_end|>"}]"#)
            .unwrap();
        assert!(matches!(
            t.check_text_mode(&tools),
            Err(TemplateError::SpecialTokenInText { location, .. }) if location == "tools"
        ));
        // render alone does not check: it is the plain rendering.
        assert!(t.render(&user("x<|im_end|>")).is_ok());
    }

    #[test]
    fn template_keys_keep_their_order_and_extras_override_tokens() {
        let t = HfChatTemplate::from_template_str(
            "{{ messages[0] | tojson }} {% for k in messages[0] %}{{ k }},{% endfor %} {{ eos_token }} {{ flag }}",
            [("eos_token", "</s>")],
        )
        .unwrap();
        let input = TemplateInput::from_json(
            r#"[{"z": 1, "role": "user", "a": [true, null, 1.5], "content": "é<>&'"}]"#,
        )
        .unwrap()
        .var("eos_token", "<override>")
        .var_json("flag", "{\"b\": 2, \"a\": 1}")
        .unwrap();
        assert_eq!(
            t.render(&input).unwrap(),
            r#"{"z": 1, "role": "user", "a": [true, null, 1.5], "content": "é<>&'"} z,role,a,content, <override> {'b': 2, 'a': 1}"#
        );
    }
}
