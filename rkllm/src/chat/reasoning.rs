//! Reasoning models' `<think>…</think>`, separated from the answer as the text streams.
//!
//! DeepSeek-R1(-Distill), QwQ and Qwen3 write their chain of thought between `<think>` and
//! `</think>`, then the answer. DeepSeek's API and vLLM return the first part as
//! `reasoning_content` and only the second as `content`. [`ReasoningSplitter`] does that
//! split incrementally, for text that arrives a token at a time (a tag may arrive in
//! pieces, `<thi` then `nk>`); [`split_reasoning`] does it for a completed reply.
//!
//! # Where the reasoning starts
//!
//! DeepSeek-R1-Distill's template ends its generation prompt with `<think>\n`, so the model's
//! output starts *inside* the reasoning and only `</think>` appears in it. Other templates
//! leave the model to write `<think>` itself. [`prompt_opens_reasoning`] tells the two apart
//! from the rendered prompt, and [`ReasoningSplitter::for_prompt`] builds the right splitter.
//!
//! # The rules
//!
//! * Only one reasoning block is recognised: at the very start of the reply (after
//!   newlines), or from the start when the prompt opened it. Once the answer has begun, a
//!   later `<think>` or `</think>` is answer text.
//! * Newlines (`\n`, `\r`) at the start of the reasoning, at its end (before `</think>`) and
//!   at the start of the answer (after `</think>`) are removed, as DeepSeek's API returns
//!   them. Spaces are kept: an answer may begin with indented code.
//! * A reply cut off inside its reasoning (no `</think>`) is all reasoning.
//! * Text is held back only while it could still be part of a tag or is a run of newlines
//!   that the rules above may remove; everything else is returned at once.
//!
//! # What a conversation stores for a past turn
//!
//! Store an assistant turn's answer and its reasoning separately, and give the template the
//! answer as the message's `content` and the reasoning as a `reasoning_content` key of the
//! message. Templates then do what their models were trained on: DeepSeek-R1's template drops
//! past reasoning itself (it keeps the part of `content` after `</think>`, and `content` has
//! none), while Qwen3-style templates read `reasoning_content` and decide where to render it
//! (Qwen3 keeps it only for the turns after the last user message). Never paste
//! `<think>…</think>` back into `content`: DeepSeek's documentation asks clients not to send
//! reasoning back, and a template that keeps it would feed the model its own old thoughts.
//!
//! ```
//! use rkllm::chat::reasoning::{prompt_opens_reasoning, ReasoningPiece, ReasoningSplitter};
//!
//! // DeepSeek-R1-Distill: the rendered prompt already opened the reasoning.
//! let prompt = "<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜><think>\n";
//! assert!(prompt_opens_reasoning(prompt));
//! let mut splitter = ReasoningSplitter::for_prompt(prompt);
//! let mut pieces = Vec::new();
//! for token in ["Simple", " sum.\n</th", "ink>\n\n", "4"] {
//!     pieces.extend(splitter.push(token));
//! }
//! pieces.extend(splitter.finish());
//! assert_eq!(
//!     pieces,
//!     [
//!         ReasoningPiece::Reasoning("Simple".into()),
//!         ReasoningPiece::Reasoning(" sum.".into()),
//!         ReasoningPiece::Content("4".into()),
//!     ]
//! );
//! ```

/// The tag that opens a reasoning block in the models this module knows.
pub const THINK_OPEN: &str = "<think>";
/// The tag that closes a reasoning block.
pub const THINK_CLOSE: &str = "</think>";

/// Whether `c` is one of the newlines the splitter trims around the reasoning.
fn is_newline(c: char) -> bool {
    c == '\n' || c == '\r'
}

