//! The server over loopback, driven by a real HTTP client, on the mock runtime.

use std::time::Duration;

use futures_util::StreamExt;
use rkllm_serve::Config;
use serde_json::{json, Value};

const REPLY: &str = "Hello from the mock, friend. How can I help?";

/// Starts a server on 127.0.0.1 with a free port; returns its base URL.
async fn server(config: Config) -> String {
    let state = rkllm_serve::load(Config {
        mock: true,
        ..config
    })
    .expect("the server loads");
    let (addr, _task) = rkllm_serve::start(state, "127.0.0.1", 0).await.unwrap();
    format!("http://{addr}")
}

fn replying(reply: &str) -> Config {
    Config {
        mock_replies: vec![reply.into()],
        ..Config::default()
    }
}

fn user(text: &str) -> Value {
    json!([{ "role": "user", "content": text }])
}

async fn post(base: &str, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of an SSE body, and whether a comment line came before the first
/// token.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn streaming_sends_chunks_usage_and_done() {
    let base = server(replying(REPLY)).await;
    let response = post(
        &base,
        "/v1/chat/completions",
        json!({
            "model": "gemma-2",
            "messages": [
                { "role": "system", "content": "Be kind." },
                { "role": "user", "content": "Hi" }
            ],
            "stream": true,
            "stream_options": { "include_usage": true }
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, REPLY);
    let finish: Vec<_> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let usage = &chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    let u = &usage["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(u["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );
}

#[tokio::test]
async fn a_non_streamed_completion_honours_max_tokens_and_stop() {
    let base = server(replying(REPLY)).await;
    let full: Value = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("Hi") }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(full["object"], "chat.completion");
    assert_eq!(full["choices"][0]["message"]["role"], "assistant");
    assert_eq!(full["choices"][0]["message"]["content"], REPLY);
    assert_eq!(full["choices"][0]["finish_reason"], "stop");
    assert!(full["usage"]["completion_tokens"].as_u64().unwrap() > 3);

    let short: Value = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("Hi"), "max_tokens": 3 }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(short["choices"][0]["finish_reason"], "length");
    assert_eq!(short["usage"]["completion_tokens"], 3);
    let text = short["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        REPLY.starts_with(text) && text.len() < REPLY.len(),
        "{text:?}"
    );

    let stopped: Value = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("Hi"), "stop": [".", "?"] }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        stopped["choices"][0]["message"]["content"],
        "Hello from the mock, friend"
    );
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn two_concurrent_requests_are_both_served() {
    let base = server(Config {
        mock_decode_seconds: 0.005,
        ..Config::default()
    })
    .await;
    let a = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("first one") }),
    );
    let b = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("second one"), "stream": true }),
    );
    let (a, b) = tokio::join!(a, b);
    assert_eq!(a.status(), 200);
    assert_eq!(b.status(), 200);
    let a: Value = a.json().await.unwrap();
    // The mock echoes the user's message.
    assert_eq!(a["choices"][0]["message"]["content"], "first one");
    let data = sse_data(&b.text().await.unwrap());
    let text: String = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "second one");
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_frees_the_model_for_the_next() {
    let long = "word ".repeat(400);
    let base = server(Config {
        mock_replies: vec![long.clone()],
        mock_decode_seconds: 0.02,
        max_queue: 4,
        ..Config::default()
    })
    .await;
    let response = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("Talk"), "stream": true }),
    )
    .await;
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("word") {
        let chunk = body.next().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Gone mid-stream, with ~400 tokens (8 s of decoding) still to come.
    drop(body);
    // The next request is served: the run was aborted. The guard is generous (the rest of
    // the abandoned reply alone would take 8 s).
    let next = tokio::time::timeout(
        Duration::from_secs(6),
        post(
            &base,
            "/v1/chat/completions",
            json!({ "messages": user("Next"), "max_tokens": 2 }),
        ),
    )
    .await
    .expect("the next request is served while the abandoned run would still be going");
    assert_eq!(next.status(), 200);
    let v: Value = next.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn keep_alive_comments_flow_while_the_prefill_runs() {
    let base = server(Config {
        mock_prefill_seconds: 0.03,
        keep_alive: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let response = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("A question long enough to take a while to prefill"), "stream": true }),
    )
    .await;
    let body = response.text().await.unwrap();
    let first_token = body.find("\"content\":\"A").expect("the echo arrives");
    let comments = body[..first_token]
        .lines()
        .filter(|l| l.starts_with(':'))
        .count();
    assert!(
        comments >= 1,
        "no keep-alive before the first token:\n{body}"
    );
}

