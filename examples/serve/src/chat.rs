//! `POST /v1/chat/completions`, and what the completion endpoints share: waiting for the
//! session, the reply's length and stops, and the streamed and collected answers.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_core::Stream;
use rkllm::chat::{ChatError, ChatSession, ContextBudget, Conversation, Message, Role};
use rkllm::wait::{FairGuard, WaitError};
use rkllm::{GenerateOptions, Timings};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::body::read_json;
use crate::log::RequestStats;
use crate::openai::{error_of, ApiError, ChatRequest, Stop};
use crate::reply::{Piece, Reply, ReplyParser};
use crate::turn::{Outcome, Running};
use crate::AppState;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn completion_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{prefix}-{}-{}",
        unix_now(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits for the chat session in turn; 503 at once when the server is shutting down.
pub async fn take_session(
    state: &AppState,
    stats: &RequestStats,
) -> Result<FairGuard<ChatSession>, ApiError> {
    if state.shutting_down() {
        return Err(ApiError::shutting_down());
    }
    let start = Instant::now();
    let result = tokio::select! {
        biased;
        _ = state.shutdown_started() => Err(None),
        r = state.chat.lock_async(state.config.queue_timeout) => r.map_err(Some),
    };
    stats.queue_wait(start.elapsed());
    state.metrics.record_queue_wait(start.elapsed());
    match result {
        Ok(_) if state.shutting_down() => Err(ApiError::shutting_down()),
        Ok(guard) => Ok(guard),
        Err(None) => Err(ApiError::shutting_down()),
        Err(Some(e)) => {
            let (status, retry_after, code) = match e {
                WaitError::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, 1, "queue_full"),
                _ => (StatusCode::SERVICE_UNAVAILABLE, 5, "queue_timeout"),
            };
            Err(ApiError {
                status,
                message: e.to_string(),
                kind: "server_error",
                param: None,
                code: Some(code),
                retry_after: Some(retry_after),
            })
        }
    }
}

/// The reply's length: what the request asks (at least 1), at most the server's limit.
pub fn reply_tokens(state: &AppState, asked: Option<u32>) -> Result<u32, ApiError> {
    if asked == Some(0) {
        return Err(ApiError::bad_request(
            "max_tokens must be at least 1",
            Some("max_tokens"),
        ));
    }
    let limit = state.config.max_new_tokens;
    Ok(asked.unwrap_or(limit).min(limit))
}

/// Generation options: the reply's length and the request's stop strings (at most 4, as
/// OpenAI allows).
pub fn options(reply_tokens: u32, stop: Option<Stop>) -> Result<GenerateOptions, ApiError> {
    let mut options = GenerateOptions::new().max_tokens(reply_tokens);
    let stops = stop.map(Stop::into_vec).unwrap_or_default();
    if stops.len() > 4 {
        return Err(ApiError::bad_request(
            "at most 4 stop sequences are supported",
            Some("stop"),
        ));
    }
    for stop in stops {
        if !stop.is_empty() {
            options = options.stop_string(stop);
        }
    }
    Ok(options)
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
        let message = message.value;
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
        return Err(context_exceeded(state, reply_tokens, "messages"));
    }
    conversation.pop();
    Ok((conversation, user))
}

/// 400 `context_length_exceeded`.
pub fn context_exceeded(state: &AppState, reply_tokens: u32, param: &'static str) -> ApiError {
    ApiError::bad_request(
        format!(
            "the input does not fit the context of {} tokens with {reply_tokens} kept for the \
             reply; shorten it or ask for fewer tokens",
            state.config.max_context
        ),
        Some(param),
    )
    .with_code("context_length_exceeded")
}

pub fn usage(t: &Timings) -> Value {
    let prompt = t.prompt_tokens.unwrap_or(0);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": t.generated_tokens,
        "total_tokens": prompt + t.generated_tokens,
    })
}

/// [`usage`], with `completion_tokens_details.reasoning_tokens` for a reply read for
/// reasoning (at most the completion tokens).
fn usage_of(t: &Timings, parser: &ReplyParser) -> Value {
    let mut usage = usage(t);
    if let Some(n) = parser.reasoning_tokens() {
        usage["completion_tokens_details"] =
            json!({ "reasoning_tokens": n.min(t.generated_tokens) });
    }
    usage
}

