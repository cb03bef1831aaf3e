//! The Gemma 2 prompt format and its four system styles.
//!
//! A template first builds a *plan*: the prompt as a list of structural special tokens and
//! the text between them. Text mode concatenates the plan; token mode (feature `tokenizer`)
//! inserts the special tokens as ids and encodes each text run whole. Because the real
//! tokenizer always splits its input at special tokens, both give the same ids whenever
//! message content holds no special-token text.

use super::strip::python_strip;
use super::{ChatError, Message, Role};
use crate::gemma;

/// A Gemma 2 control token the prompt format uses.
///
/// ```
/// use rkllm::chat::SpecialToken;
/// assert_eq!(SpecialToken::EndOfTurn.id(), 107);
/// assert_eq!(SpecialToken::StartOfTurn.text(), "<start_of_turn>");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialToken {
    /// `<bos>` (id 2), the start of every prompt.
    Bos,
    /// `<eos>` (id 1), ends a reply.
    Eos,
    /// `<start_of_turn>` (id 106).
    StartOfTurn,
    /// `<end_of_turn>` (id 107), ends a turn, including the model's reply.
    EndOfTurn,
}

impl SpecialToken {
    /// The token's id in the Gemma 2 vocabulary.
    pub const fn id(self) -> u32 {
        match self {
            SpecialToken::Bos => gemma::BOS,
            SpecialToken::Eos => gemma::EOS,
            SpecialToken::StartOfTurn => gemma::START_OF_TURN,
            SpecialToken::EndOfTurn => gemma::END_OF_TURN,
        }
    }

    /// The token's text, as written in a text-mode prompt.
    pub const fn text(self) -> &'static str {
        match self {
            SpecialToken::Bos => "<bos>",
            SpecialToken::Eos => "<eos>",
            SpecialToken::StartOfTurn => "<start_of_turn>",
            SpecialToken::EndOfTurn => "<end_of_turn>",
        }
    }
}

/// Token ids that end a Gemma 2 reply: `<end_of_turn>` (107) and `<eos>` (1).
///
/// With `skip_special_token` the runtime hides their text, so a caller watches the result's
/// `token_id` for these.
pub const STOP_TOKEN_IDS: [u32; 2] = gemma::END_TOKENS;

/// Where a system message goes. See the crate's Gemma 2 chat reference for the rules.
///
/// ```
/// use rkllm::chat::{Gemma2Template, Message, SystemStyle};
/// let msgs = [Message::system("You are a pirate."), Message::user("Hello")];
/// let merged = Gemma2Template::new(SystemStyle::Merge).render(&msgs, true).unwrap();
/// assert_eq!(
///     merged,
///     "<bos><start_of_turn>user\nYou are a pirate.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
/// );
/// assert!(Gemma2Template::new(SystemStyle::Strict).render(&msgs, true).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SystemStyle {
    /// Trimmed system text, a blank line, then the first user message, inside the first user
    /// turn (Google's documented way; without a system message equal to `Strict`). An empty
    /// system text adds nothing.
    #[default]
    Merge,
    /// Byte parity with the SystemGemma2 template: after `<bos>`, the system text
    /// **untrimmed** and one `\n`, then the turns. The system message is required.
    SystemGemma2,
    /// A literal `<start_of_turn>system` turn before the first user turn. Not trained into
    /// Gemma 2; for experiments and fine-tunes that use it.
    Turn,
    /// Byte parity with Hugging Face's official Gemma 2 template, quirks included: a system
    /// message first is an error, one at an odd index renders as a literal `system` turn.
    Strict,
}

impl SystemStyle {
    /// The style's name, as [`FromStr`](std::str::FromStr) reads it: `merge`,
    /// `systemgemma2`, `turn` or `strict`.
    pub const fn name(self) -> &'static str {
        match self {
            SystemStyle::Merge => "merge",
            SystemStyle::SystemGemma2 => "systemgemma2",
            SystemStyle::Turn => "turn",
            SystemStyle::Strict => "strict",
        }
    }
}

