//! Gemma 2's special token ids and vocabulary size, defined once for the whole crate (the
//! stop tokens, the chat template, the mock's tokenizer and the probe use these).
//!
//! Ids are `i32`, the runtime's token type (`RKLLMResult.token_id`, `RKLLMTokenInput`).
//!
//! ```
//! use rkllm::gemma;
//! assert_eq!(gemma::END_OF_TURN, 107);
//! assert_eq!(rkllm::GEMMA_END_OF_TURN, gemma::END_OF_TURN);
//! ```

/// `<pad>`.
pub const PAD: i32 = 0;
/// `<eos>`, which ends a reply.
pub const EOS: i32 = 1;
/// `<bos>`, the start of every prompt.
pub const BOS: i32 = 2;
/// `<start_of_turn>`.
pub const START_OF_TURN: i32 = 106;
/// `<end_of_turn>`, which ends a turn, the model's reply included.
pub const END_OF_TURN: i32 = 107;
/// The vocabulary size: every id is below it.
pub const VOCAB_SIZE: i32 = 256_000;
