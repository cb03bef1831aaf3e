//! `POST /v1/embeddings`: every input checked before the request queues, and the inputs
//! embedded one by one, stopping when the client goes away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rkllm::Input;
use serde_json::{json, Value};

use crate::body::read_json;
use crate::chat::take_session;
use crate::log::RequestStats;
use crate::openai::{
    base64_f32, error_of, unsupported, ApiError, EmbeddingInput, EmbeddingRequest,
};
use crate::{AppState, MAX_EMBEDDING_INPUTS};

/// Token ids from a request, checked against the vocabulary.
pub fn token_ids(
    state: &AppState,
    ids: Vec<i64>,
    param: &'static str,
) -> Result<Vec<u32>, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::bad_request("an input has no tokens", Some(param)));
    }
    let Some(vocab) = state.vocab_size.map(i64::from) else {
        return Err(ApiError::bad_request(
            "token ids are not accepted: the server does not know the model's vocabulary \
             (start it with the model's tokenizer.json: --tokenizer or --model-dir); send text",
            Some(param),
        ));
    };
    ids.into_iter()
        .map(|id| {
            if (0..vocab).contains(&id) {
                Ok(id as u32)
            } else {
                Err(ApiError::bad_request(
                    format!("token id {id} is outside the vocabulary (0..{vocab})"),
                    Some(param),
                ))
            }
        })
        .collect()
}

/// A text's length in tokens: exact with the tokenizer; without, its UTF-8 length plus
/// one, an upper bound (no Gemma token is shorter than one byte, BOS aside).
pub fn text_tokens(state: &AppState, text: &str) -> Result<usize, ApiError> {
    #[cfg(feature = "template")]
    if let Some(n) = state.hf.as_ref().and_then(|hf| hf.count_text(text)) {
        return n.map(|n| n + 1);
    }
    #[cfg(feature = "tokenizer")]
    if let Some(tokenizer) = &state.tokenizer {
        return tokenizer
            .count_text(text)
            .map(|n| n + 1)
            .map_err(|e| ApiError::bad_request(format!("tokenizing the input: {e}"), None));
    }
    let _ = state;
    Ok(text.len() + 1)
}

/// Sets the flag when dropped: the handler's future is dropped when the client goes away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    Extension(stats): Extension<Arc<RequestStats>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match embed(state, stats, headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn embed(
    state: Arc<AppState>,
    stats: Arc<RequestStats>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: EmbeddingRequest = read_json(&state, &headers, body).await?;
    state.check_model(request.model.as_deref())?;
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
    if let Some(dimensions) = request.dimensions {
        if state.embedding_size != Some(dimensions as usize) {
            return Err(unsupported(
                "dimensions",
                &match state.embedding_size {
                    Some(n) => format!(
                        "this model's embeddings have {n} dimensions; {dimensions} is not supported"
                    ),
                    None => "dimensions is not supported".to_owned(),
                },
            ));
        }
    }
    let count = match &request.input {
        EmbeddingInput::One(_) | EmbeddingInput::Tokens(_) => 1,
        EmbeddingInput::Many(v) => v.len(),
        EmbeddingInput::TokenBatch(v) => v.len(),
    };
    if count == 0 {
        return Err(ApiError::bad_request("input is empty", Some("input")));
    }
    if count > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::bad_request(
            format!("{count} inputs; at most {MAX_EMBEDDING_INPUTS} per request"),
            Some("input"),
        ));
    }
    // Every input is checked (ids against the vocabulary, length against the context)
    // before the request waits for the model.
    let context = state.config.max_context as usize;
    let mut inputs = Vec::with_capacity(count);
    let mut total = 0usize;
    let mut add = |input: Input, tokens: usize| -> Result<(), ApiError> {
        if tokens > context {
            return Err(ApiError::bad_request(
                format!(
                    "input {} has {tokens} tokens{}; the context holds {context}",
                    inputs.len(),
                    if state_has_tokenizer(&state) {
                        ""
                    } else {
                        " (an upper bound: the server counts bytes without --tokenizer)"
                    }
                ),
                Some("input"),
            )
            .with_code("context_length_exceeded"));
        }
        total += tokens;
        if total > state.config.limits.max_embedding_tokens {
            return Err(ApiError::bad_request(
                format!(
                    "the inputs exceed this server's budget of {} tokens per request",
                    state.config.limits.max_embedding_tokens
                ),
                Some("input"),
            ));
        }
        inputs.push(input);
        Ok(())
    };
    match request.input {
        EmbeddingInput::One(s) => {
            check_text(&s)?;
            let n = text_tokens(&state, &s)?;
            add(Input::prompt(s), n)?;
        }
        EmbeddingInput::Many(v) => {
            for s in v {
                check_text(&s)?;
                let n = text_tokens(&state, &s)?;
                add(Input::prompt(s), n)?;
            }
        }
        EmbeddingInput::Tokens(ids) => {
            let ids = token_ids(&state, ids, "input")?;
            let n = ids.len();
            add(Input::tokens(ids), n)?;
        }
        EmbeddingInput::TokenBatch(batch) => {
            for ids in batch {
                let ids = token_ids(&state, ids, "input")?;
                let n = ids.len();
                add(Input::tokens(ids), n)?;
            }
        }
    }
    stats.tokens_in(total);
    let mut session = take_session(&state, &stats).await?;
    // One input at a time; a client that goes away (this future dropped) or the end of the
    // shutdown's grace period stops the rest.
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(Arc::clone(&cancelled));
    let shared = Arc::clone(&state);
    let vectors = tokio::task::spawn_blocking(move || {
        let mut vectors = Vec::with_capacity(inputs.len());
        for input in inputs {
            if cancelled.load(Ordering::SeqCst) || shared.grace_over() {
                return Ok(None);
            }
            vectors.push(session.embed(input)?);
        }
        Ok(Some(vectors))
    })
    .await
    .map_err(|e| ApiError::server(format!("embedding: {e}")))?
    .map_err(|e: rkllm::Error| error_of(&e))?
    .ok_or_else(ApiError::shutting_down)?;
    state.metrics.record_prompt_tokens(total);
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
        "model": state.config.served_model_name,
        "usage": { "prompt_tokens": total, "total_tokens": total },
    }))
    .into_response())
}

fn state_has_tokenizer(state: &AppState) -> bool {
    #[cfg(feature = "template")]
    if state
        .hf
        .as_ref()
        .is_some_and(|hf| hf.vocab_size().is_some())
    {
        return true;
    }
    #[cfg(feature = "tokenizer")]
    return state.tokenizer.is_some();
    #[cfg(not(feature = "tokenizer"))]
    {
        let _ = state;
        false
    }
}

fn check_text(text: &str) -> Result<(), ApiError> {
    if text.is_empty() {
        return Err(ApiError::bad_request(
            "an input is an empty string",
            Some("input"),
        ));
    }
    Ok(())
}