impl std::fmt::Display for SystemStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads a style name (case-insensitive), e.g. from a command line or a config file.
///
/// ```
/// use rkllm::chat::SystemStyle;
/// assert_eq!("SystemGemma2".parse::<SystemStyle>().unwrap(), SystemStyle::SystemGemma2);
/// assert!("pirate".parse::<SystemStyle>().is_err());
/// ```
impl std::str::FromStr for SystemStyle {
    type Err = ChatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            SystemStyle::Merge,
            SystemStyle::SystemGemma2,
            SystemStyle::Turn,
            SystemStyle::Strict,
        ]
        .into_iter()
        .find(|style| style.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| ChatError::UnknownStyle(s.to_owned()))
    }
}

/// Whether a text-mode prompt starts with the `<bos>` text.
///
/// It is unknown whether the RKLLM 1.1.1 runtime adds BOS itself in text (prompt) mode, so
/// the default writes it; check the prefill token count on hardware before choosing `Omit`.
/// Token mode always emits exactly one BOS id and ignores this setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Bos {
    /// Start the text with `<bos>`.
    #[default]
    Include,
    /// Leave `<bos>` out, for a runtime that prepends BOS itself.
    Omit,
}

/// Renders a conversation into the prompt text a model expects.
pub trait ChatTemplate {
    /// The prompt text for `messages`, ending with the generation prompt when
    /// `add_generation_prompt` is set.
    fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError>;

    /// The token ids that end the model's reply in this template's format: a chat turn
    /// ends there cleanly ([`FinishReason::EndOfTurn`](crate::FinishReason::EndOfTurn)).
    fn end_tokens(&self) -> &[u32];
}

/// One element of a rendered prompt: a control token or a run of plain text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Special(SpecialToken),
    Text(String),
}

/// The Gemma 2 chat template with a [`SystemStyle`] and a [`Bos`] setting.
///
/// ```
/// use rkllm::chat::{Bos, Gemma2Template, Message, SystemStyle};
/// let t = Gemma2Template::default();
/// assert_eq!(t.style(), SystemStyle::Merge);
/// let text = t.render(&[Message::user("Hello")], true).unwrap();
/// assert_eq!(text, "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n");
///
/// let no_bos = t.with_bos(Bos::Omit).render(&[Message::user("Hello")], false).unwrap();
/// assert_eq!(no_bos, "<start_of_turn>user\nHello<end_of_turn>\n");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Gemma2Template {
    style: SystemStyle,
    bos: Bos,
}

impl Gemma2Template {
    /// A template with `style`, writing `<bos>`.
    pub const fn new(style: SystemStyle) -> Self {
        Gemma2Template {
            style,
            bos: Bos::Include,
        }
    }

    /// The same template with the given BOS setting for text mode.
    pub const fn with_bos(self, bos: Bos) -> Self {
        Gemma2Template { bos, ..self }
    }

    /// The system style.
    pub const fn style(&self) -> SystemStyle {
        self.style
    }

    /// The BOS setting for text mode.
    pub const fn bos(&self) -> Bos {
        self.bos
    }

