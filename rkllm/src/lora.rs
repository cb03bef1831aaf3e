//! LoRA adapters as values: only one a model loaded can be selected for a run.

use std::sync::Arc;

/// A LoRA adapter loaded into a model, selected per run with
/// [`GenerateOptions::lora`](crate::GenerateOptions::lora).
///
/// Only a value returned by [`Model::load_lora`](crate::Model::load_lora) exists, so a
/// misspelt name cannot silently run the base model, and an adapter of another model is
/// refused at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoraAdapter {
    pub(crate) name: Arc<str>,
    pub(crate) model_id: u64,
}

impl LoraAdapter {
    /// The adapter's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
