//! `POST /v1/completions`, the legacy text API: a raw prompt, no chat template, streamed or
//! not.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rkllm::Input;
use serde_json::{json, Value};

use crate::body::read_json;
use crate::chat::{answer, context_exceeded, options, reply_tokens, take_session, Meta, Shape};
use crate::embed::{text_tokens, token_ids};
use crate::log::RequestStats;
use crate::openai::{ApiError, CompletionRequest, Prompt};
use crate::reply::{Piece, Reply, ReplyParser};
use crate::turn::Running;
use crate::AppState;

struct TextShape(Meta);

impl TextShape {
    fn choice(&self, text: &str, finish: Option<&str>) -> Value {
        self.0.object(
            "text_completion",
            json!([{ "index": 0, "text": text, "logprobs": null, "finish_reason": finish }]),
        )
    }
}

impl Shape for TextShape {
    fn opening(&self) -> Option<Value> {
        None
    }
    fn piece(&self, piece: &Piece) -> Option<Value> {
        match piece {
            Piece::Content(text) => Some(self.choice(text, None)),
            _ => None,
        }
    }
    fn finish(&self, finish: &str) -> Value {
        self.choice("", Some(finish))
    }
    fn usage(&self, usage: Value) -> Value {
        let mut chunk = self.0.object("text_completion", json!([]));
        chunk["usage"] = usage;
        chunk
    }
    fn whole(&self, reply: Reply, finish: &str, usage: Value) -> Value {
        let mut answer = self.choice(&reply.content, Some(finish));
        answer["usage"] = usage;
        answer
    }
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(stats): Extension<Arc<RequestStats>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match complete(state, stats, headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn complete(
    state: Arc<AppState>,
    stats: Arc<RequestStats>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut request: CompletionRequest = read_json(&state, &headers, body).await?;
    state.check_model(request.model.as_deref())?;
    request.check_supported()?;
    let one = |n: usize| {
        if n == 1 {
            Ok(())
        } else {
            Err(ApiError::bad_request(
                format!("{n} prompts; one prompt per request is supported"),
                Some("prompt"),
            ))
        }
    };
    let (input, tokens) = match request.prompt {
        Prompt::Text(text) => text_input(&state, text)?,
        Prompt::Texts(mut texts) => {
            one(texts.len())?;
            text_input(&state, texts.remove(0))?
        }
        Prompt::Tokens(ids) => {
            let ids = token_ids(&state, ids, "prompt")?;
            let n = ids.len();
            (Input::tokens(ids), n)
        }
        Prompt::TokenBatch(mut batch) => {
            one(batch.len())?;
            let ids = token_ids(&state, batch.remove(0), "prompt")?;
            let n = ids.len();
            (Input::tokens(ids), n)
        }
    };
    let reply_tokens = reply_tokens(&state, request.max_tokens)?;
    if tokens + reply_tokens as usize > state.config.max_context as usize {
        return Err(context_exceeded(&state, reply_tokens, "prompt"));
    }
    let options = options(reply_tokens, request.stop.take())?;
    let stream = request.stream.unwrap_or(false);
    let include_usage = request
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let session = take_session(&state, &stats).await?;
    let turn = Running::raw(session, input, options).await?;
    let shape = TextShape(Meta::new(&state, "cmpl"));
    let parser = ReplyParser::plain();
    answer(state, stats, turn, parser, shape, stream, include_usage).await
}

fn text_input(state: &AppState, text: String) -> Result<(Input, usize), ApiError> {
    if text.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty", Some("prompt")));
    }
    let n = text_tokens(state, &text)?;
    Ok((Input::prompt(text), n))
}
