//! The mock runtime (placeholder until the mock module lands).

pub(crate) fn library() -> rkllm_sys::Library {
    unimplemented!("mock runtime")
}
