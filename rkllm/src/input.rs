//! What a run consumes: the four 1.1.1 input kinds, and per-run options.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::lora::LoraAdapter;

/// The input of one run. All four kinds of the 1.1.1 runtime; the buffers are owned, so they
/// outlive the run whatever the caller does with its own copies.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// Text, tokenized by the runtime (`RKLLM_INPUT_PROMPT`). 1.1.x applies no chat template:
    /// send the whole formatted prompt (see [`crate::chat`]).
    Prompt(String),
    /// Token ids (`RKLLM_INPUT_TOKEN`), e.g. from [`crate::chat`]'s token mode.
    Tokens(Vec<i32>),
    /// Input embeddings (`RKLLM_INPUT_EMBED`): `n_tokens` rows of the model's embedding size.
    Embeddings {
        /// `n_tokens × n_embed` floats, row-major.
        data: Vec<f32>,
        /// Number of rows.
        n_tokens: usize,
    },
    /// A prompt with an image embedding (`RKLLM_INPUT_MULTIMODAL`).
    Multimodal {
        /// The text, with the image placed by the model's `img_*` markers.
        prompt: String,
        /// `n_image_tokens × image-embedding-size` floats.
        image_embed: Vec<f32>,
        /// Number of image tokens.
        n_image_tokens: usize,
    },
}

impl Input {
    /// A text prompt.
    pub fn prompt(text: impl Into<String>) -> Input {
        Input::Prompt(text.into())
    }

    /// Token ids.
    pub fn tokens(ids: impl Into<Vec<i32>>) -> Input {
        Input::Tokens(ids.into())
    }

    /// Embeddings of `n_tokens` rows; `data.len()` must be a non-zero multiple of `n_tokens`.
    pub fn embeddings(data: impl Into<Vec<f32>>, n_tokens: usize) -> Input {
        Input::Embeddings {
            data: data.into(),
            n_tokens,
        }
    }

    /// A prompt with an image embedding of `n_image_tokens` rows.
    pub fn multimodal(
        prompt: impl Into<String>,
        image_embed: impl Into<Vec<f32>>,
        n_image_tokens: usize,
    ) -> Input {
        Input::Multimodal {
            prompt: prompt.into(),
            image_embed: image_embed.into(),
            n_image_tokens,
        }
    }

    /// Checks shapes and C-string rules in safe code, before anything reaches the runtime.
    pub(crate) fn validate(&self) -> Result<()> {
        fn rows(what: &str, len: usize, rows: usize) -> Result<()> {
            if rows == 0 || len == 0 {
                return Err(Error::InvalidInput(format!(
                    "{what}: no data ({len} floats, {rows} rows)"
                )));
            }
            if len % rows != 0 {
                return Err(Error::InvalidInput(format!(
                    "{what}: {len} floats do not divide into {rows} rows of equal size"
                )));
            }
            if i32::try_from(rows).is_err() {
                return Err(Error::InvalidInput(format!(
                    "{what}: too many rows ({rows})"
                )));
            }
            Ok(())
        }
        match self {
            Input::Prompt(p) => nul_free("prompt", p),
            Input::Tokens(ids) if ids.is_empty() => {
                Err(Error::InvalidInput("token input: no token ids".into()))
            }
            Input::Tokens(ids) => match ids.iter().position(|&id| id < 0) {
                Some(i) => Err(Error::InvalidInput(format!(
                    "token input: id {} at position {i} is negative",
                    ids[i]
                ))),
                None => Ok(()),
            },
            Input::Embeddings { data, n_tokens } => rows("embedding input", data.len(), *n_tokens),
            Input::Multimodal {
                prompt,
                image_embed,
                n_image_tokens,
            } => {
                nul_free("prompt", prompt)?;
                rows("image embedding", image_embed.len(), *n_image_tokens)
            }
        }
    }

    /// Number of prompt tokens when known without the runtime's tokenizer.
    pub(crate) fn known_token_count(&self) -> Option<usize> {
        match self {
            Input::Tokens(ids) => Some(ids.len()),
            Input::Embeddings { n_tokens, .. } => Some(*n_tokens),
            _ => None,
        }
    }
}

fn nul_free(field: &'static str, s: &str) -> Result<()> {
    match s.bytes().position(|b| b == 0) {
        Some(position) => Err(Error::Nul { field, position }),
        None => Ok(()),
    }
}

impl From<&str> for Input {
    fn from(s: &str) -> Input {
        Input::Prompt(s.to_owned())
    }
}

impl From<String> for Input {
    fn from(s: String) -> Input {
        Input::Prompt(s)
    }
}

pub use crate::gemma::{END_OF_TURN as GEMMA_END_OF_TURN, EOS as GEMMA_EOS};

/// Options of one run: stop conditions, LoRA, prompt-cache saving.
///
/// Stop conditions are enforced by this crate, with `rkllm_abort`: the 1.1.1 callback cannot
/// stop a run by itself.
///
/// ```
/// use rkllm::GenerateOptions;
/// let opts = GenerateOptions::gemma().max_tokens(256).stop_string("\nUser:");
/// ```
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    pub(crate) max_tokens: Option<usize>,
    pub(crate) stop_tokens: Vec<i32>,
    pub(crate) stop_strings: Vec<String>,
    pub(crate) lora: Option<LoraAdapter>,
    pub(crate) save_prompt_cache: Option<PathBuf>,
}

impl GenerateOptions {
    /// No stop conditions beyond the runtime's own.
    pub fn new() -> GenerateOptions {
        GenerateOptions::default()
    }

    /// Stops at Gemma's `<end_of_turn>` (107) and `<eos>` (1). With `skip_special_token` the
    /// runtime hides their text, so they are matched by id.
    pub fn gemma() -> GenerateOptions {
        GenerateOptions::new()
            .stop_token(GEMMA_END_OF_TURN)
            .stop_token(GEMMA_EOS)
    }

    /// Stops after `n` generated tokens.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Stops when the runtime produces this token id (the token is not output).
    pub fn stop_token(mut self, id: i32) -> Self {
        if !self.stop_tokens.contains(&id) {
            self.stop_tokens.push(id);
        }
        self
    }

    /// Stops when the output contains `s`, matched across token boundaries; the output is
    /// cut before it. Text that may begin a stop string is held back until it is decided.
    pub fn stop_string(mut self, s: impl Into<String>) -> Self {
        let s = s.into();
        if !s.is_empty() && !self.stop_strings.contains(&s) {
            self.stop_strings.push(s);
        }
        self
    }

    /// Runs with this LoRA adapter (loaded with [`Model::load_lora`](crate::Model::load_lora)).
    pub fn lora(mut self, adapter: &LoraAdapter) -> Self {
        self.lora = Some(adapter.clone());
        self
    }

    /// Asks the runtime to save this run's prompt prefill to `path`, for
    /// [`Session::load_prompt_cache`](crate::Session::load_prompt_cache) later.
    pub fn save_prompt_cache(mut self, path: impl Into<PathBuf>) -> Self {
        self.save_prompt_cache = Some(path.into());
        self
    }
}
