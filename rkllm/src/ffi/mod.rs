//! The seam between the safe API and the runtime.
//!
//! Every call into the RKLLM runtime made by the safe API goes through this module, and
//! every `unsafe` block of `rkllm` outside the mock and the diagnosis' descriptor helpers is
//! here:
//! * [`init`]: default parameters and `rkllm_init`, with the [`callback`] trampoline;
//! * [`handle`]: the one owner of a runtime handle: calls on the idle handle, starting a
//!   run, aborting it, bounded stops, and destroying the handle once;
//! * [`job`]: the buffers `rkllm_run` reads, owned for the whole call;
//! * [`callback`]: the trampoline, the per-run state it feeds, and the run registry that
//!   `userdata` names (a run id, never an address).

pub(crate) mod callback;
pub(crate) mod handle;
pub(crate) mod init;
pub(crate) mod job;

pub use handle::AbortHandle;