/// The shape of a completion endpoint's answers.
pub trait Shape: Send + Sync + 'static {
    /// The chunk before the first token, if any.
    fn opening(&self) -> Option<Value>;
    /// The chunk of a piece of the reply (`None`: the shape has no place for it).
    fn piece(&self, piece: &Piece) -> Option<Value>;
    /// The chunk with the finish reason.
    fn finish(&self, finish: &str) -> Value;
    /// The usage chunk (`stream_options.include_usage`).
    fn usage(&self, usage: Value) -> Value;
    /// The collected answer.
    fn whole(&self, reply: Reply, finish: &str, usage: Value) -> Value;
}

/// OpenAI's `finish_reason`: a turn that ended cleanly after making tool calls ended for
/// them.
fn finish_reason(finish: &'static str, reply: &Reply) -> &'static str {
    if finish == "stop" && !reply.calls.is_empty() {
        "tool_calls"
    } else {
        finish
    }
}

/// The fields every chunk and answer carries.
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub fingerprint: String,
}

impl Meta {
    pub fn new(state: &AppState, prefix: &str) -> Meta {
        Meta {
            id: completion_id(prefix),
            created: unix_now(),
            model: state.config.served_model_name.clone(),
            fingerprint: state.fingerprint.clone(),
        }
    }

    pub fn object(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        })
    }
}

struct ChatShape(Meta);

impl ChatShape {
    fn delta(&self, delta: Value) -> Value {
        self.0.object(
            "chat.completion.chunk",
            json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": null }]),
        )
    }
}

impl Shape for ChatShape {
    fn opening(&self) -> Option<Value> {
        Some(self.delta(json!({ "role": "assistant", "content": "" })))
    }
    fn piece(&self, piece: &Piece) -> Option<Value> {
        Some(self.delta(match piece {
            Piece::Content(text) => json!({ "content": text }),
            Piece::Reasoning(text) => json!({ "reasoning_content": text }),
            Piece::CallStarted { index, id, name } => json!({ "tool_calls": [{
                "index": index,
                "id": id,
                "type": "function",
                "function": { "name": name, "arguments": "" },
            }]}),
            Piece::Arguments { index, delta } => json!({ "tool_calls": [{
                "index": index,
                "function": { "arguments": delta },
            }]}),
        }))
    }
    fn finish(&self, finish: &str) -> Value {
        self.0.object(
            "chat.completion.chunk",
            json!([{ "index": 0, "delta": {}, "logprobs": null, "finish_reason": finish }]),
        )
    }
    fn usage(&self, usage: Value) -> Value {
        let mut chunk = self.0.object("chat.completion.chunk", json!([]));
        chunk["usage"] = usage;
        chunk
    }
    fn whole(&self, reply: Reply, finish: &str, usage: Value) -> Value {
        // `content` is null when the reply is only tool calls, as OpenAI answers.
        let content = if reply.content.is_empty() && !reply.calls.is_empty() {
            Value::Null
        } else {
            Value::String(reply.content)
        };
        let mut message = json!({ "role": "assistant", "content": content });
        if let Some(reasoning) = reply.reasoning {
            message["reasoning_content"] = Value::String(reasoning);
        }
        if !reply.calls.is_empty() {
            message["tool_calls"] = reply
                .calls
                .into_iter()
                .map(|call| {
                    json!({
                        "id": call.id,
                        "type": "function",
                        "function": { "name": call.name, "arguments": call.arguments },
                    })
                })
                .collect();
        }
        let mut answer = self.0.object(
            "chat.completion",
            json!([{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish,
            }]),
        );
        answer["usage"] = usage;
        answer
    }
}

