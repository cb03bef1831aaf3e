//! A reply's text read into OpenAI's parts as it streams: the reasoning
//! (`reasoning_content`), the answer (`content`) and the tool calls (`tool_calls`).
//!
//! The text goes through a [`ReasoningSplitter`] first (when the model reasons), then the
//! answer part through a [`ToolCallParser`] (when the request offered tools the template
//! took). Reasoning never reaches the tool-call parser and never counts as content.

use rkllm::chat::reasoning::{ReasoningPiece, ReasoningSplitter};
use rkllm::chat::tool_calls::{ToolCall, ToolCallEvent, ToolCallFormat, ToolCallParser};

/// A decided piece of the reply, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Reasoning text.
    Reasoning(String),
    /// Answer text.
    Content(String),
    /// A tool call began (the first `tool_calls` delta of `index`).
    CallStarted {
        index: usize,
        id: String,
        name: String,
    },
    /// More of a call's arguments.
    Arguments { index: usize, delta: String },
}

/// The whole reply, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub content: String,
    /// `None` when the reply had no reasoning text.
    pub reasoning: Option<String>,
    pub calls: Vec<ToolCall>,
}

/// Reads a reply as it streams; see the [module](self).
#[derive(Debug)]
pub struct ReplyParser {
    splitter: Option<ReasoningSplitter>,
    tools: Option<ToolCallParser>,
    reply: Reply,
    /// Pushes (tokens) that touched the reasoning block, its tags included.
    reasoning_tokens: usize,
    /// What [`prime`](Self::prime)'s text decided, given out by the next push or finish.
    primed: Vec<Piece>,
}

impl ReplyParser {
    /// Text as it comes: all content.
    pub fn plain() -> ReplyParser {
        ReplyParser {
            splitter: None,
            tools: None,
            reply: Reply::default(),
            reasoning_tokens: 0,
            primed: Vec::new(),
        }
    }

    /// Splits off the reasoning with `splitter`.
    #[cfg_attr(not(feature = "template"), allow(dead_code))]
    pub fn with_reasoning(mut self, splitter: ReasoningSplitter) -> ReplyParser {
        self.splitter = Some(splitter);
        self
    }

    /// Reads tool calls of `format`, of the functions named `names` only.
    #[cfg_attr(not(feature = "template"), allow(dead_code))]
    pub fn with_tools(mut self, format: ToolCallFormat, names: Vec<String>) -> ReplyParser {
        self.tools = Some(ToolCallParser::new(format).with_tool_names(names));
        self
    }

    /// Feeds text the server put at the start of the reply, at the end of the prompt (a
    /// forced tool call's opening): it is read as the model's own text, and what it decides
    /// comes out first, from the next [`push`](Self::push) or [`finish`](Self::finish).
    #[cfg_attr(not(feature = "template"), allow(dead_code))]
    pub fn prime(&mut self, text: &str) {
        let counted = self.reasoning_tokens;
        let pieces = self.push(text);
        // Not the model's tokens: they are the prompt's.
        self.reasoning_tokens = counted;
        self.primed.extend(pieces);
    }

