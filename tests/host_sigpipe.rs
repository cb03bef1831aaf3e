//! A host that keeps SIGPIPE's default action (as C and C++ programs do) survives model
//! loads with the init log captured. This test binary sets that disposition for its own
//! process, so it is kept in a file of its own.

use rkllm::mock::MockModel;
use rkllm::{Model, Runtime};

#[test]
fn model_loads_never_raise_sigpipe_in_a_host_that_does_not_ignore_it() {
    // SAFETY: restoring the default action of SIGPIPE is what a C host runs with; no other
    // test shares this process.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let file = MockModel::new().write_temp_file().unwrap();
    // The race (the capture's forwarder closing its end of the stop pipe before the stop
    // byte is written) killed such a host within a few dozen loads; a death ends this test
    // process with SIGPIPE, which the harness reports as a failure.
    for _ in 0..300 {
        let model = Model::builder(&*file)
            .runtime(Runtime::mock())
            .capture_runtime_log(true)
            .build()
            .unwrap();
        assert!(
            model.init_diagnosis().runtime_version().is_some(),
            "the log was captured"
        );
    }
}