#[tokio::test]
async fn beyond_the_queue_a_request_gets_429_with_retry_after() {
    let base = server(Config {
        mock_replies: vec!["slow ".repeat(100)],
        mock_decode_seconds: 0.02,
        max_queue: 1,
        ..Config::default()
    })
    .await;
    let client = reqwest::Client::new();
    let running = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({ "messages": user("one"), "stream": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(running.status(), 200);
    let waiting = {
        let base = base.clone();
        tokio::spawn(async move {
            post(
                &base,
                "/v1/chat/completions",
                json!({ "messages": user("two"), "max_tokens": 1 }),
            )
            .await
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health: Value = client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["waiting"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second request never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("three") }),
    )
    .await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full");
    drop(running);
    assert_eq!(waiting.await.unwrap().status(), 200);
}

#[tokio::test]
async fn bad_requests_get_400_with_an_openai_error_body() {
    let base = server(Config {
        max_context: 128,
        max_new_tokens: 32,
        ..Config::default()
    })
    .await;
    let client = reqwest::Client::new();
    let bad_json = client
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let cases = [
        (bad_json, None),
        (
            post(
                &base,
                "/v1/chat/completions",
                json!({ "messages": [{ "role": "system", "content": "x" }] }),
            )
            .await,
            None,
        ),
        (
            post(
                &base,
                "/v1/chat/completions",
                json!({ "messages": [{ "role": "wizard", "content": "x" }] }),
            )
            .await,
            None,
        ),
        (
            post(
                &base,
                "/v1/chat/completions",
                json!({ "messages": user(&"long ".repeat(200)) }),
            )
            .await,
            Some("context_length_exceeded"),
        ),
        (
            post(
                &base,
                "/v1/chat/completions",
                json!({ "messages": user("hi"), "max_tokens": 0 }),
            )
            .await,
            None,
        ),
        (
            post(&base, "/v1/embeddings", json!({ "input": [] })).await,
            None,
        ),
    ];
    for (i, (response, code)) in cases.into_iter().enumerate() {
        assert_eq!(response.status(), 400, "case {i}");
        let body: Value = response.json().await.unwrap();
        let error = &body["error"];
        assert!(!error["message"].as_str().unwrap().is_empty(), "case {i}");
        assert_eq!(error["type"], "invalid_request_error", "case {i}");
        if let Some(code) = code {
            assert_eq!(error["code"], code, "case {i}");
        }
    }
    // The server is fine afterwards.
    let ok = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("hi") }),
    )
    .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn embeddings_come_as_floats_or_base64() {
    let base = server(Config::default()).await;
    let floats: Value = post(
        &base,
        "/v1/embeddings",
        json!({ "model": "gemma-2", "input": ["The cat sat", "A dog barked"] }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(floats["object"], "list");
    let data = floats["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let first: Vec<f32> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(first.len(), 64);
    let norm: f32 = first.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3);
    assert_eq!(data[1]["index"], 1);

    let b64: Value = post(
        &base,
        "/v1/embeddings",
        json!({ "input": "The cat sat", "encoding_format": "base64" }),
    )
    .await
    .json()
    .await
    .unwrap();
    let encoded = b64["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(encoded, rkllm_serve::base64_f32(&first));
}

#[tokio::test]
async fn models_and_health_answer() {
    let base = server(Config::default()).await;
    let models: Value = reqwest::get(format!("{base}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "gemma-2");
    assert_eq!(models["data"][0]["object"], "model");
    let health: Value = reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
}
