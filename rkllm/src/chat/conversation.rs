//! A multi-turn conversation kept within the model's context.
//!
//! RKLLM 1.1.x keeps no dialogue state, so every call re-sends the whole formatted
//! conversation. [`Conversation`] owns the history, renders (or encodes) the prompt for the
//! next turn, and drops the oldest exchanges when the prompt plus the tokens reserved for the
//! reply would exceed `max_context_len`.

#[cfg(any(feature = "tokenizer", feature = "template"))]
use std::sync::Arc;

use super::budget::{Counter, BOS_TOKENS, GENERATION_PROMPT_TOKENS};
#[cfg(all(feature = "template", feature = "tokenizer"))]
use super::hf::TemplateTokenizer;
#[cfg(feature = "template")]
use super::hf::{HfChatTemplate, TemplateInput};
#[cfg(feature = "tokenizer")]
use super::GemmaTokenizer;
use super::{ChatError, Gemma2Template, Message, Role, SystemStyle};
use crate::Result;

/// A conversation's Hugging Face chat template, and the tokenizer of its token mode.
#[cfg(feature = "template")]
#[derive(Debug, Clone)]
struct Family {
    template: Arc<HfChatTemplate>,
    #[cfg(feature = "tokenizer")]
    tokenizer: Option<Arc<TemplateTokenizer>>,
    /// The template's end ids, else the tokenizer's ids of its end-of-turn texts.
    end_ids: Vec<u32>,
}

#[cfg(feature = "template")]
impl Family {
    fn new(template: Arc<HfChatTemplate>) -> Self {
        let end_ids = super::ChatTemplate::end_tokens(&*template).to_vec();
        Family {
            template,
            #[cfg(feature = "tokenizer")]
            tokenizer: None,
            end_ids,
        }
    }

    /// The prompt's tokens (exact, with the tokenizer), or its UTF-8 bytes plus one: an
    /// upper bound for byte-level BPE and byte-fallback vocabularies alike (every byte is at
    /// most one token), with room for a BOS the runtime may add to a text prompt.
    fn count(&self, input: &TemplateInput) -> Result<usize> {
        #[cfg(feature = "tokenizer")]
        if let Some(tokenizer) = &self.tokenizer {
            let prompt = tokenizer
                .encode(&self.template, input)
                .map_err(ChatError::from)?;
            return Ok(prompt.token_ids.len());
        }
        Ok(self.template.render(input).map_err(ChatError::from)?.len() + 1)
    }

    /// A stable name of the template, for the prompt cache's key.
    fn key(&self) -> String {
        // FNV-1a over every template source and special-token text: stable across builds.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let sources = self.template.sources().map(str::to_owned);
        let specials = self.template.special_token_texts().iter().cloned();
        for part in sources.chain(specials) {
            for b in part.bytes().chain([0xff]) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("hf:{hash:016x}")
    }
}

/// The context limit a prompt must respect: `prompt tokens + reserved_new_tokens <=
/// max_context_len`.
///
/// Token counts are `u32` throughout the crate, as in
/// [`ModelBuilder::max_context_len`](crate::ModelBuilder::max_context_len) and
/// [`GenerateOptions::max_tokens`](crate::GenerateOptions::max_tokens).
///
/// ```
/// use rkllm::chat::ContextBudget;
/// assert_eq!(ContextBudget::new(4096, 512).prompt_limit(), 3584);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContextBudget {
    /// The model's context length (`RKLLMParam::max_context_len`).
    pub max_context_len: u32,
    /// Tokens kept free for the reply (usually `max_new_tokens`).
    pub reserved_new_tokens: u32,
}

impl ContextBudget {
    /// A budget of `max_context_len` tokens with `reserved_new_tokens` kept for the reply,
    /// exactly as given.
    pub const fn new(max_context_len: u32, reserved_new_tokens: u32) -> Self {
        ContextBudget {
            max_context_len,
            reserved_new_tokens,
        }
    }

    /// The default budget for a model's context, for a conversation that has none of its
    /// own: `max_context_len` tokens (the model's, see
    /// [`Model::max_context_len`](crate::Model::max_context_len)), with room kept for a reply
    /// of `max_new_tokens` (the model's setting; `None` when unlimited).
    ///
    /// A default must leave a prompt room, so the reserve is capped at half the context, and
    /// is a quarter of the context when the reply length is unlimited. With a
    /// `max_new_tokens` above half the context, a long prompt plus a long reply can
    /// therefore exceed the context; set the budget with [`new`](Self::new) to reserve
    /// more.
    ///
    /// ```
    /// use rkllm::chat::ContextBudget;
    /// assert_eq!(ContextBudget::for_context(4096, Some(512)), ContextBudget::new(4096, 512));
    /// assert_eq!(ContextBudget::for_context(4096, Some(4096)).prompt_limit(), 2048);
    /// assert_eq!(ContextBudget::for_context(4096, None).prompt_limit(), 3072);
    /// ```
    pub const fn for_context(max_context_len: u32, max_new_tokens: Option<u32>) -> Self {
        let half = max_context_len / 2;
        let reserve = match max_new_tokens {
            Some(n) if n < half => n,
            Some(_) => half,
            None => max_context_len / 4,
        };
        ContextBudget::new(max_context_len, reserve)
    }

