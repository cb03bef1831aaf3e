//! Helpers shared by the integration tests: build mock models the way a user's tests would.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rkllm::mock::MockModel;
use rkllm::{Model, Runtime};

/// Writes `mock` to a fresh file and loads it into the mock runtime.
pub fn load(mock: &MockModel) -> Model {
    // The mock reads the file in `rkllm_init` only: it may go once the model is built.
    let file = mock.write_temp_file().expect("write mock model");
    Model::builder(&file)
        .runtime(Runtime::mock())
        .build()
        .expect("mock model loads")
}

/// A path under the temp directory, unique to this process and name; whatever is there
/// (a file, or a directory and its contents) is removed when it drops.
#[derive(Debug)]
pub struct TempPath(PathBuf);

impl std::ops::Deref for TempPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl From<&TempPath> for PathBuf {
    fn from(path: &TempPath) -> PathBuf {
        path.0.clone()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A file that exists (LoRA adapters must exist on disk for the runtime).
pub fn temp_file(name: &str, contents: &[u8]) -> TempPath {
    let path = temp_path(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A unique path in the temp directory (not created).
pub fn temp_path(name: &str) -> TempPath {
    TempPath(std::env::temp_dir().join(format!("rkllm-tests-{}-{name}", std::process::id())))
}

/// The mock's token ids (the C runtime's int32) as the crate's `u32` ids.
pub fn ids_of(ids: Vec<i32>) -> Vec<u32> {
    ids.into_iter()
        .map(|id| u32::try_from(id).expect("the mock's ids are not negative"))
        .collect()
}

/// Concatenated text of a stream that must not fail.
pub fn collect_text(
    stream: impl Iterator<Item = rkllm::Result<rkllm::Token>>,
) -> (String, Vec<u32>) {
    let mut text = String::new();
    let mut ids = Vec::new();
    for token in stream {
        let token = token.expect("token");
        text.push_str(&token.text);
        ids.push(token.id);
    }
    (text, ids)
}
