//! The server as a binary of its own (the same program as `cargo run --example serve`).

fn main() -> std::process::ExitCode {
    rkllm_serve::cli::main()
}