    /// The prompt text for `messages`; see [`ChatTemplate::render`].
    ///
    /// ```
    /// use rkllm::chat::{ChatError, Gemma2Template, Message, SystemStyle};
    /// let t = Gemma2Template::new(SystemStyle::Strict);
    /// let err = t.render(&[Message::user("a"), Message::user("b")], true).unwrap_err();
    /// assert_eq!(err, ChatError::RolesMustAlternate { index: 1 });
    /// ```
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let plan = self.plan(messages, add_generation_prompt)?;
        let mut out = String::new();
        for piece in plan.iter().skip(usize::from(self.bos == Bos::Omit)) {
            match piece {
                Piece::Special(t) => out.push_str(t.text()),
                Piece::Text(s) => out.push_str(s),
            }
        }
        Ok(out)
    }

    /// Checks `messages` against the style's rules without rendering.
    ///
    /// ```
    /// use rkllm::chat::{ChatError, Gemma2Template, Message, SystemStyle};
    /// let t = Gemma2Template::new(SystemStyle::SystemGemma2);
    /// assert_eq!(t.validate(&[Message::user("Hi")]), Err(ChatError::MissingSystem));
    /// ```
    pub fn validate(&self, messages: &[Message]) -> Result<(), ChatError> {
        if messages.is_empty() {
            return Err(ChatError::Empty);
        }
        match self.style {
            SystemStyle::Strict => validate_strict(messages),
            SystemStyle::SystemGemma2 => validate_system_gemma2(messages),
            SystemStyle::Merge | SystemStyle::Turn => validate_leading_system(messages),
        }
    }

    /// The prompt as control tokens and text runs, always starting with `<bos>` (text mode
    /// drops it for [`Bos::Omit`]).
    pub(crate) fn plan(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<Piece>, ChatError> {
        self.validate(messages)?;
        let mut plan = PlanBuilder::default();
        plan.special(SpecialToken::Bos);
        match self.style {
            SystemStyle::Strict => {
                for m in messages {
                    plan.turn(m.role, python_strip(&m.content));
                }
            }
            SystemStyle::SystemGemma2 => {
                // Validation guarantees messages[0] is the only system message.
                let (system, rest) = split_system(messages);
                plan.text(system.unwrap_or_default());
                plan.text("\n");
                for m in rest {
                    plan.turn(m.role, python_strip(&m.content));
                }
            }
            SystemStyle::Merge => {
                let (system, rest) = split_system(messages);
                let system = system.map(python_strip).unwrap_or_default();
                for (i, m) in rest.iter().enumerate() {
                    let content = python_strip(&m.content);
                    if i == 0 && !system.is_empty() {
                        plan.turn(m.role, &format!("{system}\n\n{content}"));
                    } else {
                        plan.turn(m.role, content);
                    }
                }
            }
            SystemStyle::Turn => {
                let (system, rest) = split_system(messages);
                let system = system.map(python_strip).unwrap_or_default();
                if !system.is_empty() {
                    plan.turn(Role::System, system);
                }
                for m in rest {
                    plan.turn(m.role, python_strip(&m.content));
                }
            }
        }
        if add_generation_prompt {
            plan.special(SpecialToken::StartOfTurn);
            plan.text("model\n");
        }
        Ok(plan.pieces)
    }
}

impl ChatTemplate for Gemma2Template {
    fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        Gemma2Template::render(self, messages, add_generation_prompt)
    }

    /// Gemma's `<end_of_turn>` and `<eos>` ([`STOP_TOKEN_IDS`]).
    fn end_tokens(&self) -> &'static [u32] {
        &STOP_TOKEN_IDS
    }
}

/// The leading system message's content (if any) and the messages after it.
fn split_system(messages: &[Message]) -> (Option<&str>, &[Message]) {
    match messages.split_first() {
        Some((first, rest)) if first.role == Role::System => (Some(&first.content), rest),
        _ => (None, messages),
    }
}

/// The official template: index 0 must not be system; message i is `user` iff i is even.
/// A system message at an odd index passes this check (a quirk kept for byte parity).
fn validate_strict(messages: &[Message]) -> Result<(), ChatError> {
    if messages.first().is_some_and(|m| m.role == Role::System) {
        return Err(ChatError::SystemRoleNotSupported);
    }
    check_alternation(messages, 0)
}

/// SystemGemma2: a system message first and nowhere else, then user/model alternation.
fn validate_system_gemma2(messages: &[Message]) -> Result<(), ChatError> {
    if messages.first().map(|m| m.role) != Some(Role::System) {
        return Err(ChatError::MissingSystem);
    }
    if let Some(i) = messages.iter().skip(1).position(|m| m.role == Role::System) {
        return Err(ChatError::SecondSystem { index: 1 + i });
    }
    check_alternation(&messages[1..], 1)
}

