//! 1,000 runs in a row: no growth in threads or memory. Alone in its binary so that other
//! tests' threads do not disturb the counts.

mod common;

use rkllm::mock::MockModel;
use rkllm::GenerateOptions;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_thousand_runs_leave_no_threads_or_memory_behind() {
    let model = common::load(&MockModel::new().answer("a short reply with ünïcode"));
    let mut session = model.session().unwrap();
    let opts = GenerateOptions::gemma();
    // Warm up allocators and lazily created runtime state.
    for _ in 0..50 {
        session.complete("q", &opts).unwrap();
    }
    let (threads_before, rss_before) = (threads(), rss_kib());
    for i in 0..1000 {
        let done = session.complete("q", &opts).unwrap();
        assert_eq!(done.text, "a short reply with ünïcode", "run {i}");
        if i % 3 == 0 {
            // Also abandon streams mid-way.
            let mut stream = session.generate("q", &opts).unwrap();
            stream.next().unwrap().unwrap();
        }
    }
    let (threads_after, rss_after) = (threads(), rss_kib());
    assert_eq!(threads_after, threads_before, "no thread left behind");
    assert!(
        rss_after < rss_before + 4 * 1024,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}
