//! An OpenAI-compatible server for a Gemma 2 model on the RK3588 NPU.
//!
//! ```text
//! cargo run --release --example serve -- --mock            # the mock runtime, echoing
//! cargo run --release --example serve -- --model gemma-2-2b-it-w8a8.rkllm \
//!     --tokenizer tokenizer.json --prompt-cache /dev/shm/rkllm-serve --host 0.0.0.0
//! curl http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \
//!     -d '{"model":"gemma-2","messages":[{"role":"user","content":"Hello"}],"stream":true}'
//! ```

fn main() -> std::process::ExitCode {
    rkllm_serve::cli::main()
}
