//! The chat completion and embedding handlers.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_core::Stream;
use rkllm::chat::{ChatError, ChatSession, ChatStream, ContextBudget, Conversation, Message, Role};
use rkllm::wait::{FairGuard, WaitError};
use rkllm::AsyncStream;
use rkllm::{GenerateOptions, Input, Timings};
use serde_json::{json, Value};

use crate::openai::{
    base64_f32, error_of, ApiError, ChatRequest, EmbeddingInput, EmbeddingRequest,
};
use crate::AppState;

/// A turn holding the server's one chat session.
type Turn = AsyncStream<ChatStream<FairGuard<ChatSession>>>;

/// Owns a turn; dropping it before the turn ended (the client went away) stops the run
/// without blocking the executor.
struct Running(Option<Turn>);

impl Running {
    fn turn(&mut self) -> &mut Turn {
        self.0.as_mut().expect("present until dropped")
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid: {e}"), None))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn completion_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "chatcmpl-{}-{}",
        unix_now(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits for the chat session in turn.
async fn take_session(state: &AppState) -> Result<FairGuard<ChatSession>, ApiError> {
    state
        .chat
        .lock_async(state.config.queue_timeout)
        .await
        .map_err(|e| {
            let (status, retry_after, code) = match e {
                WaitError::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, 1, "queue_full"),
                _ => (StatusCode::SERVICE_UNAVAILABLE, 5, "queue_timeout"),
            };
            ApiError {
                status,
                message: e.to_string(),
                kind: "server_error",
                param: None,
                code: Some(code),
                retry_after: Some(retry_after),
            }
        })
}

/// The conversation a request describes, and its last user message.
///
/// Policy: every `system` and `developer` message, wherever it stands, joins the system
/// prompt (in order, separated by a blank line); without any, the server's `--system` is
/// used. Consecutive messages of one role are joined the same way. The last message must be
/// the user's.
fn conversation_of(
    state: &AppState,
    request: &mut ChatRequest,
    reply_tokens: u32,
) -> Result<(Conversation, String), ApiError> {
    let bad = |e: ChatError| ApiError::bad_request(e.to_string(), Some("messages"));
    let mut messages = Vec::with_capacity(request.messages.len());
    for message in request.messages.drain(..) {
        let text = match message.content {
            Some(content) => content.into_text()?,
            None => String::new(),
        };
        messages.push(Message::parse(&message.role, text).map_err(bad)?);
    }
    // The server's own system prompt stands in when the request brings none.
    if let Some(system) = &state.config.system {
        if !messages.iter().any(|m| m.role == Role::System) {
            messages.insert(0, Message::system(system.clone()));
        }
    }
    // The library's policy: system and developer messages merge into one system prompt,
    // consecutive messages of one role into one turn.
    let mut conversation = Conversation::from_messages(state.config.style, messages)
        .map_err(bad)?
        .with_budget(ContextBudget::new(state.config.max_context, reply_tokens));
    #[cfg(feature = "tokenizer")]
    if let Some(tokenizer) = &state.tokenizer {
        conversation = conversation.with_tokenizer(Arc::clone(tokenizer));
    }
    let user = conversation.take_last_user().map_err(bad)?;
    // The whole conversation must fit: a server does not drop history behind the client's
    // back. Checked with the user message in, then taken out again for the turn.
    conversation.push_user(user.clone()).map_err(bad)?;
    let fit = conversation.fit().map_err(|e| error_of(&e))?;
    if fit.dropped_messages > 0 {
        return Err(ApiError::bad_request(
            format!(
                "the conversation does not fit the context of {} tokens with {reply_tokens} \
                 kept for the reply; shorten it or ask for fewer tokens",
                state.config.max_context
            ),
            Some("messages"),
        )
        .with_code("context_length_exceeded"));
    }
    conversation.pop();
    Ok((conversation, user))
}

fn usage(t: &Timings) -> Value {
    let prompt = t.prompt_tokens.unwrap_or(0);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": t.generated_tokens,
        "total_tokens": prompt + t.generated_tokens,
    })
}