    /// The most tokens a prompt may have.
    pub const fn prompt_limit(&self) -> u32 {
        self.max_context_len
            .saturating_sub(self.reserved_new_tokens)
    }
}

/// How much history to drop when the prompt does not fit.
///
/// Every drop changes the prompt's prefix, which invalidates a runtime prompt cache. Dropping
/// in larger steps keeps the prefix stable for more turns between drops.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum TrimPolicy {
    /// Drop the fewest oldest exchanges that make the prompt fit.
    #[default]
    MinimalExchanges,
    /// When the prompt does not fit, drop the oldest exchanges until at least
    /// `drop_fraction` (0.0..=1.0, clamped; NaN counts as 0) of the droppable history's
    /// tokens are gone, and at least enough to fit.
    Chunked {
        /// Share of the droppable history's tokens to drop at once.
        drop_fraction: f32,
    },
}

/// What the last [`Conversation::fit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fit {
    /// Messages dropped by this fit (always whole user + assistant exchanges).
    pub dropped_messages: usize,
    /// Tokens of the prompt with the generation prompt and one BOS: exact with a tokenizer
    /// (token mode), otherwise an upper bound.
    pub prompt_tokens: u32,
    /// Whether `prompt_tokens` is exact.
    pub exact: bool,
    /// [`Conversation::prefix_epoch`] after the fit.
    pub prefix_epoch: u64,
}

/// A conversation: system prompt, alternating user/assistant turns, a Gemma 2 style (or a
/// model's own chat template, see `Conversation::for_template`), and optionally a
/// context budget.
///
/// ```
/// use rkllm::chat::{ContextBudget, Conversation, SystemStyle};
/// # fn main() -> rkllm::Result<()> {
/// let mut chat = Conversation::new(SystemStyle::Merge)
///     .with_budget(ContextBudget::new(4096, 256));
/// chat.set_system("Answer briefly.");
/// chat.push_user("Hi")?;
/// let prompt = chat.render(true)?;
/// assert_eq!(
///     prompt,
///     "<bos><start_of_turn>user\nAnswer briefly.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
/// );
/// // ... run the model on `prompt`, then record its reply:
/// chat.push_assistant("Hello!")?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    template: Gemma2Template,
    /// A model's own chat template, used instead of `template` when set.
    #[cfg(feature = "template")]
    family: Option<Family>,
    /// The system message (if any) at index 0, then the turns, alternating from a user.
    messages: Vec<Message>,
    /// The reasoning of each assistant message (a reasoning model's `<think>` part), parallel
    /// to `messages`; given to a model's template as the message's `reasoning_content`.
    reasoning: Vec<Option<String>>,
    /// Cached token count of each message's part of the prompt, parallel to `messages`.
    tokens: Vec<Option<usize>>,
    budget: Option<ContextBudget>,
    policy: TrimPolicy,
    counter: Counter,
    epoch: u64,
    dropped: usize,
    last_fit: Option<Fit>,
}

impl Conversation {
    /// An empty conversation with `style`, no budget, and the byte estimate for counting.
    pub fn new(style: SystemStyle) -> Self {
        Conversation {
            template: Gemma2Template::new(style),
            ..Self::default()
        }
    }