/// Runs the reply and answers: SSE events (chunks, the finish, the usage when asked, then
/// `[DONE]`; an error event then `[DONE]` when it fails or the shutdown ends it), or one
/// collected answer.
pub async fn answer<S: Shape>(
    state: Arc<AppState>,
    stats: Arc<RequestStats>,
    mut turn: Running,
    mut parser: ReplyParser,
    shape: S,
    stream: bool,
    include_usage: bool,
) -> Result<Response, ApiError> {
    if !stream {
        let outcome = turn
            .run(&state, &stats, std::future::pending(), |t| {
                parser.push(&t);
            })
            .await;
        return match outcome {
            Outcome::Finished { finish, timings } => {
                parser.finish();
                let usage = usage_of(&timings, &parser);
                let reply = parser.into_reply();
                let finish = finish_reason(finish, &reply);
                Ok(Json(shape.whole(reply, finish, usage)).into_response())
            }
            Outcome::Failed(e) => Err(e),
            Outcome::Gone => Err(ApiError::server("the client went away")),
        };
    }
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let keep_alive = state.config.keep_alive;
    let data = |v: Value| Event::default().data(v.to_string());
    tokio::spawn(async move {
        if let Some(opening) = shape.opening() {
            let _ = tx.send(data(opening));
        }
        let send = |pieces: Vec<Piece>| {
            for piece in pieces {
                if let Some(chunk) = shape.piece(&piece) {
                    let _ = tx.send(data(chunk));
                }
            }
        };
        let outcome = turn
            .run(&state, &stats, tx.closed(), |t| send(parser.push(&t)))
            .await;
        match outcome {
            Outcome::Finished { finish, timings } => {
                send(parser.finish());
                let usage = usage_of(&timings, &parser);
                let reply = parser.into_reply();
                let _ = tx.send(data(shape.finish(finish_reason(finish, &reply))));
                if include_usage {
                    let _ = tx.send(data(shape.usage(usage)));
                }
            }
            Outcome::Failed(e) => {
                send(parser.finish());
                let _ = tx.send(data(e.body()));
            }
            Outcome::Gone => return,
        }
        let _ = tx.send(Event::default().data("[DONE]"));
    });
    Ok(Sse::new(Events(rx))
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
        .into_response())
}

/// The SSE events a reply's task sends.
struct Events(mpsc::UnboundedReceiver<Event>);

impl Stream for Events {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().0.poll_recv(cx).map(|e| e.map(Ok))
    }
}

/// `POST /v1/chat/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(stats): Extension<Arc<RequestStats>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match chat_completion(state, stats, headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn chat_completion(
    state: Arc<AppState>,
    stats: Arc<RequestStats>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut request: ChatRequest = read_json(&state, &headers, body).await?;
    state.check_model(request.model.as_deref())?;
    #[cfg(feature = "template")]
    if state.hf.is_some() {
        return hf_completion(state, stats, request).await;
    }
    request.check_supported(false)?;
    let reply_tokens = reply_tokens(&state, request.max_completion_tokens.or(request.max_tokens))?;
    let (conversation, user) = conversation_of(&state, &mut request, reply_tokens)?;
    let options = options(reply_tokens, request.stop.take())?;
    let stream = request.stream.unwrap_or(false);
    let include_usage = request
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let session = take_session(&state, &stats).await?;
    let turn = Running::chat(session, conversation, user, options).await?;
    let shape = ChatShape(Meta::new(&state, "chatcmpl"));
    answer(
        state,
        stats,
        turn,
        ReplyParser::plain(),
        shape,
        stream,
        include_usage,
    )
    .await
}

/// `POST /v1/chat/completions` with the model's own chat template: a run of the rendered
/// prompt (a chat turn through the prompt cache, when it is on and the request is a plain
/// chat), ended at the template's end-of-turn tokens, its reply read into reasoning,
/// content and tool calls.
#[cfg(feature = "template")]
async fn hf_completion(
    state: Arc<AppState>,
    stats: Arc<RequestStats>,
    mut request: ChatRequest,
) -> Result<Response, ApiError> {
    let hf = state.hf.as_ref().expect("checked by the caller");
    request.check_supported(hf.takes_tools())?;
    let reply_tokens = reply_tokens(&state, request.max_completion_tokens.or(request.max_tokens))?;
    let prepared = hf.prepare(&request, state.config.system.as_deref())?;
    if prepared.prompt_tokens + reply_tokens as usize > state.config.max_context as usize {
        return Err(context_exceeded(&state, reply_tokens, "messages"));
    }
    let options = hf.options(options(reply_tokens, request.stop.take())?);
    let stream = request.stream.unwrap_or(false);
    let include_usage = request
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    // With the prompt cache on, a plain chat runs as a conversation on the chat session,
    // which reuses the prefill of the conversation's earlier turns; any other request runs
    // its rendered prompt as is. The prompt sent is the same either way.
    let conversation = match state.config.prompt_cache {
        Some(_) => hf.conversation(
            &request,
            state.config.system.as_deref(),
            &prepared,
            ContextBudget::new(state.config.max_context, reply_tokens),
        ),
        None => None,
    };
    let session = take_session(&state, &stats).await?;
    let turn = match conversation {
        Some((conversation, user)) => Running::chat(session, conversation, user, options).await?,
        None => Running::raw(session, prepared.input, options).await?,
    };
    let shape = ChatShape(Meta::new(&state, "chatcmpl"));
    answer(
        state,
        stats,
        turn,
        prepared.parser,
        shape,
        stream,
        include_usage,
    )
    .await
}