/// `POST /v1/chat/completions`.
pub async fn completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    match start_completion(state, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn start_completion(state: Arc<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let mut request: ChatRequest = parse(&body)?;
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("only n = 1 is supported", Some("n")));
    }
    let limit = state.config.max_new_tokens;
    let asked = request.max_completion_tokens.or(request.max_tokens);
    if asked == Some(0) {
        return Err(ApiError::bad_request(
            "max_tokens must be at least 1",
            Some("max_tokens"),
        ));
    }
    let reply_tokens = asked.unwrap_or(limit).min(limit);
    let (conversation, user) = conversation_of(&state, &mut request, reply_tokens)?;
    let mut options = GenerateOptions::new().max_tokens(reply_tokens);
    for stop in request
        .stop
        .take()
        .map(|s| s.into_vec())
        .unwrap_or_default()
    {
        if !stop.is_empty() {
            options = options.stop_string(stop);
        }
    }
    let session = take_session(&state).await?;
    // Starting the turn prepares the prompt and the prompt cache: blocking work.
    let started =
        tokio::task::spawn_blocking(move || ChatStream::new(session, conversation, user, &options))
            .await
            .map_err(|e| ApiError::server(format!("starting the run: {e}")))?;
    let turn = started.map_err(|refused| error_of(refused.error()))?;
    let turn = Running(Some(turn.into_async()));
    let meta = Meta {
        id: completion_id(),
        created: unix_now(),
        model: request
            .model
            .clone()
            .unwrap_or_else(|| state.config.model_name.clone()),
    };
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        let events = Chunks {
            turn,
            meta,
            include_usage,
            stage: Stage::Role,
        };
        Ok(Sse::new(events)
            .keep_alive(
                KeepAlive::new()
                    .interval(state.config.keep_alive)
                    .text("keep-alive"),
            )
            .into_response())
    } else {
        let mut turn = turn;
        let mut text = String::new();
        while let Some(token) = std::future::poll_fn(|cx| Pin::new(turn.turn()).poll_next(cx)).await
        {
            match token {
                Ok(token) => text.push_str(&token.text),
                Err(e) => return Err(error_of(&e)),
            }
        }
        let t = turn.turn();
        let finish = t.finish_reason().map_or("stop", |f| f.openai());
        Ok(Json(json!({
            "id": meta.id,
            "object": "chat.completion",
            "created": meta.created,
            "model": meta.model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": null,
                "finish_reason": finish,
            }],
            "usage": usage(&t.timings()),
        }))
        .into_response())
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn chunk(&self, choices: Value, usage: Option<Value>, include_usage: bool) -> Event {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        Event::default().data(chunk.to_string())
    }
}

enum Stage {
    Role,
    Tokens,
    Usage,
    Done,
    End,
}

/// The SSE events of a streamed completion: a first chunk with the role, one per token, one
/// with the finish reason, the usage chunk when asked for, then `[DONE]`.
struct Chunks {
    turn: Running,
    meta: Meta,
    include_usage: bool,
    stage: Stage,
}

impl Stream for Chunks {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let delta = |delta: Value, finish: Option<&str>| json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]);
        let event = match this.stage {
            Stage::Role => {
                this.stage = Stage::Tokens;
                this.meta.chunk(
                    delta(json!({ "role": "assistant", "content": "" }), None),
                    None,
                    this.include_usage,
                )
            }
            Stage::Tokens => match Pin::new(this.turn.turn()).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(token))) => this.meta.chunk(
                    delta(json!({ "content": token.text }), None),
                    None,
                    this.include_usage,
                ),
                Poll::Ready(Some(Err(e))) => {
                    this.stage = Stage::Done;
                    Event::default().data(error_of(&e).body().to_string())
                }
                Poll::Ready(None) => {
                    this.stage = Stage::Usage;
                    let finish = this
                        .turn
                        .turn()
                        .finish_reason()
                        .map_or("stop", |f| f.openai());
                    this.meta
                        .chunk(delta(json!({}), Some(finish)), None, this.include_usage)
                }
            },
            Stage::Usage if this.include_usage => {
                this.stage = Stage::Done;
                let usage = usage(&this.turn.turn().timings());
                this.meta.chunk(json!([]), Some(usage), true)
            }
            Stage::Usage | Stage::Done => {
                this.stage = Stage::End;
                Event::default().data("[DONE]")
            }
            Stage::End => return Poll::Ready(None),
        };
        Poll::Ready(Some(Ok(event)))
    }
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    match embed(state, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn embed(state: Arc<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: EmbeddingRequest = parse(&body)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                format!("unknown encoding_format `{other}`; expected float or base64"),
                Some("encoding_format"),
            ))
        }
    };
    let inputs: Vec<Input> = match request.input {
        EmbeddingInput::One(s) => vec![Input::prompt(s)],
        EmbeddingInput::Many(v) => v.into_iter().map(Input::prompt).collect(),
        EmbeddingInput::Tokens(ids) => vec![Input::tokens(ids)],
        EmbeddingInput::TokenBatch(b) => b.into_iter().map(Input::tokens).collect(),
    };
    if inputs.is_empty() {
        return Err(ApiError::bad_request("input is empty", Some("input")));
    }
    let estimate: usize = inputs
        .iter()
        .map(|i| match i {
            Input::Prompt(s) => s.len().div_ceil(4),
            Input::Tokens(ids) => ids.len(),
            _ => 0,
        })
        .sum();
    let mut session = take_session(&state).await?;
    let vectors = tokio::task::spawn_blocking(move || session.embed_batch(inputs))
        .await
        .map_err(|e| ApiError::server(format!("embedding: {e}")))?
        .map_err(|e| error_of(&e))?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                json!(base64_f32(v))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": request.model.unwrap_or_else(|| state.config.model_name.clone()),
        "usage": { "prompt_tokens": estimate, "total_tokens": estimate },
    }))
    .into_response())
}