/// Merge and Turn: an optional leading system message, then at least one user message,
/// alternating user/model from a user.
fn validate_leading_system(messages: &[Message]) -> Result<(), ChatError> {
    let offset = usize::from(messages.first().is_some_and(|m| m.role == Role::System));
    check_no_system_after(messages, offset)?;
    let rest = &messages[offset..];
    if rest.is_empty() {
        return Err(ChatError::NoUserMessage);
    }
    check_alternation(rest, offset)
}

fn check_no_system_after(messages: &[Message], from: usize) -> Result<(), ChatError> {
    match messages
        .iter()
        .skip(from)
        .position(|m| m.role == Role::System)
    {
        Some(i) => Err(ChatError::MisplacedSystem { index: from + i }),
        None => Ok(()),
    }
}

/// Message i of `turns` must be `user` iff i is even; `offset` maps indices back to the
/// caller's list for the error.
fn check_alternation(turns: &[Message], offset: usize) -> Result<(), ChatError> {
    match turns
        .iter()
        .enumerate()
        .position(|(i, m)| (m.role == Role::User) != (i % 2 == 0))
    {
        Some(i) => Err(ChatError::RolesMustAlternate { index: offset + i }),
        None => Ok(()),
    }
}

#[derive(Default)]
struct PlanBuilder {
    pieces: Vec<Piece>,
}

impl PlanBuilder {
    fn special(&mut self, token: SpecialToken) {
        self.pieces.push(Piece::Special(token));
    }

    /// Appends text, joining it to a preceding text run so each run between control tokens
    /// is encoded whole (the tokenizer merges across such joins, e.g. `\n\n` is one token).
    fn text(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        match self.pieces.last_mut() {
            Some(Piece::Text(run)) => run.push_str(s),
            _ => self.pieces.push(Piece::Text(s.to_owned())),
        }
    }

