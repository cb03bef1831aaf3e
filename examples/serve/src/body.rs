//! Request bodies read within bounds, and response bodies that report when they end.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use http_body::{Frame, SizeHint};
use serde::de::DeserializeOwned;

use crate::openai::ApiError;
use crate::AppState;

/// Reads a JSON request body: at most `max_body_bytes` (else 413) within `body_timeout`
/// (else 408), then parses it (else 400). Every answer is an OpenAI error object.
pub async fn read_json<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let limit = state.config.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body exceeds this server's limit of {limit} bytes"),
            "invalid_request_error",
        )
        .with_code("request_too_large")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let timeout: Duration = state.config.limits.body_timeout;
    let bytes: Bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await
    {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs()
                ),
                "invalid_request_error",
            )
            .with_code("request_timeout"))
        }
        Ok(Err(e)) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large());
                }
                source = s.source();
            }
            return Err(ApiError::bad_request(
                format!("reading the request body: {e}"),
                None,
            ));
        }
        Ok(Ok(bytes)) => bytes,
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid: {e}"), None))
}

/// A response body that holds `guard` until it ends or is dropped: the connection's
/// in-flight count and the request's log line go with it.
pub struct GuardedBody<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + 'static> GuardedBody<G> {
    /// `inner`, holding `guard` while it lasts.
    pub fn wrap(inner: Body, guard: G) -> Body {
        Body::new(GuardedBody {
            inner,
            _guard: guard,
        })
    }
}

impl<G> http_body::Body for GuardedBody<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// `Body` is Unpin, and the guard is never pinned: nothing is structurally pinned.
impl<G> Unpin for GuardedBody<G> {}
