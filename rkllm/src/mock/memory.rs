//! The simulated NPU memory: one pool per process that every mock model draws from.
//!
//! The real NPU allocates weights from system RAM through an IOMMU, so a process that loads
//! two models can run out. The pool reproduces that: a model whose
//! [`npu_memory_bytes`](super::MockModel::npu_memory_bytes) do not fit fails `rkllm_init`
//! with the runtime's out-of-memory lines, and `rkllm_destroy` gives its share back.
//!
//! Models need 0 bytes unless they say otherwise, so ordinary tests never touch the pool and
//! cannot interfere with each other through it; tests of the pool itself should serialise
//! among themselves.

use std::sync::Mutex;

/// Environment variable holding the pool's size in bytes, read at each `rkllm_init`.
pub const NPU_MEMORY_ENV: &str = "RKLLM_MOCK_NPU_MEMORY";

/// The pool's size when neither [`set_npu_memory_capacity`] nor [`NPU_MEMORY_ENV`] says
/// otherwise: 16 GiB, the RAM of the larger RK3588 boards.
pub const DEFAULT_NPU_MEMORY: u64 = 16 << 30;

struct Pool {
    used: u64,
    capacity_override: Option<u64>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    used: 0,
    capacity_override: None,
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // The pool's state is two integers, always consistent; a panic elsewhere cannot
    // leave it half-updated, so a poisoned lock is still good.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the pool's size for this process, overriding [`NPU_MEMORY_ENV`]; `None` returns to
/// the environment variable (or [`DEFAULT_NPU_MEMORY`]). Models already loaded keep their
/// memory, even if the new size is smaller than what is in use.
pub fn set_npu_memory_capacity(bytes: Option<u64>) {
    pool().capacity_override = bytes;
}

/// The pool's size as the next `rkllm_init` will see it.
pub fn npu_memory_capacity() -> u64 {
    let over = pool().capacity_override;
    over.unwrap_or_else(|| capacity_from_env().0)
}

/// Bytes held by the mock models currently loaded in this process.
pub fn npu_memory_in_use() -> u64 {
    pool().used
}

/// The size from the environment, with a warning to print when the variable is malformed.
fn capacity_from_env() -> (u64, Option<String>) {
    match std::env::var(NPU_MEMORY_ENV) {
        Err(_) => (DEFAULT_NPU_MEMORY, None),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) => (n, None),
            Err(_) => (
                DEFAULT_NPU_MEMORY,
                Some(format!(
                    "ignoring {NPU_MEMORY_ENV}={v:?}: not a number of bytes; using {DEFAULT_NPU_MEMORY}"
                )),
            ),
        },
    }
}

/// Memory held by one loaded model; given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut p = pool();
        p.used = p.used.saturating_sub(self.bytes);
    }
}

/// Why a reservation was refused.
#[derive(Debug)]
pub(crate) struct OutOfMemory {
    /// The size that was asked for.
    pub(crate) requested: u64,
}

/// Takes `bytes` from the pool, or refuses when they do not fit. The second value is a
/// warning line to print (a malformed environment variable).
pub(crate) fn reserve(bytes: u64) -> (Result<Reservation, OutOfMemory>, Option<String>) {
    let mut p = pool();
    let (capacity, warning) = match p.capacity_override {
        Some(c) => (c, None),
        None => capacity_from_env(),
    };
    let free = capacity.saturating_sub(p.used);
    if bytes > free {
        return (Err(OutOfMemory { requested: bytes }), warning);
    }
    p.used += bytes;
    (Ok(Reservation { bytes }), warning)
}