/// Whether a rendered prompt ends inside an open reasoning block, so the model's output
/// starts with reasoning and will contain only the closing `</think>`.
///
/// True when the prompt, without trailing whitespace, ends with `<think>`: DeepSeek-R1 and
/// its distills end the generation prompt with `<think>\n`. A prompt that closes the block it
/// opened (Qwen3 with `enable_thinking=false` appends `<think>\n\n</think>\n\n`) is false.
///
/// ```
/// use rkllm::chat::reasoning::prompt_opens_reasoning;
/// assert!(prompt_opens_reasoning("<｜Assistant｜><think>\n"));
/// assert!(!prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
/// assert!(!prompt_opens_reasoning("<|im_start|>assistant\n"));
/// ```
pub fn prompt_opens_reasoning(prompt: &str) -> bool {
    prompt.trim_end().ends_with(THINK_OPEN)
}

/// A piece of a reply, labelled by the part it belongs to.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasoningPiece {
    /// Text of the reasoning block (`reasoning_content`), without its tags.
    Reasoning(String),
    /// Text of the answer (`content`).
    Content(String),
}

impl ReasoningPiece {
    /// The piece's text.
    pub fn text(&self) -> &str {
        match self {
            ReasoningPiece::Reasoning(text) | ReasoningPiece::Content(text) => text,
        }
    }

    /// Whether this is reasoning text.
    pub fn is_reasoning(&self) -> bool {
        matches!(self, ReasoningPiece::Reasoning(_))
    }
}

/// A completed reply split into its reasoning and its answer; see [`split_reasoning`].
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasoningSplit {
    /// The reasoning, without its tags and surrounding newlines; `None` when the reply has no
    /// reasoning text (no block, or an empty one).
    pub reasoning: Option<String>,
    /// The answer.
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a reply that may open a block: newlines and a prefix of the open tag
    /// are held.
    Start,
    /// Inside the block. `leading`: nothing of it has been returned yet.
    Reasoning { leading: bool },
    /// Just after the block: newlines are dropped.
    AnswerStart,
    /// The answer: everything is returned as it comes.
    Answer,
}

/// Separates the reasoning block from the answer in text that arrives in pieces.
///
/// Feed each decoded piece to [`push`](Self::push) and the end of the reply to
/// [`finish`](Self::finish); each returns the pieces that are decided, in order, with
/// consecutive text of one kind merged. Concatenating everything returned gives the same
/// result however the reply was cut into pieces, and the same as [`split_reasoning`].
/// After `finish` the splitter starts over, as constructed.
///
/// ```
/// use rkllm::chat::reasoning::{ReasoningPiece, ReasoningSplitter};
/// // The model opens the block itself (QwQ, Qwen3 in thinking mode).
/// let mut splitter = ReasoningSplitter::new();
/// assert_eq!(splitter.push("<thi"), []); // could be the tag: held
/// assert_eq!(splitter.push("nk>\nHmm"), [ReasoningPiece::Reasoning("Hmm".into())]);
/// assert_eq!(splitter.push(".</think>\n\nHi"), [
///     ReasoningPiece::Reasoning(".".into()),
///     ReasoningPiece::Content("Hi".into()),
/// ]);
/// assert_eq!(splitter.finish(), []);
/// ```
#[derive(Debug, Clone)]
pub struct ReasoningSplitter {
    open: String,
    close: String,
    starts_in_reasoning: bool,
    state: State,
    /// `Start`: held newlines and open-tag prefix. `Reasoning`: held close-tag prefix.
    held: String,
    /// `Reasoning`: newlines held until text follows them (dropped before the close tag).
    newlines: String,
    saw_block: bool,
}

impl Default for ReasoningSplitter {
    fn default() -> Self {
        ReasoningSplitter::new()
    }
}

impl ReasoningSplitter {
    /// A splitter for a reply that may open a reasoning block with `<think>` at its start.
    pub fn new() -> ReasoningSplitter {
        ReasoningSplitter::with_tags(THINK_OPEN, THINK_CLOSE, false)
    }

    /// A splitter for a reply that starts inside the reasoning block (the prompt opened it),
    /// so only `</think>` ends it.
    pub fn starting_in_reasoning() -> ReasoningSplitter {
        ReasoningSplitter::with_tags(THINK_OPEN, THINK_CLOSE, true)
    }