    /// A conversation in `style` from role/content messages, such as the `messages` of an
    /// OpenAI-style chat request, merged into the shape Gemma 2 needs.
    ///
    /// The policy, in order:
    ///
    /// 1. **System and developer messages** (`developer` parses as [`Role::System`]) are
    ///    joined, in their order, with a blank line (`"\n\n"`) into the one system prompt,
    ///    wherever they stand in the list: Gemma 2 has a single place for instructions.
    /// 2. **Consecutive messages of one role** (two user messages, or two assistant
    ///    messages, counting after step 1) are joined with `"\n\n"` into one turn instead
    ///    of being refused. Contents are joined as given; the template trims each turn when
    ///    rendering.
    /// 3. **The first turn must be the user's:** an assistant message before any user
    ///    message is [`ChatError::RolesMustAlternate`], with its index in `messages`.
    /// 4. **The style's template checks the result**, so the error comes here rather than at
    ///    the first run: `Strict` refuses any system message
    ///    ([`ChatError::SystemRoleNotSupported`]), `SystemGemma2` requires one
    ///    ([`ChatError::MissingSystem`]; it may be empty), and `Merge` and `Turn` need a user
    ///    message ([`ChatError::NoUserMessage`]); an empty list is [`ChatError::Empty`].
    ///
    /// The last message may be from either role: a history ending with a reply is a valid
    /// conversation. To generate a reply, the last message must be the user's:
    /// [`awaits_reply`](Self::awaits_reply) tells, and
    /// [`take_last_user`](Self::take_last_user) hands it to
    /// [`Session::chat`](crate::Session::chat) or reports
    /// [`ChatError::LastMessageNotFromUser`].
    ///
    /// ```
    /// use rkllm::chat::{Conversation, Message, SystemStyle};
    /// # fn main() -> Result<(), rkllm::chat::ChatError> {
    /// let request = [
    ///     ("system", "You are terse."),
    ///     ("developer", "Answer in English."),
    ///     ("user", "Hi."),
    ///     ("user", "What is 2 + 2?"),
    /// ];
    /// let messages = request
    ///     .iter()
    ///     .map(|(role, content)| Message::parse(role, *content))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// let mut chat = Conversation::from_messages(SystemStyle::Merge, messages)?;
    /// assert_eq!(chat.system(), Some("You are terse.\n\nAnswer in English."));
    /// assert_eq!(chat.messages()[1].content, "Hi.\n\nWhat is 2 + 2?");
    /// // The user's message goes to `Session::chat`, which adds it back.
    /// assert_eq!(chat.take_last_user()?, "Hi.\n\nWhat is 2 + 2?");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As listed above; nothing is dropped for the budget here (that happens when the
    /// conversation is fitted).
    pub fn from_messages(
        style: SystemStyle,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<Self, ChatError> {
        let chat = Conversation::new(style).merged_from(messages)?;
        chat.template.validate(&chat.messages)?;
        Ok(chat)
    }

    /// A conversation rendered with a model's own chat template (feature `template`), such
    /// as Qwen2.5's or Llama 3.2's `tokenizer_config.json`: every prompt is the template's
    /// rendering, the reply ends at the template's end tokens
    /// ([`ChatTemplate::end_tokens`](super::ChatTemplate::end_tokens), else the tokenizer's
    /// ids of [`HfChatTemplate::end_of_turn_texts`]), and an assistant turn's reasoning
    /// goes to the template as the message's `reasoning_content` key.
    ///
    /// Without a tokenizer the conversation renders in text mode
    /// ([`HfChatTemplate::render_text_mode`]: a message holding special-token text is
    /// refused with [`ChatError::Template`]) and the budget counts UTF-8 bytes of the whole
    /// prompt, plus one for a BOS the runtime may add (an upper bound). With
    /// [`with_template_tokenizer`](Self::with_template_tokenizer) it encodes in token mode
    /// (special-token text in a message stays plain text) and the budget counts exactly, by
    /// encoding the whole prompt.
    ///
    /// ```
    /// use rkllm::chat::{Conversation, HfChatTemplate};
    /// # fn main() -> rkllm::Result<()> {
    /// let config = r#"{
    ///   "eos_token": "<|im_end|>",
    ///   "chat_template": "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    /// }"#;
    /// let template = HfChatTemplate::from_config_json(config, "tokenizer_config.json")
    ///     .map_err(rkllm::chat::ChatError::from)?;
    /// let mut chat = Conversation::for_template(template);
    /// chat.set_system("Be brief.");
    /// chat.push_user("Hi")?;
    /// assert_eq!(
    ///     chat.render(true)?,
    ///     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
    ///      <|im_start|>assistant\n"
    /// );
    /// chat.pop();
    /// chat.push_user("Say <|im_end|>")?;
    /// assert!(chat.render(true).is_err()); // text mode refuses special-token text
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "template")]
    #[cfg_attr(docsrs, doc(cfg(feature = "template")))]
    pub fn for_template(template: impl Into<Arc<HfChatTemplate>>) -> Self {
        Conversation {
            family: Some(Family::new(template.into())),
            ..Self::default()
        }
    }

    /// [`from_messages`](Self::from_messages) for a model's own chat template: the same
    /// merging policy (system and developer messages joined into one system prompt,
    /// consecutive messages of one role joined, an assistant message first refused), then
    /// the template renders the result once, so a conversation it refuses
    /// (`raise_exception`) is an error here.
    ///
    /// # Errors
    /// [`ChatError::Empty`] for no messages, [`ChatError::RolesMustAlternate`] as above,
    /// [`ChatError::Template`] when the template refuses the conversation.
    #[cfg(feature = "template")]
    #[cfg_attr(docsrs, doc(cfg(feature = "template")))]
    pub fn from_messages_for(
        template: impl Into<Arc<HfChatTemplate>>,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<Self, ChatError> {
        let chat = Conversation::for_template(template).merged_from(messages)?;
        if chat.messages.is_empty() {
            return Err(ChatError::Empty);
        }
        if let Some(family) = &chat.family {
            family
                .template
                .render(&chat.template_input(&chat.messages, &chat.reasoning, false))?;
        }
        Ok(chat)
    }

    /// Token mode for a conversation made with [`for_template`](Self::for_template):
    /// prompts are encoded with `tokenizer` (the model's `tokenizer.json`; see
    /// [`TemplateTokenizer::encode`]) and the budget counts exactly. The end ids come from
    /// the tokenizer when the template's configuration lists none. Does nothing to a Gemma
    /// conversation (use [`with_tokenizer`](Self::with_tokenizer)).
    #[cfg(all(feature = "template", feature = "tokenizer"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "template", feature = "tokenizer"))))]
    pub fn with_template_tokenizer(mut self, tokenizer: Arc<TemplateTokenizer>) -> Self {
        if let Some(family) = &mut self.family {
            // Merged once here, with the special tokens only the configuration declares.
            let tokenizer = match tokenizer.merged(&family.template) {
                Some(merged) => Arc::new(merged),
                None => tokenizer,
            };
            if family.end_ids.is_empty() {
                family.end_ids = tokenizer.token_ids(family.template.end_of_turn_texts());
            }
            family.tokenizer = Some(tokenizer);
            self.epoch += 1;
        }
        self
    }

    /// The model's own chat template, when the conversation has one
    /// ([`for_template`](Self::for_template)).
    #[cfg(feature = "template")]
    #[cfg_attr(docsrs, doc(cfg(feature = "template")))]
    pub fn hf_template(&self) -> Option<&HfChatTemplate> {
        self.family.as_ref().map(|f| &*f.template)
    }

    /// The token ids that end the model's reply: the Gemma template's, or those of the
    /// model's own template.
    pub fn end_tokens(&self) -> Vec<u32> {
        #[cfg(feature = "template")]
        if let Some(family) = &self.family {
            return family.end_ids.clone();
        }
        super::ChatTemplate::end_tokens(&self.template).to_vec()
    }

    /// The template's name for the prompt cache's key.
    pub(crate) fn template_key(&self) -> String {
        #[cfg(feature = "template")]
        if let Some(family) = &self.family {
            return family.key();
        }
        format!("{:?}", self.template)
    }

    /// For a conversation with a model's own template, a splitter for the reply's
    /// `<think>` block (started inside it when the generation prompt opens it); `None` for
    /// Gemma conversations, whose replies are kept whole.
    pub(crate) fn reasoning_splitter(&self) -> Option<super::reasoning::ReasoningSplitter> {
        #[cfg(feature = "template")]
        if let Some(family) = &self.family {
            let input = self.template_input(&self.messages, &self.reasoning, true);
            let prompt = family.template.render(&input).unwrap_or_default();
            return Some(super::reasoning::ReasoningSplitter::for_prompt(&prompt));
        }
        None
    }

    /// The messages merged as [`from_messages`](Self::from_messages) describes (steps 1-3).
    fn merged_from(self, messages: impl IntoIterator<Item = Message>) -> Result<Self, ChatError> {
        let mut chat = self;
        let mut system: Option<String> = None;
        for (index, message) in messages.into_iter().enumerate() {
            match message.role {
                Role::System => match &mut system {
                    Some(text) => {
                        text.push_str("\n\n");
                        text.push_str(&message.content);
                    }
                    None => system = Some(message.content),
                },
                role => match chat.messages.last_mut() {
                    Some(last) if last.role == role => {
                        last.content.push_str("\n\n");
                        last.content.push_str(&message.content);
                    }
                    None if role == Role::Assistant => {
                        return Err(ChatError::RolesMustAlternate { index });
                    }
                    _ => chat.push(message),
                },
            }
        }
        if let Some(text) = system {
            chat.set_system(text);
        }
        Ok(chat)
    }

    /// Uses `template` (style and BOS setting).
    pub fn with_template(mut self, template: Gemma2Template) -> Self {
        self.set_template(template);
        self
    }

    /// Keeps prompts within `budget`.
    pub fn with_budget(mut self, budget: ContextBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Trims history with `policy` when over budget.
    pub fn with_trim_policy(mut self, policy: TrimPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Counts tokens exactly with `tokenizer` and enables [`encode`](Self::encode).
    #[cfg(feature = "tokenizer")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokenizer")))]
    pub fn with_tokenizer(mut self, tokenizer: Arc<GemmaTokenizer>) -> Self {
        self.counter = Counter::Exact(tokenizer);
        self.tokens.iter_mut().for_each(|t| *t = None);
        self
    }

    /// Whether the conversation counts and encodes with a real tokenizer, so that
    /// [`Session::chat`](crate::Session::chat) sends it in token mode.
    pub fn has_tokenizer(&self) -> bool {
        #[cfg(all(feature = "template", feature = "tokenizer"))]
        if let Some(family) = &self.family {
            return family.tokenizer.is_some();
        }
        self.counter.is_exact()
    }

    /// Changes the template (a model's own template set with
    /// `Conversation::for_template` is dropped); the prompt's prefix changes with it.
    pub fn set_template(&mut self, template: Gemma2Template) {
        #[cfg(feature = "template")]
        if self.family.take().is_some() {
            self.epoch += 1;
        }
        if template != self.template {
            self.template = template;
            // The system part's count depends on the style.
            if let Some(t) = self.system_index().and_then(|i| self.tokens.get_mut(i)) {
                *t = None;
            }
            self.epoch += 1;
        }
    }

    /// The budget, after setting `default` when the conversation has none: how a session
    /// applies the model's context (see [`ContextBudget::for_context`]) so that no
    /// conversation can overflow it silently. A budget set before is kept.
    ///
    /// ```
    /// use rkllm::chat::{ContextBudget, Conversation, SystemStyle};
    /// let model_default = ContextBudget::for_context(4096, Some(512));
    /// let mut chat = Conversation::new(SystemStyle::Merge);
    /// assert_eq!(chat.budget_or_insert(model_default), model_default);
    /// assert_eq!(chat.budget(), Some(model_default));
    ///
    /// let own = ContextBudget::new(1024, 128);
    /// let mut chat = Conversation::new(SystemStyle::Merge).with_budget(own);
    /// assert_eq!(chat.budget_or_insert(model_default), own);
    /// ```
    pub fn budget_or_insert(&mut self, default: ContextBudget) -> ContextBudget {
        *self.budget.get_or_insert(default)
    }

    /// Sets (or removes, with `None`) the context budget.
    pub fn set_budget(&mut self, budget: Option<ContextBudget>) {
        self.budget = budget;
    }

    /// Sets the system prompt. Never dropped by trimming.
    pub fn set_system(&mut self, content: impl Into<String>) {
        let content = content.into();
        match self.system_index() {
            Some(i) if self.messages[i].content == content => return,
            Some(i) => {
                self.messages[i].content = content;
                self.tokens[i] = None;
            }
            None => {
                self.messages.insert(0, Message::system(content));
                self.tokens.insert(0, None);
                self.reasoning.insert(0, None);
            }
        }
        self.epoch += 1;
    }

    /// Removes the system prompt.
    pub fn clear_system(&mut self) {
        if let Some(i) = self.system_index() {
            self.messages.remove(i);
            self.tokens.remove(i);
            self.reasoning.remove(i);
            self.epoch += 1;
        }
    }

    /// Adds a user message.
    ///
    /// # Errors
    /// [`ChatError::RolesMustAlternate`] when the last message is already a user message.
    pub fn push_user(&mut self, content: impl Into<String>) -> Result<(), ChatError> {
        if self.last_role() == Some(Role::User) {
            return Err(ChatError::RolesMustAlternate {
                index: self.messages.len(),
            });
        }
        self.push(Message::user(content));
        Ok(())
    }

    /// Adds the model's reply to the last user message.
    ///
    /// # Errors
    /// [`ChatError::RolesMustAlternate`] unless the last message is a user message.
    pub fn push_assistant(&mut self, content: impl Into<String>) -> Result<(), ChatError> {
        if self.last_role() != Some(Role::User) {
            return Err(ChatError::RolesMustAlternate {
                index: self.messages.len(),
            });
        }
        self.push(Message::assistant(content));
        Ok(())
    }

    /// Adds the model's reply with its reasoning (a reasoning model's `<think>` part, kept
    /// apart from the answer): a model's own template gets it as the message's
    /// `reasoning_content` key, and decides itself whether to render it (DeepSeek-R1's drops
    /// past reasoning; Qwen3's keeps the latest). A Gemma template ignores it.
    ///
    /// # Errors
    /// As [`push_assistant`](Self::push_assistant).
    pub fn push_assistant_with_reasoning(
        &mut self,
        content: impl Into<String>,
        reasoning: Option<String>,
    ) -> Result<(), ChatError> {
        self.push_assistant(content)?;
        if let Some(slot) = self.reasoning.last_mut() {
            *slot = reasoning;
        }
        Ok(())
    }

    /// The reasoning stored with message `index` of [`messages`](Self::messages), if any.
    pub fn reasoning(&self, index: usize) -> Option<&str> {
        self.reasoning.get(index).and_then(|r| r.as_deref())
    }

    /// Removes and returns the last user or assistant message (e.g. a user message whose run
    /// failed, to retry or replace it).
    pub fn pop(&mut self) -> Option<Message> {
        if self.last_role().is_none_or(|r| r == Role::System) {
            return None;
        }
        self.tokens.pop();
        self.reasoning.pop();
        self.epoch += 1;
        self.messages.pop()
    }

    /// Whether the last message is the user's, so the conversation, rendered with the
    /// generation prompt, asks the model for a reply.
    pub fn awaits_reply(&self) -> bool {
        self.last_role() == Some(Role::User)
    }

    /// Removes the last message, which must be the user's, and returns its text: the form
    /// [`Session::chat`](crate::Session::chat) takes, as it adds the user's message itself.
    /// A conversation built with [`from_messages`](Self::from_messages) from a request
    /// goes to a session this way.
    ///
    /// # Errors
    /// [`ChatError::LastMessageNotFromUser`] when the last message is the assistant's (the
    /// conversation is unchanged), [`ChatError::NoUserMessage`] when there is no user or
    /// assistant message at all.
    pub fn take_last_user(&mut self) -> Result<String, ChatError> {
        match self.last_role() {
            Some(Role::User) => Ok(self.pop().map(|m| m.content).unwrap_or_default()),
            Some(Role::Assistant) => Err(ChatError::LastMessageNotFromUser {
                role: Role::Assistant,
            }),
            Some(Role::System) | None => Err(ChatError::NoUserMessage),
        }
    }

    /// Removes every user and assistant message; keeps the system prompt and settings.
    pub fn clear(&mut self) {
        let keep = usize::from(self.system_index().is_some());
        if self.messages.len() > keep {
            self.messages.truncate(keep);
            self.tokens.truncate(keep);
            self.reasoning.truncate(keep);
            self.epoch += 1;
        }
        self.dropped = 0;
    }

    /// All messages as the template sees them: the system message first (if set), then the
    /// turns.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The system prompt, if set.
    pub fn system(&self) -> Option<&str> {
        self.system_index()
            .map(|i| self.messages[i].content.as_str())
    }

    /// The Gemma template (not used while the conversation has a model's own template, see
    /// `Conversation::for_template`).
    pub fn template(&self) -> Gemma2Template {
        self.template
    }

    /// The budget, if set.
    pub fn budget(&self) -> Option<ContextBudget> {
        self.budget
    }

    /// A counter that changes whenever the rendered prompt stops being an extension of the
    /// previous one: history dropped by trimming, system prompt or template changed, a
    /// message popped, the history cleared. Adding messages does not change it. While it is
    /// unchanged, a prompt cache of the previous prompt stays valid as a prefix, for the Gemma
    /// template. A model's own template may render past turns differently on the next turn
    /// (DeepSeek-R1 drops past reasoning), so there the counter tracks the conversation's
    /// edits only; the prompt cache never relies on it and compares the prompts themselves.
    pub fn prefix_epoch(&self) -> u64 {
        self.epoch
    }

    /// Messages dropped by trimming since creation or the last [`clear`](Self::clear).
    pub fn dropped_messages(&self) -> usize {
        self.dropped
    }

    /// What the last [`fit`](Self::fit) did, if any.
    pub fn last_fit(&self) -> Option<Fit> {
        self.last_fit
    }

    /// Checks the conversation and drops the oldest exchanges (never the system prompt,
    /// never the newest user message) until the prompt for the next turn, generation prompt
    /// included, fits the budget. Without a budget it only checks and counts.
    ///
    /// Token counts are cached per message, so a fit after one new message tokenizes only
    /// that message.
    ///
    /// ```
    /// use rkllm::chat::{ContextBudget, Conversation, SystemStyle};
    /// # fn main() -> rkllm::Result<()> {
    /// // Byte estimate: each turn costs 5 + content bytes, plus BOS and the 3-token
    /// // generation prompt.
    /// let mut chat = Conversation::new(SystemStyle::Merge).with_budget(ContextBudget::new(20, 4));
    /// chat.push_user("aaaa")?;      // 9
    /// chat.push_assistant("bbbb")?; // 9
    /// chat.push_user("cc")?;        // 7
    /// let fit = chat.fit()?;        // 1 + 9 + 9 + 7 + 3 = 29 > 16: drop the first exchange
    /// assert_eq!((fit.dropped_messages, fit.prompt_tokens), (2, 11));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The template's [`ChatError`] for an invalid conversation,
    /// [`ChatError::MessageTooLong`] when even the newest exchange alone does not fit (then
    /// nothing is dropped), `Error::Tokenizer` if counting fails.
    pub fn fit(&mut self) -> Result<Fit> {
        #[cfg(feature = "template")]
        if let Some(family) = self.family.clone() {
            return self.fit_family(&family);
        }
        self.template.validate(&self.messages)?;
        self.fill_token_cache()?;
        let counts: Vec<usize> = self.tokens.iter().map(|t| t.unwrap_or(0)).collect();
        let first_turn = usize::from(self.system_index().is_some());
        let total = BOS_TOKENS + GENERATION_PROMPT_TOKENS + counts.iter().sum::<usize>();

        let mut drop = 0;
        if let Some(budget) = self.budget {
            let limit = usize::try_from(budget.prompt_limit()).unwrap_or(usize::MAX);
            let turns = &counts[first_turn..];
            // Exchanges start at even turn indices; the one holding the newest user message
            // is kept whatever happens.
            let newest_user = self.messages[first_turn..]
                .iter()
                .rposition(|m| m.role == Role::User)
                .unwrap_or(0);
            let droppable = newest_user / 2;
            // dropped[k]: tokens removed by dropping the k oldest exchanges.
            let dropped: Vec<usize> = std::iter::once(0)
                .chain(turns.chunks(2).take(droppable).scan(0, |acc, pair| {
                    *acc += pair.iter().sum::<usize>();
                    Some(*acc)
                }))
                .collect();
            let Some(min_k) = dropped.iter().position(|&d| total - d <= limit) else {
                return Err(ChatError::MessageTooLong {
                    needed: saturating_u32(total - dropped[droppable]),
                    available: budget.prompt_limit(),
                }
                .into());
            };
            let k = match self.policy {
                _ if min_k == 0 => 0,
                TrimPolicy::MinimalExchanges => min_k,
                TrimPolicy::Chunked { drop_fraction } => {
                    let fraction = f64::from(drop_fraction.clamp(0.0, 1.0));
                    let fraction = if fraction.is_nan() { 0.0 } else { fraction };
                    let target = (fraction * dropped[droppable] as f64).ceil();
                    let chunk_k = dropped
                        .iter()
                        .position(|&d| d as f64 >= target)
                        .unwrap_or(droppable);
                    min_k.max(chunk_k)
                }
            };
            drop = 2 * k;
        }

        let removed: usize = counts[first_turn..first_turn + drop].iter().sum();
        if drop > 0 {
            self.messages.drain(first_turn..first_turn + drop);
            self.tokens.drain(first_turn..first_turn + drop);
            self.reasoning.drain(first_turn..first_turn + drop);
            self.dropped += drop;
            self.epoch += 1;
        }
        let fit = Fit {
            dropped_messages: drop,
            prompt_tokens: saturating_u32(total - removed),
            exact: self.counter.is_exact(),
            prefix_epoch: self.epoch,
        };
        self.last_fit = Some(fit);
        Ok(fit)
    }

    /// [Fits](Self::fit) the conversation into the budget, then renders it as text.
    ///
    /// # Errors
    /// As [`fit`](Self::fit).
    pub fn render(&mut self, add_generation_prompt: bool) -> Result<String> {
        self.fit()?;
        #[cfg(feature = "template")]
        if let Some(family) = &self.family {
            let input = self.template_input(&self.messages, &self.reasoning, add_generation_prompt);
            return Ok(family
                .template
                .render_text_mode(&input)
                .map_err(ChatError::from)?);
        }
        Ok(self
            .template
            .render(&self.messages, add_generation_prompt)?)
    }

    /// [Fits](Self::fit) the conversation into the budget, then encodes it as token ids
    /// (see [`GemmaTokenizer::encode`]).
    ///
    /// # Errors
    /// As [`fit`](Self::fit); [`Error::Tokenizer`](crate::Error::Tokenizer) when the
    /// conversation was created without [`with_tokenizer`](Self::with_tokenizer).
    #[cfg(feature = "tokenizer")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokenizer")))]
    pub fn encode(&mut self, add_generation_prompt: bool) -> Result<Vec<u32>> {
        #[cfg(feature = "template")]
        if let Some(family) = self.family.clone() {
            let Some(tokenizer) = &family.tokenizer else {
                return Err(crate::Error::Tokenizer {
                    message: "this conversation has no tokenizer; give it one with \
                              Conversation::with_template_tokenizer"
                        .to_owned(),
                    source: None,
                });
            };
            self.fit()?;
            let input = self.template_input(&self.messages, &self.reasoning, add_generation_prompt);
            return Ok(tokenizer
                .encode(&family.template, &input)
                .map_err(ChatError::from)?
                .token_ids);
        }
        let Counter::Exact(tokenizer) = self.counter.clone() else {
            return Err(crate::Error::Tokenizer {
                message: "this conversation has no tokenizer; build it with \
                          Conversation::with_tokenizer"
                    .to_owned(),
                source: None,
            });
        };
        self.fit()?;
        tokenizer.encode(&self.template, &self.messages, add_generation_prompt)
    }

    fn push(&mut self, message: Message) {
        self.messages.push(message);
        self.tokens.push(None);
        self.reasoning.push(None);
    }

    /// What a model's own template renders: the messages, each assistant message with its
    /// reasoning as `reasoning_content`.
    #[cfg(feature = "template")]
    fn template_input(
        &self,
        messages: &[Message],
        reasoning: &[Option<String>],
        add_generation_prompt: bool,
    ) -> TemplateInput {
        TemplateInput::with_reasoning(messages, reasoning)
            .add_generation_prompt(add_generation_prompt)
    }

    /// [`fit`](Self::fit) for a model's own template: the prompt is counted whole (rendered
    /// and, with a tokenizer, encoded), for each number of oldest exchanges dropped until
    /// it fits.
    #[cfg(feature = "template")]
    fn fit_family(&mut self, family: &Family) -> Result<Fit> {
        if self.messages.is_empty() {
            return Err(ChatError::Empty.into());
        }
        let first_turn = usize::from(self.system_index().is_some());
        if self.messages.len() == first_turn {
            return Err(ChatError::NoUserMessage.into());
        }
        // The prompt's count with the `k` oldest exchanges dropped.
        let count = |k: usize| -> Result<usize> {
            let keep = |v: usize| v < first_turn || v >= first_turn + 2 * k;
            let messages: Vec<Message> = (0..self.messages.len())
                .filter(|&i| keep(i))
                .map(|i| self.messages[i].clone())
                .collect();
            let reasoning: Vec<Option<String>> = (0..self.reasoning.len())
                .filter(|&i| keep(i))
                .map(|i| self.reasoning[i].clone())
                .collect();
            family.count(&self.template_input(&messages, &reasoning, true))
        };
        let total = count(0)?;
        let mut k = 0;
        let mut prompt = total;
        if let Some(budget) = self.budget {
            let limit = usize::try_from(budget.prompt_limit()).unwrap_or(usize::MAX);
            if total > limit {
                let newest_user = self.messages[first_turn..]
                    .iter()
                    .rposition(|m| m.role == Role::User)
                    .unwrap_or(0);
                let droppable = newest_user / 2;
                let mut counts = vec![total];
                for j in 1..=droppable {
                    counts.push(count(j)?);
                }
                let Some(min_k) = counts.iter().position(|&c| c <= limit) else {
                    return Err(ChatError::MessageTooLong {
                        needed: saturating_u32(counts[droppable]),
                        available: budget.prompt_limit(),
                    }
                    .into());
                };
                k = match self.policy {
                    TrimPolicy::MinimalExchanges => min_k,
                    TrimPolicy::Chunked { drop_fraction } => {
                        let fraction = f64::from(drop_fraction.clamp(0.0, 1.0));
                        let fraction = if fraction.is_nan() { 0.0 } else { fraction };
                        let target =
                            (fraction * total.saturating_sub(counts[droppable]) as f64).ceil();
                        let chunk_k = counts
                            .iter()
                            .position(|&c| total.saturating_sub(c) as f64 >= target)
                            .unwrap_or(droppable);
                        min_k.max(chunk_k)
                    }
                };
                prompt = counts[k];
            }
        }
        let drop = 2 * k;
        if drop > 0 {
            self.messages.drain(first_turn..first_turn + drop);
            self.tokens.drain(first_turn..first_turn + drop);
            self.reasoning.drain(first_turn..first_turn + drop);
            self.dropped += drop;
            self.epoch += 1;
        }
        let fit = Fit {
            dropped_messages: drop,
            prompt_tokens: saturating_u32(prompt),
            exact: self.has_tokenizer(),
            prefix_epoch: self.epoch,
        };
        self.last_fit = Some(fit);
        Ok(fit)
    }

    fn system_index(&self) -> Option<usize> {
        self.messages
            .first()
            .filter(|m| m.role == Role::System)
            .map(|_| 0)
    }

    fn last_role(&self) -> Option<Role> {
        self.messages.last().map(|m| m.role)
    }

    fn fill_token_cache(&mut self) -> Result<()> {
        let style = self.template.style();
        for (m, slot) in self.messages.iter().zip(self.tokens.iter_mut()) {
            if slot.is_none() {
                *slot = Some(match m.role {
                    Role::System => self.counter.system(style, &m.content)?,
                    Role::User | Role::Assistant => self.counter.turn(m)?,
                });
            }
        }
        Ok(())
    }
}

/// A token count as `u32`; no real prompt comes near `u32::MAX` tokens.
fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