    /// Feeds the next piece of the reply (a token's text); returns what is decided.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = std::mem::take(&mut self.primed);
        let split = match &mut self.splitter {
            Some(s) => {
                let before = s.in_reasoning();
                let split = s.push(text);
                if before || s.in_reasoning() {
                    self.reasoning_tokens += 1;
                }
                split
            }
            None => vec![ReasoningPiece::Content(text.to_owned())],
        };
        self.route(split, false, &mut out);
        out
    }

    /// The tokens pushed so far that were reasoning (the `<think>` block, its tags
    /// included), when the reply is read for reasoning; `None` otherwise.
    pub fn reasoning_tokens(&self) -> Option<usize> {
        self.splitter.as_ref().map(|_| self.reasoning_tokens)
    }

    /// Ends the reply: returns what was held back.
    pub fn finish(&mut self) -> Vec<Piece> {
        let split = match &mut self.splitter {
            Some(s) => s.finish(),
            None => Vec::new(),
        };
        let mut out = std::mem::take(&mut self.primed);
        self.route(split, true, &mut out);
        out
    }

    fn route(&mut self, split: Vec<ReasoningPiece>, end: bool, out: &mut Vec<Piece>) {
        for piece in split {
            match piece {
                ReasoningPiece::Reasoning(text) => {
                    if !text.is_empty() {
                        self.reply
                            .reasoning
                            .get_or_insert_with(String::new)
                            .push_str(&text);
                        out.push(Piece::Reasoning(text));
                    }
                }
                ReasoningPiece::Content(text) => match &mut self.tools {
                    Some(parser) => {
                        let events = parser.push(&text);
                        self.events(events, out);
                    }
                    None => self.content(text, out),
                },
                // (The library's enum is non-exhaustive; its two kinds are handled above.)
                other => self.content(other.text().to_owned(), out),
            }
        }
        if end {
            if let Some(parser) = &mut self.tools {
                let events = parser.finish();
                let calls = parser.calls().to_vec();
                self.events(events, out);
                self.reply.calls = calls;
            }
        }
    }

    fn content(&mut self, text: String, out: &mut Vec<Piece>) {
        if !text.is_empty() {
            self.reply.content.push_str(&text);
            out.push(Piece::Content(text));
        }
    }

    fn events(&mut self, events: Vec<ToolCallEvent>, out: &mut Vec<Piece>) {
        for event in events {
            match event {
                ToolCallEvent::Content(text) => self.content(text, out),
                ToolCallEvent::Started { index, id, name } => {
                    out.push(Piece::CallStarted { index, id, name })
                }
                ToolCallEvent::Arguments { index, delta } if !delta.is_empty() => {
                    out.push(Piece::Arguments { index, delta })
                }
                _ => {}
            }
        }
    }

    /// The reply read so far (whole once [`finish`](Self::finish) has run).
    pub fn into_reply(self) -> Reply {
        self.reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_tokens_are_those_of_the_think_block_and_its_tags() {
        let tokens = ["<think>", "a", " b", "</", "think>", "Answer", " here"];
        let mut parser = ReplyParser::plain().with_reasoning(ReasoningSplitter::new());
        for t in tokens {
            parser.push(t);
        }
        parser.finish();
        assert_eq!(parser.reasoning_tokens(), Some(5));
        assert_eq!(parser.into_reply().content, "Answer here");
        // Starting inside the block (the prompt opened it): no opening tag to count.
        let mut parser =
            ReplyParser::plain().with_reasoning(ReasoningSplitter::starting_in_reasoning());
        for t in ["x", "</think>", "y"] {
            parser.push(t);
        }
        assert_eq!(parser.reasoning_tokens(), Some(2));
        // A reply not read for reasoning has no such count.
        let mut plain = ReplyParser::plain();
        plain.push("<think>a</think>b");
        assert_eq!(plain.reasoning_tokens(), None);
    }

    fn run(mut parser: ReplyParser, pieces: &[&str]) -> (Vec<Piece>, Reply) {
        let mut out = Vec::new();
        for p in pieces {
            out.extend(parser.push(p));
        }
        out.extend(parser.finish());
        (out, parser.into_reply())
    }

    #[test]
    fn reasoning_then_a_hermes_call() {
        let parser = ReplyParser::plain()
            .with_reasoning(ReasoningSplitter::starting_in_reasoning())
            .with_tools(ToolCallFormat::Hermes, vec!["get_weather".into()]);
        let (pieces, reply) = run(
            parser,
            &[
                "Need the",
                " weather.</th",
                "ink>\n\n<tool_",
                "call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":",
                " \"Paris\"}}\n</tool_call>",
            ],
        );
        assert_eq!(reply.reasoning.as_deref(), Some("Need the weather."));
        assert_eq!(reply.content, "");
        assert_eq!(reply.calls.len(), 1);
        assert_eq!(reply.calls[0].name, "get_weather");
        assert_eq!(reply.calls[0].arguments, r#"{"city": "Paris"}"#);
        // The streamed pieces: reasoning, then the call's start and its arguments adding up.
        let reasoning: String = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Reasoning(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(reasoning, "Need the weather.");
        let started = pieces
            .iter()
            .position(
                |p| matches!(p, Piece::CallStarted { index: 0, name, .. } if name == "get_weather"),
            )
            .expect("a call started");
        let args: String = pieces[started..]
            .iter()
            .filter_map(|p| match p {
                Piece::Arguments { index: 0, delta } => Some(delta.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(args, r#"{"city": "Paris"}"#);
        assert!(!pieces.iter().any(|p| matches!(p, Piece::Content(_))));
    }

    #[test]
    fn a_primed_call_opening_comes_out_first_and_reads_as_the_models() {
        let format = ToolCallFormat::Hermes;
        let mut parser = ReplyParser::plain().with_tools(format, vec!["get_weather".into()]);
        parser.prime(&format.call_opening(Some("get_weather")));
        let (pieces, reply) = run(parser, &["{\"city\":", " \"Paris\"}}\n</tool_call>"]);
        assert!(
            matches!(&pieces[0], Piece::CallStarted { index: 0, name, .. } if name == "get_weather"),
            "{pieces:?}"
        );
        assert_eq!(reply.content, "");
        assert_eq!(reply.calls.len(), 1);
        assert_eq!(reply.calls[0].arguments, r#"{"city": "Paris"}"#);

        // With no token after it, finish gives it out, as text: an unfinished call is no
        // call, whoever began it.
        let mut parser = ReplyParser::plain().with_tools(format, vec!["get_weather".into()]);
        let opening = format.call_opening(Some("get_weather"));
        parser.prime(&opening);
        assert_eq!(parser.finish(), [Piece::Content(opening.clone())]);
        assert_eq!(parser.into_reply().content, opening);
    }

    #[test]
    fn plain_text_is_all_content() {
        let (pieces, reply) = run(ReplyParser::plain(), &["<think>", "x</think>y"]);
        assert_eq!(reply.content, "<think>x</think>y");
        assert_eq!(reply.reasoning, None);
        assert_eq!(pieces.len(), 2);
    }

    #[test]
    fn a_call_of_a_function_not_offered_is_content() {
        let parser = ReplyParser::plain().with_tools(ToolCallFormat::Llama3Json, vec!["a".into()]);
        let text = r#"{"name": "b", "parameters": {}}"#;
        let (_, reply) = run(parser, &[text]);
        assert_eq!(reply.content, text);
        assert!(reply.calls.is_empty());
    }
}