    /// The splitter for the reply to `prompt`, a rendered chat prompt: starting inside the
    /// reasoning when [`prompt_opens_reasoning`] says the prompt opened it.
    pub fn for_prompt(prompt: &str) -> ReasoningSplitter {
        ReasoningSplitter::with_tags(THINK_OPEN, THINK_CLOSE, prompt_opens_reasoning(prompt))
    }

    /// A splitter for a model whose block uses other tags. An empty tag never matches.
    ///
    /// ```
    /// use rkllm::chat::reasoning::ReasoningSplitter;
    /// let mut splitter = ReasoningSplitter::with_tags("<|thought|>", "<|/thought|>", false);
    /// let mut reasoning = String::new();
    /// for piece in splitter.push("<|thought|>hm<|/thought|>ok") {
    ///     if piece.is_reasoning() {
    ///         reasoning.push_str(piece.text());
    ///     }
    /// }
    /// assert_eq!(reasoning, "hm");
    /// ```
    pub fn with_tags(open: &str, close: &str, starts_in_reasoning: bool) -> ReasoningSplitter {
        let mut splitter = ReasoningSplitter {
            open: open.to_owned(),
            close: close.to_owned(),
            starts_in_reasoning,
            state: State::Start,
            held: String::new(),
            newlines: String::new(),
            saw_block: false,
        };
        splitter.reset();
        splitter
    }

    fn reset(&mut self) {
        self.held.clear();
        self.newlines.clear();
        if self.starts_in_reasoning {
            self.state = State::Reasoning { leading: true };
            self.saw_block = true;
        } else if self.open.is_empty() {
            self.state = State::Answer;
            self.saw_block = false;
        } else {
            self.state = State::Start;
            self.saw_block = false;
        }
    }

    /// Whether the text seen so far is inside the reasoning block.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.state, State::Reasoning { .. })
    }

    /// Whether the reply has had a reasoning block (open now or closed).
    pub fn saw_reasoning(&self) -> bool {
        self.saw_block
    }

    /// Feeds the next piece of the reply; returns what is decided.
    pub fn push(&mut self, text: &str) -> Vec<ReasoningPiece> {
        let mut out = Pieces::default();
        for c in text.chars() {
            self.step(c, &mut out);
        }
        out.0
    }

    /// Ends the reply: returns what was held back, and starts over.
    ///
    /// Held newlines at the end of an unterminated reasoning block are dropped; a held
    /// partial tag is text of the part it was in.
    pub fn finish(&mut self) -> Vec<ReasoningPiece> {
        let mut out = Pieces::default();
        match self.state {
            State::Start => out.content(&self.held),
            State::Reasoning { .. } => {
                if !self.held.is_empty() {
                    out.reasoning(&self.newlines);
                    out.reasoning(&self.held);
                }
            }
            State::AnswerStart | State::Answer => {}
        }
        self.reset();
        out.0
    }

    fn step(&mut self, c: char, out: &mut Pieces) {
        match self.state {
            State::Start => {
                self.held.push(c);
                let tag = self.held.trim_start_matches(is_newline);
                if tag == self.open {
                    self.held.clear();
                    self.saw_block = true;
                    self.state = State::Reasoning { leading: true };
                } else if !self.open.starts_with(tag) {
                    out.content(&self.held);
                    self.held.clear();
                    self.state = State::Answer;
                }
            }
            State::Reasoning { leading } => {
                if self.held.is_empty() {
                    if is_newline(c) {
                        if !leading {
                            self.newlines.push(c);
                        }
                    } else if !self.close.is_empty() && self.close.starts_with(c) {
                        self.held.push(c);
                        self.close_tag_matched();
                    } else {
                        self.emit_reasoning(c, out);
                    }
                    return;
                }
                self.held.push(c);
                if self.close.starts_with(self.held.as_str()) {
                    self.close_tag_matched();
                    return;
                }
                // Not the tag: its first character is reasoning text; what follows may
                // still start the tag, so it goes round again.
                let held = std::mem::take(&mut self.held);
                let mut rest = held.chars();
                let first = rest.next().expect("held text is not empty");
                self.emit_reasoning(first, out);
                for c in rest {
                    self.step(c, out);
                }
            }
            State::AnswerStart => {
                if !is_newline(c) {
                    self.state = State::Answer;
                    out.content_char(c);
                }
            }
            State::Answer => out.content_char(c),
        }
    }

    /// `held` is a prefix of the close tag: when it is all of it, the block ends.
    fn close_tag_matched(&mut self) {
        if self.held == self.close {
            self.held.clear();
            self.newlines.clear();
            self.state = State::AnswerStart;
        }
    }

    fn emit_reasoning(&mut self, c: char, out: &mut Pieces) {
        out.reasoning(&self.newlines);
        self.newlines.clear();
        out.reasoning_char(c);
        self.state = State::Reasoning { leading: false };
    }
}