    /// `<start_of_turn>ROLE\nCONTENT<end_of_turn>\n`, content already trimmed.
    fn turn(&mut self, role: Role, content: &str) {
        self.special(SpecialToken::StartOfTurn);
        self.text(role.gemma_name());
        self.text("\n");
        self.text(content);
        self.special(SpecialToken::EndOfTurn);
        self.text("\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(style: SystemStyle, msgs: &[Message], gen: bool) -> Result<String, ChatError> {
        Gemma2Template::new(style).render(msgs, gen)
    }

    const ALL: [SystemStyle; 4] = [
        SystemStyle::Merge,
        SystemStyle::SystemGemma2,
        SystemStyle::Turn,
        SystemStyle::Strict,
    ];

    #[test]
    fn chat_empty_is_an_error_in_every_style() {
        for style in ALL {
            assert_eq!(render(style, &[], true), Err(ChatError::Empty), "{style:?}");
        }
    }

    #[test]
    fn chat_generation_prompt_follows_a_model_turn() {
        let msgs = [Message::user("Say hi"), Message::assistant("hi")];
        assert_eq!(
            render(SystemStyle::Merge, &msgs, true).unwrap(),
            "<bos><start_of_turn>user\nSay hi<end_of_turn>\n<start_of_turn>model\nhi<end_of_turn>\n\
             <start_of_turn>model\n"
        );
    }

    #[test]
    fn chat_strict_odd_index_system_is_a_literal_turn() {
        let msgs = [
            Message::user("Hi"),
            Message::system("Now French."),
            Message::user("Salut"),
        ];
        assert_eq!(
            render(SystemStyle::Strict, &msgs, false).unwrap(),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>system\nNow French.\
             <end_of_turn>\n<start_of_turn>user\nSalut<end_of_turn>\n"
        );
        // At an even index the official check fires.
        let msgs = [
            Message::user("Hi"),
            Message::assistant("Yo"),
            Message::system("x"),
        ];
        assert_eq!(
            render(SystemStyle::Strict, &msgs, true),
            Err(ChatError::RolesMustAlternate { index: 2 })
        );
    }

    #[test]
    fn chat_merge_and_turn_reject_misplaced_system_and_missing_user() {
        for style in [SystemStyle::Merge, SystemStyle::Turn] {
            let mid = [
                Message::user("Hi"),
                Message::system("x"),
                Message::user("y"),
            ];
            assert_eq!(
                render(style, &mid, true),
                Err(ChatError::MisplacedSystem { index: 1 })
            );
            let two = [
                Message::system("a"),
                Message::system("b"),
                Message::user("c"),
            ];
            assert_eq!(
                render(style, &two, true),
                Err(ChatError::MisplacedSystem { index: 1 })
            );
            assert_eq!(
                render(style, &[Message::system("a")], true),
                Err(ChatError::NoUserMessage)
            );
            let asst_first = [Message::system("a"), Message::assistant("b")];
            assert_eq!(
                render(style, &asst_first, true),
                Err(ChatError::RolesMustAlternate { index: 1 })
            );
        }
    }

    #[test]
    fn chat_merge_and_turn_drop_blank_system_text() {
        let msgs = [Message::system(" \u{1f}\n "), Message::user("Hello")];
        let plain = "<bos><start_of_turn>user\nHello<end_of_turn>\n";
        assert_eq!(render(SystemStyle::Merge, &msgs, false).unwrap(), plain);
        assert_eq!(render(SystemStyle::Turn, &msgs, false).unwrap(), plain);
    }

    #[test]
    fn chat_system_gemma2_rules() {
        // Untrimmed preamble, one newline.
        let msgs = [
            Message::system("  Be terse.  \n"),
            Message::user("  Hello  "),
        ];
        assert_eq!(
            render(SystemStyle::SystemGemma2, &msgs, true).unwrap(),
            "<bos>  Be terse.  \n\n<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"
        );
        let second = [
            Message::system("a"),
            Message::user("b"),
            Message::system("c"),
        ];
        let err = render(SystemStyle::SystemGemma2, &second, true).unwrap_err();
        assert_eq!(err, ChatError::SecondSystem { index: 2 });
        // The template's own text, then the explanation.
        let text = err.to_string();
        assert!(
            text.starts_with("Conversation roles must alternate user/assistant/user/assistant/...")
        );
        assert!(text.contains("index 2"), "{text}");
        let err = render(SystemStyle::SystemGemma2, &[Message::user("x")], true).unwrap_err();
        assert!(err
            .to_string()
            .contains("Conversation roles must alternate user/assistant/user/assistant/..."));
    }

    #[test]
    fn chat_bos_omit_only_drops_the_leading_bos() {
        let t = Gemma2Template::new(SystemStyle::SystemGemma2).with_bos(Bos::Omit);
        let msgs = [Message::system("<bos>"), Message::user("x")];
        assert_eq!(
            t.render(&msgs, false).unwrap(),
            "<bos>\n<start_of_turn>user\nx<end_of_turn>\n"
        );
    }

    #[test]
    fn chat_plan_joins_text_runs_between_control_tokens() {
        let msgs = [Message::system("S"), Message::user("U")];
        let plan = Gemma2Template::new(SystemStyle::Merge)
            .plan(&msgs, true)
            .unwrap();
        let texts: Vec<_> = plan
            .iter()
            .filter_map(|p| match p {
                Piece::Text(s) => Some(s.as_str()),
                Piece::Special(_) => None,
            })
            .collect();
        assert_eq!(texts, ["user\nS\n\nU", "\n", "model\n"]);
        assert!(plan
            .windows(2)
            .all(|w| !matches!(w, [Piece::Text(_), Piece::Text(_)])));
    }
}
