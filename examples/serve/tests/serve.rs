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
    // The first token of the reply (the mock's tokenizer may split a word across tokens).
    while !seen.contains("\"content\":\"wo") {
        let Some(chunk) = body.next().await else {
            panic!("the stream ended before its first word: {seen}");
        };
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
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

/// A server whose model is busy with a long streamed reply; returns the base URL and the
/// running response (dropping it ends the reply).
async fn busy_server(config: Config) -> (String, reqwest::Response) {
    let base = server(Config {
        mock_replies: vec!["busy ".repeat(1000)],
        mock_decode_seconds: 0.02,
        ..config
    })
    .await;
    let running = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("hold the model"), "stream": true }),
    )
    .await;
    assert_eq!(running.status(), 200);
    (base, running)
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert!(
        !error["message"].as_str().unwrap().is_empty(),
        "no message: {body}"
    );
    assert!(error["type"].is_string(), "no type: {body}");
    (status, body["error"].clone())
}

#[tokio::test]
async fn a_head_sent_byte_by_byte_and_an_idle_connection_are_closed_after_the_head_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = server(Config {
        limits: rkllm_serve::Limits {
            header_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    let addr = base.trim_start_matches("http://");
    // One byte per second: the head would take 60 s.
    let head =
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut sent = 0;
    let closed = loop {
        if slow.write_all(&head[sent..sent + 1]).await.is_err() {
            break true;
        }
        sent += 1;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => {} // a 408 or similar before the close
            Err(_) => {}
        }
        assert!(sent < 20, "the slow head is still open after {sent} s");
    };
    assert!(closed);
    assert!(sent < head.len());
    eprintln!(
        "a head at 1 byte/s was closed after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // A keep-alive connection idle after a response is closed too.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the idle keep-alive connection is still open");
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_body_beyond_the_limit_gets_a_json_413() {
    let base = server(Config {
        limits: rkllm_serve::Limits {
            max_body_bytes: 1000,
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    let big = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user(&"x".repeat(2000)) }),
    )
    .await;
    let (status, error) = error_of(big).await;
    assert_eq!(status, 413);
    assert_eq!(error["code"], "request_too_large");
    // Chunked, without a length up front: refused while it is read.
    let chunks =
        futures_util::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 100])));
    let chunked = reqwest::Client::new()
        .post(format!("{base}/v1/embeddings"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let (status, _) = error_of(chunked).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn bad_ids_and_overlong_inputs_get_400_at_once_while_the_model_is_busy() {
    let (base, running) = busy_server(Config {
        max_context: 256,
        max_new_tokens: 32,
        ..Config::default()
    })
    .await;
    let cases = [
        ("/v1/embeddings", json!({ "input": [999_999_999] }), "input"),
        (
            "/v1/embeddings",
            json!({ "input": [[1, 2], [-1]] }),
            "input",
        ),
        (
            "/v1/embeddings",
            json!({ "input": (0..300).collect::<Vec<i32>>() }),
            "input",
        ),
        (
            "/v1/embeddings",
            json!({ "input": "long ".repeat(100) }),
            "input",
        ),
        (
            "/v1/embeddings",
            json!({ "input": vec!["a"; 2049] }),
            "input",
        ),
        ("/v1/embeddings", json!({ "input": [""] }), "input"),
        (
            "/v1/completions",
            json!({ "prompt": [5, 256_000] }),
            "prompt",
        ),
        (
            "/v1/completions",
            json!({ "prompt": "long ".repeat(100) }),
            "prompt",
        ),
        (
            "/v1/chat/completions",
            json!({ "messages": user(&"long ".repeat(100)) }),
            "messages",
        ),
    ];
    for (path, body, param) in cases {
        let response =
            tokio::time::timeout(Duration::from_secs(10), post(&base, path, body.clone()))
                .await
                .unwrap_or_else(|_| panic!("{path} {body} waited for the model"));
        let (status, error) = error_of(response).await;
        assert_eq!(status, 400, "{path} {body}: {error}");
        assert_eq!(error["param"], param, "{path}: {error}");
    }
    // A token budget per request.
    let small = server(Config {
        limits: rkllm_serve::Limits {
            max_embedding_tokens: 100,
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    let (status, error) = error_of(
        post(
            &small,
            "/v1/embeddings",
            json!({ "input": vec![vec![7; 60]; 2] }),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        error["message"].as_str().unwrap().contains("budget"),
        "{error}"
    );
    drop(running);
}

#[tokio::test]
async fn a_client_abandoning_2000_embedding_inputs_does_not_hold_up_the_next_chat() {
    // About 10 ms per input: 2,000 inputs would hold the model for 20 s or more.
    let base = server(Config {
        mock_prefill_seconds: 0.002,
        ..Config::default()
    })
    .await;
    let inputs: Vec<String> = (0..2000).map(|i| format!("input number {i}")).collect();
    let abandoned = tokio::time::timeout(
        Duration::from_millis(1500),
        post(&base, "/v1/embeddings", json!({ "input": inputs })),
    )
    .await;
    assert!(
        abandoned.is_err(),
        "the 2,000 inputs were embedded in 1.5 s"
    );
    let started = std::time::Instant::now();
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        post(
            &base,
            "/v1/chat/completions",
            json!({ "messages": user("next") }),
        ),
    )
    .await
    .expect("the next chat is served within 5 s");
    assert_eq!(next.status(), 200);
    eprintln!(
        "after 2,000 abandoned embedding inputs the next chat took {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn every_error_is_an_openai_error_object() {
    let base = server(Config {
        served_model_name: "my-gemma".into(),
        ..Config::default()
    })
    .await;
    let client = reqwest::Client::new();
    let (status, error) = error_of(
        client
            .get(format!("{base}/v1/nothing"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
    let (status, error) = error_of(
        client
            .get(format!("{base}/v1/chat/completions"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, error) = error_of(
        post(
            &base,
            "/v1/chat/completions",
            json!({ "model": "gpt-4o", "messages": user("hi") }),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("model_not_found"))
    );
    assert_eq!(error["param"], "model");
    let (status, _) = error_of(
        post(
            &base,
            "/v1/embeddings",
            json!({ "model": "other", "input": "x" }),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    // Parameters that would change the answer and are not supported: 400 naming them.
    let unsupported = [
        (json!({ "n": 2 }), "n"),
        (json!({ "logprobs": true }), "logprobs"),
        (
            json!({ "response_format": { "type": "json_object" } }),
            "response_format",
        ),
        (json!({ "tool_choice": "required" }), "tool_choice"),
        (
            json!({ "tools": [{ "type": "function", "function": { "name": "f", "parameters": {} } }] }),
            "tools",
        ),
    ];
    for (extra, param) in unsupported {
        let mut body = json!({ "model": "my-gemma", "messages": user("hi") });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, error) = error_of(post(&base, "/v1/chat/completions", body).await).await;
        assert_eq!(status, 400, "{param}");
        assert_eq!(error["param"], param);
    }
    let (status, error) = error_of(
        post(
            &base,
            "/v1/embeddings",
            json!({ "input": "x", "dimensions": 7 }),
        )
        .await,
    )
    .await;
    assert_eq!((status, error["param"].as_str()), (400, Some("dimensions")));
    // The model's own size is accepted.
    let ok = post(
        &base,
        "/v1/embeddings",
        json!({ "input": "x", "dimensions": 64 }),
    )
    .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn the_schemas_nulls_are_accepted_and_answers_name_the_served_model() {
    let base = server(Config {
        served_model_name: "my-gemma".into(),
        mock_replies: vec![REPLY.into()],
        ..Config::default()
    })
    .await;
    let body = json!({
        "model": "my-gemma", "messages": user("hi"), "stream": null, "stop": null,
        "stream_options": null, "max_tokens": null, "n": null, "logprobs": null,
        "response_format": { "type": "text" }, "tools": null, "tool_choice": "none",
        "temperature": null, "top_p": null,
    });
    let response = post(&base, "/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["model"], "my-gemma");
    assert!(answer["system_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("fp_"));
    assert_eq!(answer["choices"][0]["message"]["content"], REPLY);
    let models: Value = reqwest::get(format!("{base}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "my-gemma");
}

/// The samples of a Prometheus text exposition: `name{labels} value` for every line that
/// is not a comment; panics on a line that is neither.
fn prometheus_samples(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    let mut saw_eof = false;
    for line in text.lines() {
        assert!(!saw_eof, "a line after # EOF: {line}");
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        samples.push((series.to_owned(), value));
    }
    assert!(saw_eof, "no # EOF");
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map_or(0.0, |(_, v)| *v)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_requests() {
    let base = server(replying(REPLY)).await;
    let scrape = || async {
        let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        prometheus_samples(&response.text().await.unwrap())
    };
    let chat_ok =
        r#"rkllm_http_requests_total{method="POST",path="/v1/chat/completions",status="200"}"#;
    let chat_bad =
        r#"rkllm_http_requests_total{method="POST",path="/v1/chat/completions",status="400"}"#;
    let before = scrape().await;
    for _ in 0..2 {
        let r = post(
            &base,
            "/v1/chat/completions",
            json!({ "messages": user("Hi"), "stream": true }),
        )
        .await;
        r.text().await.unwrap();
    }
    let bad = post(&base, "/v1/chat/completions", json!({ "messages": [] })).await;
    assert_eq!(bad.status(), 400);
    bad.text().await.unwrap();
    let after = scrape().await;
    assert_eq!(sample(&after, chat_ok) - sample(&before, chat_ok), 2.0);
    assert_eq!(sample(&after, chat_bad) - sample(&before, chat_bad), 1.0);
    assert!(
        sample(&after, "rkllm_generated_tokens_total")
            > sample(&before, "rkllm_generated_tokens_total")
    );
    assert_eq!(
        sample(&after, "rkllm_time_to_first_token_seconds_count")
            - sample(&before, "rkllm_time_to_first_token_seconds_count"),
        2.0
    );
    assert_eq!(
        sample(&after, "rkllm_queue_wait_seconds_count")
            - sample(&before, "rkllm_queue_wait_seconds_count"),
        2.0
    );
    assert!(after.iter().any(|(s, _)| s == "rkllm_queue_depth"));
    assert!(sample(&after, "rkllm_decode_tokens_per_second") >= 0.0);
}

#[tokio::test]
async fn legacy_completions_continue_a_raw_prompt_streamed_or_not() {
    let base = server(replying(REPLY)).await;
    let whole: Value = post(
        &base,
        "/v1/completions",
        json!({ "model": "gemma-2", "prompt": "Once upon a time" }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["choices"][0]["text"], REPLY);
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    assert!(whole["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let streamed = post(
        &base,
        "/v1/completions",
        json!({ "prompt": [2, 651, 1234], "stream": true, "max_tokens": 4, "stream_options": { "include_usage": true } }),
    )
    .await;
    assert_eq!(streamed.status(), 200);
    let data = sse_data(&streamed.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert!(REPLY.starts_with(&text) && !text.is_empty(), "{text:?}");
    let finish: Vec<_> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["length"]);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 4);
    // The template is not applied: the echo mock answers the raw prompt as it is.
    let echo = server(Config::default()).await;
    let raw: Value = post(&echo, "/v1/completions", json!({ "prompt": "The sky is" }))
        .await
        .json()
        .await
        .unwrap();
    let text = raw["choices"][0]["text"].as_str().unwrap();
    assert!(!text.contains("<start_of_turn>"), "{text}");
    let (status, error) =
        error_of(post(&echo, "/v1/completions", json!({ "prompt": ["a", "b"] })).await).await;
    assert_eq!((status, error["param"].as_str()), (400, Some("prompt")));
    let (status, error) = error_of(
        post(
            &echo,
            "/v1/completions",
            json!({ "prompt": "a", "echo": true }),
        )
        .await,
    )
    .await;
    assert_eq!((status, error["param"].as_str()), (400, Some("echo")));
}

#[tokio::test]
async fn a_prompt_cache_in_ram_is_allowed() {
    let dir =
        std::path::Path::new("/dev/shm").join(format!("rkllm-serve-test-{}", std::process::id()));
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts.lines().any(
            |l| l.split(' ').nth(1) == Some("/dev/shm") && l.split(' ').nth(2) == Some("tmpfs")
        ),
        "this test needs /dev/shm on tmpfs, as on the boards"
    );
    let base = server(Config {
        prompt_cache: Some(dir.clone()),
        mock_replies: vec![REPLY.into()],
        ..Config::default()
    })
    .await;
    for _ in 0..2 {
        let response = post(
            &base,
            "/v1/chat/completions",
            json!({ "messages": user("Hi") }),
        )
        .await;
        assert_eq!(response.status(), 200);
    }
    assert!(dir.is_dir());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `curl` commands of the README's Serving section, each as (path, JSON body if any).
fn readme_curls() -> Vec<(String, Option<String>)> {
    let readme = include_str!("../../../README.md");
    let serving = &readme[readme.find("## Serving").unwrap()..];
    let serving = &serving[..serving[3..].find("\n## ").unwrap()];
    let mut commands = Vec::new();
    let mut lines = serving.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("curl ") {
            continue;
        }
        let mut command = line.to_owned();
        // Continued by a trailing backslash, or by an open single-quoted body.
        while command.ends_with('\\') || command.matches('\'').count() % 2 == 1 {
            command = command.trim_end_matches('\\').to_owned();
            command.push(' ');
            command.push_str(lines.next().unwrap());
        }
        let url = command
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap();
        let path = url["http://127.0.0.1:8080".len()..].to_owned();
        let body = command
            .find("-d '")
            .map(|i| command[i + 4..command.rfind('\'').unwrap()].to_owned());
        commands.push((path, body));
    }
    commands
}

#[tokio::test]
async fn the_readmes_curl_commands_work_as_written() {
    let base = server(Config::default()).await;
    let commands = readme_curls();
    assert!(commands.len() >= 4, "{commands:?}");
    let client = reqwest::Client::new();
    for (path, body) in commands {
        let request = match &body {
            Some(body) => client
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body.clone()),
            None => client.get(format!("{base}{path}")),
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "{path} {body:?}: {text}");
    }
}

#[tokio::test]
async fn a_stream_longer_than_the_head_timeout_is_not_cut() {
    let reply = "slow ".repeat(60);
    let base = server(Config {
        mock_replies: vec![reply.clone()],
        mock_decode_seconds: 0.05,
        limits: rkllm_serve::Limits {
            header_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    // About 3 s of tokens, three head timeouts long.
    let response = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("go"), "stream": true }),
    )
    .await;
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text: String = data[..data.len() - 1]
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, reply);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Replies of about 1 MB each, and a client that sends 12 requests at once (HTTP/1.1
    // pipelining) and reads nothing: more than the socket buffers between them hold, even
    // with the receive buffer of the client shrunk and the kernel's autotuning.
    let base = server(Config {
        mock_replies: vec!["word ".repeat(3500)],
        max_new_tokens: 4000,
        limits: rkllm_serve::Limits {
            write_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    let stalled = || async {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sample(
            &prometheus_samples(&text),
            "rkllm_stalled_connections_total",
        )
    };
    assert_eq!(stalled().await, 0.0);
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(addr).await.unwrap();
    let body = json!({ "messages": user("go"), "stream": true, "max_tokens": 4000 }).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    client
        .write_all(request.repeat(12).as_bytes())
        .await
        .unwrap();
    // Generous bound against a hang, not a speed check.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while stalled().await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The model is free for the next client.
    let next = post(
        &base,
        "/v1/chat/completions",
        json!({ "messages": user("hi"), "max_tokens": 5 }),
    )
    .await;
    assert_eq!(next.status(), 200);
    // What the client gets now is what was buffered before the cut, then the end: fewer
    // than the 12 replies.
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut received))
        .await
        .expect("the connection ends");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    let done = text.matches("[DONE]").count();
    assert!(
        read.is_err() || done < 12,
        "every reply arrived ({} bytes)",
        received.len()
    );
}
