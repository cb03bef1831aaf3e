//! Diagnosis of init failures (placeholder until the diagnosis module lands).

/// An init failure with its diagnosis.
#[derive(Debug, thiserror::Error)]
#[error("rkllm_init failed with return code {code:?}")]
pub struct InitError {
    /// Return code, `None` when init returned 0 without a handle.
    pub code: Option<i32>,
}
