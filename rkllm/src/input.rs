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
    /// Token ids (`RKLLM_INPUT_TOKEN`), e.g. from [`crate::chat`]'s token mode. Ids are
    /// `u32` throughout the crate, as tokenizers give them; the runtime takes `int32`, so an
    /// id above `i32::MAX` is refused.
    Tokens(Vec<u32>),
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
    pub fn tokens(ids: impl Into<Vec<u32>>) -> Input {
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

    /// Checks the input's shape and C-string rules in safe code, as every run does before
    /// anything reaches the runtime. A server can call it early, to answer a bad request
    /// before it waits for the model.
    ///
    /// Refused: an empty text prompt, an empty token list, a token id the runtime's `int32`
    /// cannot hold (above `i32::MAX`), empty or ragged embeddings, and NUL bytes in text.
    ///
    /// ```
    /// use rkllm::Input;
    /// assert!(Input::prompt("Hello").validate().is_ok());
    /// assert!(Input::prompt("").validate().is_err());
    /// assert!(Input::tokens(vec![2, u32::MAX]).validate().is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad shape or token id, [`Error::Nul`] for a NUL byte.
    pub fn validate(&self) -> Result<()> {
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
            Input::Prompt(p) if p.is_empty() => Err(Error::InvalidInput(
                "text prompt: empty; send at least one character (a chat prompt holds at least \
                 the template's markers)"
                    .into(),
            )),
            Input::Prompt(p) => nul_free("prompt", p),
            Input::Tokens(ids) if ids.is_empty() => {
                Err(Error::InvalidInput("token input: no token ids".into()))
            }
            Input::Tokens(ids) => match ids.iter().position(|&id| i32::try_from(id).is_err()) {
                Some(i) => Err(Error::InvalidInput(format!(
                    "token input: id {} at position {i} is above {}, the largest the runtime's \
                     int32 token ids can hold",
                    ids[i],
                    i32::MAX
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

    /// Checks token ids against a vocabulary of `vocab_size` tokens: each id must be in
    /// `0..vocab_size`. The 1.1.1 runtime documents no check of its own, and an id outside
    /// the vocabulary indexes past the model's embedding table, so check ids that come from
    /// outside (a request body) against the model's vocabulary size. Inputs other
    /// than [`Input::Tokens`] hold no ids and pass.
    ///
    /// ```
    /// use rkllm::Input;
    /// assert!(Input::tokens(vec![2, 106, 255_999]).validate_vocab(256_000).is_ok());
    /// let err = Input::tokens(vec![2, 256_000]).validate_vocab(256_000).unwrap_err();
    /// assert!(err.to_string().contains("id 256000 at position 1"));
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad id and its position: one not below
    /// `vocab_size`.
    pub fn validate_vocab(&self, vocab_size: u32) -> Result<()> {
        let Input::Tokens(ids) = self else {
            return Ok(());
        };
        match ids.iter().position(|&id| id >= vocab_size) {
            Some(i) => Err(Error::InvalidInput(format!(
                "token input: id {} at position {i} is outside the vocabulary of {vocab_size} \
                 tokens (ids are 0..{vocab_size}); was it encoded with another model's tokenizer?",
                ids[i]
            ))),
            None => Ok(()),
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

/// Options of one run: stop conditions, LoRA, prompt-cache saving.
///
/// Stop conditions are enforced by this crate, with `rkllm_abort`: the 1.1.1 callback cannot
/// stop a run by itself. The run path knows no model's ids: which ids end a turn
/// ([`end_token`](Self::end_token), a clean [`FinishReason::EndOfTurn`](crate::FinishReason::EndOfTurn))
/// and which merely stop it ([`stop_token`](Self::stop_token)) are the caller's to say; the
/// chat layer gives its template's end tokens.
///
/// # Sampling is fixed per model
///
/// There is no temperature, `top_p`, `top_k` or penalty here: in RKLLM 1.1.1 sampling is
/// part of the model's parameters, set once on the [`ModelBuilder`](crate::ModelBuilder)
/// ([`temperature`](crate::ModelBuilder::temperature),
/// [`top_p`](crate::ModelBuilder::top_p), [`top_k`](crate::ModelBuilder::top_k),
/// [`repeat_penalty`](crate::ModelBuilder::repeat_penalty),
/// [`frequency_penalty`](crate::ModelBuilder::frequency_penalty),
/// [`presence_penalty`](crate::ModelBuilder::presence_penalty),
/// [`mirostat`](crate::ModelBuilder::mirostat)) and passed to `rkllm_init`; the per-run
/// `RKLLMInferParam` has no sampling fields. A server therefore cannot honour per-request
/// sampling settings: it applies the model's, and should say so (or load one model per
/// setting it offers). A per-request token budget is [`max_tokens`](Self::max_tokens).
///
/// ```
/// use rkllm::GenerateOptions;
/// # let end_of_turn = 0;
/// let opts = GenerateOptions::new()
///     .end_token(end_of_turn) // the model's end-of-turn id, from its tokenizer or template
///     .max_tokens(256)
///     .stop_string("\nUser:");
/// ```
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    pub(crate) max_tokens: Option<usize>,
    pub(crate) stop_tokens: Vec<u32>,
    pub(crate) end_tokens: Vec<u32>,
    pub(crate) stop_strings: Vec<String>,
    pub(crate) lora: Option<LoraAdapter>,
    pub(crate) save_prompt_cache: Option<PathBuf>,
}

impl GenerateOptions {
    /// No stop conditions beyond the runtime's own.
    pub fn new() -> GenerateOptions {
        GenerateOptions::default()
    }

    /// Stops after `n` generated tokens. Token counts are `u32` throughout the crate, as in
    /// [`ModelBuilder::max_new_tokens`](crate::ModelBuilder::max_new_tokens) and
    /// [`ContextBudget`](crate::chat::ContextBudget).
    pub fn max_tokens(mut self, n: u32) -> Self {
        // usize holds every u32 on the targets this crate builds for (32 and 64 bits).
        self.max_tokens = Some(usize::try_from(n).unwrap_or(usize::MAX));
        self
    }

    /// Stops when the runtime produces this token id (the token is not output); the run
    /// ends with [`FinishReason::StopToken`](crate::FinishReason::StopToken).
    pub fn stop_token(mut self, id: u32) -> Self {
        if !self.stop_tokens.contains(&id) {
            self.stop_tokens.push(id);
        }
        self
    }

    /// Ends the turn when the runtime produces this token id, the model's own end of its
    /// reply (the token is not output): the run ends cleanly with
    /// [`FinishReason::EndOfTurn`](crate::FinishReason::EndOfTurn). Matched by id, so it
    /// works when the runtime hides special tokens' text (`skip_special_token`). An id given
    /// as both an end and a stop token counts as an end token.
    pub fn end_token(mut self, id: u32) -> Self {
        if !self.end_tokens.contains(&id) {
            self.end_tokens.push(id);
        }
        self
    }

    /// Ends the turn at each of these ids (see [`end_token`](Self::end_token)).
    pub fn end_tokens(self, ids: impl IntoIterator<Item = u32>) -> Self {
        ids.into_iter().fold(self, Self::end_token)
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