/// Pieces returned by one call, consecutive text of one kind merged.
#[derive(Default)]
struct Pieces(Vec<ReasoningPiece>);

impl Pieces {
    fn add(&mut self, text: &str, reasoning: bool) {
        if text.is_empty() {
            return;
        }
        match (self.0.last_mut(), reasoning) {
            (Some(ReasoningPiece::Reasoning(last)), true)
            | (Some(ReasoningPiece::Content(last)), false) => last.push_str(text),
            (_, true) => self.0.push(ReasoningPiece::Reasoning(text.to_owned())),
            (_, false) => self.0.push(ReasoningPiece::Content(text.to_owned())),
        }
    }

    fn reasoning(&mut self, text: &str) {
        self.add(text, true);
    }

    fn content(&mut self, text: &str) {
        self.add(text, false);
    }

    fn reasoning_char(&mut self, c: char) {
        self.add(c.encode_utf8(&mut [0; 4]), true);
    }

    fn content_char(&mut self, c: char) {
        self.add(c.encode_utf8(&mut [0; 4]), false);
    }
}

/// Splits a completed reply into its reasoning and its answer, by the rules of the
/// [module](self); `starts_in_reasoning` as for [`ReasoningSplitter::with_tags`] (use
/// [`prompt_opens_reasoning`] on the rendered prompt).
///
/// ```
/// use rkllm::chat::reasoning::split_reasoning;
/// let split = split_reasoning("Let me add.\n</think>\n\n2 + 2 = 4", true);
/// assert_eq!(split.reasoning.as_deref(), Some("Let me add."));
/// assert_eq!(split.content, "2 + 2 = 4");
///
/// let plain = split_reasoning("No thoughts here.", false);
/// assert_eq!(plain.reasoning, None);
/// assert_eq!(plain.content, "No thoughts here.");
/// ```
pub fn split_reasoning(text: &str, starts_in_reasoning: bool) -> ReasoningSplit {
    let mut splitter = ReasoningSplitter::with_tags(THINK_OPEN, THINK_CLOSE, starts_in_reasoning);
    let mut pieces = splitter.push(text);
    pieces.extend(splitter.finish());
    let mut split = ReasoningSplit::default();
    for piece in pieces {
        match piece {
            ReasoningPiece::Reasoning(text) => split
                .reasoning
                .get_or_insert_with(String::new)
                .push_str(&text),
            ReasoningPiece::Content(text) => split.content.push_str(&text),
        }
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `parts` one after another, then finishes: (reasoning, content) concatenated.
    fn stream(splitter: &mut ReasoningSplitter, parts: &[&str]) -> (Option<String>, String) {
        let mut pieces = Vec::new();
        let mut check = |returned: Vec<ReasoningPiece>| {
            for piece in &returned {
                assert!(!piece.text().is_empty(), "empty piece in {returned:?}");
            }
            for pair in returned.windows(2) {
                assert_ne!(
                    pair[0].is_reasoning(),
                    pair[1].is_reasoning(),
                    "unmerged pieces {returned:?}"
                );
            }
            pieces.extend(returned);
        };
        for part in parts {
            check(splitter.push(part));
        }
        check(splitter.finish());
        let mut reasoning: Option<String> = None;
        let mut content = String::new();
        for piece in pieces {
            match piece {
                ReasoningPiece::Reasoning(t) => reasoning.get_or_insert_default().push_str(&t),
                ReasoningPiece::Content(t) => content.push_str(&t),
            }
        }
        (reasoning, content)
    }

    fn one_shot(text: &str, starts: bool) -> (Option<String>, String) {
        let split = split_reasoning(text, starts);
        (split.reasoning, split.content)
    }

    fn boundaries(text: &str) -> Vec<usize> {
        (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect()
    }

    /// Every 2- and 3-way split at character boundaries gives the one-shot result.
    fn assert_split_invariant(text: &str, starts: bool) {
        let expected = one_shot(text, starts);
        let cuts = boundaries(text);
        for &i in &cuts {
            let got = stream(
                &mut ReasoningSplitter::with_tags(THINK_OPEN, THINK_CLOSE, starts),
                &[&text[..i], &text[i..]],
            );
            assert_eq!(got, expected, "split at {i} of {text:?}");
            for &j in cuts.iter().filter(|&&j| j >= i) {
                let got = stream(
                    &mut ReasoningSplitter::with_tags(THINK_OPEN, THINK_CLOSE, starts),
                    &[&text[..i], &text[i..j], &text[j..]],
                );
                assert_eq!(got, expected, "split at {i}, {j} of {text:?}");
            }
        }
        // One character at a time.
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let parts: Vec<&str> = chars.iter().map(String::as_str).collect();
        let got = stream(
            &mut ReasoningSplitter::with_tags(THINK_OPEN, THINK_CLOSE, starts),
            &parts,
        );
        assert_eq!(got, expected, "char by char of {text:?}");
    }

    const CASES: &[&str] = &[
        "",
        "Hello",
        "<think>\nhm, 2+2\n</think>\n\nIt is 4.",
        "\n<think>a</think>b",
        "<think></think>",
        "<think>\n\n</think>\n\nAnswer",
        "<thinking>not a tag",
        "<thin",
        "<<think>x</think>y",
        "text <think>not reasoning</think>",
        "<think>a </ b </thi c</think>d</think>e<think>f",
        "<think>unterminated\n\n",
        "<think>cut </thi",
        "reasoning only\n",
        "r\n</think>\n\n  indented",
        "r</think>",
        "</</think>x",
        "x\r\n</think>\r\n\r\ny",
        "<think>日本語の推論</think>\n答え 🦀",
        "🦀</think>é\u{301}",
        "a\n\nb\n</th\nink>c",
    ];

    #[test]
    fn every_split_matches_one_shot() {
        for text in CASES {
            assert_split_invariant(text, false);
            assert_split_invariant(text, true);
        }
    }

    #[test]
    fn model_opens_the_block() {
        assert_eq!(
            one_shot("<think>\nhm, 2+2\n</think>\n\nIt is 4.", false),
            (Some("hm, 2+2".into()), "It is 4.".into())
        );
        assert_eq!(
            one_shot("\n\n<think>a</think>b", false),
            (Some("a".into()), "b".into())
        );
    }

    #[test]
    fn prompt_opened_block_needs_only_the_close_tag() {
        assert_eq!(
            one_shot("Okay, the user asks.\n</think>\n\n**4**", true),
            (Some("Okay, the user asks.".into()), "**4**".into())
        );
        // Without the flag, the same text is all answer.
        assert_eq!(
            one_shot("Okay.\n</think>\n\n**4**", false),
            (None, "Okay.\n</think>\n\n**4**".into())
        );
    }

    #[test]
    fn empty_block_has_no_reasoning() {
        assert_eq!(
            one_shot("<think>\n\n</think>\n\nAnswer", false),
            (None, "Answer".into())
        );
        let mut splitter = ReasoningSplitter::new();
        splitter.push("<think>\n\n</think>");
        assert!(splitter.saw_reasoning());
        assert!(!splitter.in_reasoning());
    }

    #[test]
    fn only_a_leading_block_counts() {
        assert_eq!(
            one_shot("text <think>x</think>", false),
            (None, "text <think>x</think>".into())
        );
        assert_eq!(
            one_shot("<think>a</think>b<think>c</think>", false),
            (Some("a".into()), "b<think>c</think>".into())
        );
        assert_eq!(one_shot("<thinking>x", false), (None, "<thinking>x".into()));
    }

    #[test]
    fn newlines_trimmed_spaces_kept() {
        assert_eq!(
            one_shot("r\n</think>\n\n    code()", true),
            (Some("r".into()), "    code()".into())
        );
        assert_eq!(
            one_shot("\n a \n\n b \n</think> c ", true),
            (Some(" a \n\n b ".into()), " c ".into())
        );
    }

    #[test]
    fn cut_off_reasoning_is_all_reasoning() {
        assert_eq!(
            one_shot("<think>still thinking\n", false),
            (Some("still thinking".into()), String::new())
        );
        assert_eq!(
            one_shot("thinking </thi", true),
            (Some("thinking </thi".into()), String::new())
        );
        // A partial open tag at the end of a reply is answer text.
        assert_eq!(one_shot("\n<thi", false), (None, "\n<thi".into()));
    }

    #[test]
    fn content_is_never_delayed_beyond_a_tag_prefix() {
        let mut splitter = ReasoningSplitter::new();
        assert_eq!(splitter.push("Hi"), [ReasoningPiece::Content("Hi".into())]);
        // Once the answer has begun, a `<` is not held.
        assert_eq!(splitter.push(" <"), [ReasoningPiece::Content(" <".into())]);

        let mut splitter = ReasoningSplitter::starting_in_reasoning();
        assert_eq!(
            splitter.push("a <"),
            [ReasoningPiece::Reasoning("a ".into())]
        );
        assert_eq!(splitter.push("b"), [ReasoningPiece::Reasoning("<b".into())]);
        assert_eq!(splitter.push("\n"), []);
        assert_eq!(
            splitter.push("c"),
            [ReasoningPiece::Reasoning("\nc".into())]
        );
        assert_eq!(splitter.push("</think>"), []);
        assert_eq!(splitter.push("\n"), []);
        assert_eq!(splitter.push("d"), [ReasoningPiece::Content("d".into())]);
    }

    #[test]
    fn finish_starts_over() {
        let mut splitter = ReasoningSplitter::starting_in_reasoning();
        assert_eq!(
            stream(&mut splitter, &["a</think>b"]),
            (Some("a".into()), "b".into())
        );
        assert!(splitter.in_reasoning());
        assert_eq!(
            stream(&mut splitter, &["c</think>d"]),
            (Some("c".into()), "d".into())
        );
    }

    #[test]
    fn custom_and_empty_tags() {
        let mut splitter = ReasoningSplitter::with_tags("[[", "]]", false);
        assert_eq!(
            stream(&mut splitter, &["[", "[x]", "]y"]),
            (Some("x".into()), "y".into())
        );
        let mut splitter = ReasoningSplitter::with_tags("", "", false);
        assert_eq!(
            stream(&mut splitter, &["<think>x</think>"]),
            (None, "<think>x</think>".into())
        );
        let mut splitter = ReasoningSplitter::with_tags("<think>", "", true);
        assert_eq!(
            stream(&mut splitter, &["x</think>\n"]),
            (Some("x</think>".into()), String::new())
        );
    }

    #[test]
    fn prompt_detection() {
        assert!(prompt_opens_reasoning("<｜Assistant｜><think>\n"));
        assert!(prompt_opens_reasoning("<think>"));
        assert!(!prompt_opens_reasoning("<think>\n\n</think>\n\n"));
        assert!(!prompt_opens_reasoning("<|im_start|>assistant\n"));
        assert!(!prompt_opens_reasoning(""));
        assert!(ReasoningSplitter::for_prompt("x<think>\n").in_reasoning());
        assert!(!ReasoningSplitter::for_prompt("x").in_reasoning());
    }
}
