//! The probe's measure of what a prompt cache costs, against the mock's cost model: the cache
//! bytes per prompt token it reports are the model's KV size, and its advice follows the disk
//! (a fast one: the figures to set and a budget; a slow one: keep the cache off it). The
//! decisions rest on times the mock simulates with a tenfold margin either way; nothing here
//! asserts a speed.
#![cfg(all(feature = "mock", feature = "probe"))]

use std::time::Duration;

use rkllm::mock::{KvGeometry, MockModel};
use rkllm::probe::{self, MeasuredCacheCost, ProbeConfig, ProbeReport, Question};
use rkllm::Runtime;

fn probe_cache(mock: &MockModel) -> (ProbeReport, MeasuredCacheCost) {
    let path = mock.write_temp_file().expect("write the mock model");
    let mut config = ProbeConfig::new(Runtime::mock(), &path)
        .run_timeout(Duration::from_secs(60))
        .pause_limit(Duration::from_millis(500))
        .cache_prefix_words(40);
    for q in Question::ALL {
        if q != Question::PromptCache {
            config = config.skip(q);
        }
    }
    let report = probe::run(&config).expect("the mock model loads");
    let cost = report
        .prompt_cache_cost()
        .unwrap_or_else(|| panic!("the cache cost was measured:\n{report}"));
    (report, cost)
}

/// The probe's mock (1 ms of prefill per token) with Gemma2-2B's KV size on a disk of `disk`
/// bytes per second.
fn gemma2_2b_on(disk: f64) -> MockModel {
    probe::mock_model()
        .kv_geometry(KvGeometry::GEMMA2_2B)
        .disk_bytes_per_second(disk)
}

#[test]
fn a_fast_disk_gets_the_figures_to_set() {
    // Reading a token's cache: 0.1 ms at 1 GB/s; prefilling it: 1 ms.
    let (report, cost) = probe_cache(&gemma2_2b_on(1e9));
    let expected = KvGeometry::GEMMA2_2B.bytes_per_token() as f64;
    let per_token = cost.bytes_per_token();
    assert!(
        per_token >= expected && per_token < expected * 1.05,
        "{per_token} bytes per token, the model's KV is {expected} (plus a small header)"
    );
    assert!(cost.load_pays() && cost.rolling_pays(), "{cost:?}");
    let advice = cost.advice();
    assert!(
        advice.contains("cache_bytes_per_token") && advice.contains("budget_bytes"),
        "{advice}"
    );
    assert!(report.to_string().contains("budget_bytes"), "{report}");
}

#[test]
fn a_slow_disk_is_reported_as_not_paying() {
    // Reading a token's cache: 10.6 ms at 10 MB/s; prefilling it: 1 ms.
    let (report, cost) = probe_cache(&gemma2_2b_on(10e6));
    assert!(!cost.load_pays() && !cost.rolling_pays(), "{cost:?}");
    let advice = cost.advice();
    assert!(advice.contains("keep the prompt cache off"), "{advice}");
    assert!(
        report.to_string().contains("keep the prompt cache off"),
        "{report}"
    );
}
