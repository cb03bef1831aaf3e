//! Helpers shared by the integration tests: build mock models the way a user's tests would.
#![allow(dead_code)]

use std::path::PathBuf;

use rkllm::mock::MockModel;
use rkllm::{Model, Runtime};

/// Writes `mock` to a fresh file and loads it into the mock runtime.
pub fn load(mock: &MockModel) -> Model {
    let path = mock.write_temp().expect("write mock model");
    Model::builder(path)
        .runtime(Runtime::mock())
        .build()
        .expect("mock model loads")
}

/// A file that exists (LoRA adapters must exist on disk for the runtime).
pub fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rkllm-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A unique path in a per-process temp directory (not created).
pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rkllm-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Concatenated text of a stream that must not fail.
pub fn collect_text(
    stream: impl Iterator<Item = rkllm::Result<rkllm::Token>>,
) -> (String, Vec<i32>) {
    let mut text = String::new();
    let mut ids = Vec::new();
    for token in stream {
        let token = token.expect("token");
        text.push_str(&token.text);
        ids.push(token.id);
    }
    (text, ids)
}
