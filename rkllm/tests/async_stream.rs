//! The async face of the streams and of the fair wait, on two executors: tokio and the
//! `futures` crate's own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rkllm::chat::{ChatSession, Conversation, SystemStyle};
use rkllm::mock::{MockModel, RunFailure};
use rkllm::wait::WaitError;
use rkllm::{AsyncTokenStream, FinishReason, GenerateOptions, Model, Runtime};

fn load(mock: &MockModel) -> Model {
    let path = mock.write_temp_file().expect("write mock model");
    Model::builder(&*path)
        .runtime(Runtime::mock())
        .build()
        .expect("mock model loads")
}

const ANSWER: &str = "Streams arrive, wörd by wörd ✓";

async fn collect(stream: &mut AsyncTokenStream) -> (String, usize) {
    let (mut text, mut n) = (String::new(), 0);
    while let Some(token) = stream.next().await {
        text.push_str(&token.unwrap().text);
        n += 1;
    }
    (text, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_moves_into_a_tokio_task_and_matches_the_iterator() {
    let model = load(
        &MockModel::new()
            .answer(ANSWER)
            .decode_seconds_per_token(0.002),
    );
    let session = model.session().unwrap();
    let mut stream = session
        .into_generate("q", &GenerateOptions::new())
        .unwrap()
        .into_async();
    let (text, tokens, session) = tokio::spawn(async move {
        let (text, n) = collect(&mut stream).await;
        assert_eq!(stream.finish_reason(), Some(&FinishReason::Finished));
        (text, n, stream.into_session())
    })
    .await
    .unwrap();
    assert_eq!(text, ANSWER);
    // The same run through the blocking iterator yields the same tokens.
    let mut session = session;
    let sync: Vec<_> = session
        .generate("q", &GenerateOptions::new())
        .unwrap()
        .map(|t| t.unwrap().text)
        .collect();
    assert_eq!(sync.len(), tokens);
    assert_eq!(sync.concat(), ANSWER);
}

#[test]
fn a_generation_streams_on_the_futures_executor() {
    let model = load(
        &MockModel::new()
            .answer(ANSWER)
            .decode_seconds_per_token(0.002),
    );
    let mut stream = model
        .session()
        .unwrap()
        .into_generate("q", &GenerateOptions::new().stop_string(","))
        .unwrap()
        .into_async();
    let (text, _) = futures::executor::block_on(collect(&mut stream));
    assert_eq!(text, "Streams arrive");
    assert_eq!(
        stream.finish_reason(),
        Some(&FinishReason::StopString(",".into()))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_chat_turn_streams_in_a_task_and_records_the_reply() {
    let model = load(&MockModel::new().turns(["First.", "Second."]));
    let chat = ChatSession::new(model.session().unwrap());
    let mut stream = chat
        .into_chat(
            Conversation::new(SystemStyle::Merge),
            "Hi",
            &GenerateOptions::new(),
        )
        .unwrap()
        .into_async();
    let handle = tokio::spawn(async move {
        let mut text = String::new();
        while let Some(token) = stream.next().await {
            text.push_str(&token.unwrap().text);
        }
        assert_eq!(stream.finish_reason(), Some(&FinishReason::EndOfTurn));
        (text, stream.into_parts())
    });
    let (text, (chat, conversation)) = handle.await.unwrap();
    assert_eq!(text, "First.");
    assert_eq!(conversation.messages().len(), 2);
    let (done, _) = chat
        .into_chat(conversation, "Again", &GenerateOptions::new())
        .unwrap()
        .complete();
    assert_eq!(done.unwrap().text, "Second.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_async_stream_ends_without_blocking_and_frees_the_session() {
    let model = load(
        &MockModel::new()
            .answer("a b c d e f g h i j k l m n o p q r s t")
            .decode_seconds_per_token(0.05),
    );
    let mut stream = model
        .session()
        .unwrap()
        .into_generate("q", &GenerateOptions::new())
        .unwrap()
        .into_async();
    stream.next().await.unwrap().unwrap();
    stream.abort();
    while let Some(item) = stream.next().await {
        item.unwrap();
    }
    assert_eq!(stream.finish_reason(), Some(&FinishReason::Aborted));
    drop(stream);
    // Dropping one mid-run stops it too.
    let mut stream = model
        .session_async(Duration::from_secs(5))
        .await
        .unwrap()
        .into_generate("q", &GenerateOptions::new())
        .unwrap()
        .into_async();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    assert!(model.session_async(Duration::from_secs(5)).await.is_ok());
}

#[test]
fn a_run_error_arrives_as_for_the_iterator() {
    let model = load(
        &MockModel::new()
            .answer("one two three four")
            .fail_runs(RunFailure::ErrorAfterTokens { tokens: 2 }),
    );
    let mut session = model.session().unwrap();
    let sync: Vec<_> = session
        .generate("q", &GenerateOptions::new())
        .unwrap()
        .map(|t| t.map(|t| t.text).map_err(|e| e.to_string()))
        .collect();
    let mut stream = session
        .into_generate("q", &GenerateOptions::new())
        .unwrap()
        .into_async();
    let items: Vec<_> = futures::executor::block_on(async {
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            items.push(item.map(|t| t.text).map_err(|e| e.to_string()));
        }
        items
    });
    assert_eq!(items, sync);
    assert!(matches!(items.last(), Some(Err(_))), "{items:?}");
    assert_eq!(stream.finish_reason(), Some(&FinishReason::Error));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_waiters_get_the_session_in_order_with_timeout_and_bound() {
    let model = Arc::new(load(&MockModel::new().answer("ok")));
    model.set_max_session_waiters(3);
    let held = model.session().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (m, order) = (Arc::clone(&model), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let session = m.session_async(Duration::from_secs(30)).await.unwrap();
            order.lock().unwrap().push(i);
            drop(session);
        }));
        while model.session_waiting() != i + 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(matches!(
        model.session_async(Duration::from_secs(30)).await,
        Err(WaitError::QueueFull { limit: 3 })
    ));
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    // A timeout needs no runtime timer: the wait resolves by itself.
    let held = model.session().unwrap();
    let timed_out = futures::executor::block_on(model.session_async(Duration::from_millis(50)));
    assert!(matches!(timed_out, Err(WaitError::TimedOut { .. })));
    // A wait dropped while queued leaves the queue.
    let wait = model.session_async(Duration::from_secs(30));
    let polled = tokio::time::timeout(Duration::from_millis(20), wait).await;
    assert!(polled.is_err());
    assert_eq!(model.session_waiting(), 0);
    drop(held);
    assert!(model.session().is_ok());
}
