//! Safe, streaming Rust API for the Rockchip RKLLM runtime 1.1.x (`librkllmrt.so`) on the
//! RK3588 NPU.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

pub mod chat;
pub mod diagnosis;
mod error;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
mod runtime;

pub use error::{Error, Result};
pub use runtime::Runtime;
