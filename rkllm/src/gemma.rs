//! Gemma 2's special token ids and vocabulary size, defined once for the whole crate (the
//! stop tokens, the chat template, the mock's tokenizer and the probe use these).
//!
//! Ids are `u32`, the crate's token id type (the seam converts them to the runtime's
//! `int32`).
//!
//! ```
//! use rkllm::{gemma, GenerateOptions};
//! assert_eq!(gemma::END_OF_TURN, 107);
//! // A Gemma generation outside a chat: ends cleanly at <end_of_turn> and <eos>.
//! let options = GenerateOptions::gemma().max_tokens(64);
//! # let _ = options;
//! ```

use crate::input::GenerateOptions;

/// `<pad>`.
pub const PAD: u32 = 0;
/// `<eos>`, which ends a reply.
pub const EOS: u32 = 1;
/// `<bos>`, the start of every prompt.
pub const BOS: u32 = 2;
/// `<start_of_turn>`.
pub const START_OF_TURN: u32 = 106;
/// `<end_of_turn>`, which ends a turn, the model's reply included.
pub const END_OF_TURN: u32 = 107;
/// The vocabulary size: every id is below it.
pub const VOCAB_SIZE: u32 = 256_000;

/// Gemma's ids that end a reply: `<end_of_turn>` and `<eos>`.
pub const END_TOKENS: [u32; 2] = [END_OF_TURN, EOS];

impl GenerateOptions {
    /// Ends the turn at Gemma's `<end_of_turn>` (107) and `<eos>` (1)
    /// ([`FinishReason::EndOfTurn`](crate::FinishReason::EndOfTurn)). With
    /// `skip_special_token` the runtime hides their text, so they are matched by id.
    pub fn gemma() -> GenerateOptions {
        GenerateOptions::new().end_tokens(END_TOKENS)
    }
}
