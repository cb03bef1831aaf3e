//! The cost model of prompt caches: how large a cache file is and how long the disk takes to
//! write and read it.
//!
//! A real prompt cache holds the KV state of the prompt: per prompt token, `layers × 2 × kv_heads
//! × head_dim` values (a key and a value per layer and KV head). The precision the runtime
//! stores them in is not documented; 16 bits is the usual assumption and the default here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

fn two() -> u32 {
    2
}

/// The shape of a model's KV cache, from which the size of its prompt cache follows.
///
/// ```
/// use rkllm::mock::KvGeometry;
///
/// // Gemma2-2B: 26 layers × 2 × 4 KV heads × 256 = 53,248 values, 106,496 bytes at 16 bits.
/// assert_eq!(KvGeometry::GEMMA2_2B.bytes_per_token(), 106_496);
/// assert_eq!(KvGeometry::new(26, 4, 256).with_bytes_per_value(1).bytes_per_token(), 53_248);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvGeometry {
    /// Transformer layers.
    pub layers: u32,
    /// Key/value heads per layer (fewer than the attention heads with grouped-query attention).
    pub kv_heads: u32,
    /// Dimension of one head.
    pub head_dim: u32,
    /// Bytes per stored value (default 2: 16 bits).
    #[serde(default = "two")]
    pub bytes_per_value: u32,
}

impl KvGeometry {
    /// Gemma2-2B from its public model config: 26 layers, 4 KV heads, head dim 256.
    pub const GEMMA2_2B: KvGeometry = KvGeometry::new(26, 4, 256);
    /// Gemma2-9B from its public model config: 42 layers, 8 KV heads, head dim 256.
    pub const GEMMA2_9B: KvGeometry = KvGeometry::new(42, 8, 256);
    /// Gemma2-27B from its public model config: 46 layers, 16 KV heads, head dim 128.
    pub const GEMMA2_27B: KvGeometry = KvGeometry::new(46, 16, 128);

    /// A geometry stored at 16 bits per value.
    pub const fn new(layers: u32, kv_heads: u32, head_dim: u32) -> KvGeometry {
        KvGeometry {
            layers,
            kv_heads,
            head_dim,
            bytes_per_value: 2,
        }
    }

    /// The same geometry stored at `bytes` bytes per value (1 for 8-bit KV).
    pub const fn with_bytes_per_value(mut self, bytes: u32) -> KvGeometry {
        self.bytes_per_value = bytes;
        self
    }

    /// Bytes of KV state per prompt token: `layers × 2 × kv_heads × head_dim × bytes_per_value`.
    pub const fn bytes_per_token(&self) -> u64 {
        self.layers as u64
            * 2
            * self.kv_heads as u64
            * self.head_dim as u64
            * self.bytes_per_value as u64
    }
}

/// What a prompt cache costs on this model: its KV size and the disk it goes to. In file
/// form `"prompt_cache": { "kv": { "layers": 26, "kv_heads": 4, "head_dim": 256 },
/// "disk_bytes_per_second": 100000000 }`. The default costs nothing: a cache file holds only
/// its header and loads and saves instantly.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CacheCost {
    /// The model's KV shape; `None` = no KV payload (the file is just the header).
    pub kv: Option<KvGeometry>,
    /// Disk throughput for saving and loading, bytes per second; 0 = instant.
    pub disk_bytes_per_second: f64,
}

impl CacheCost {
    /// Bytes of KV payload a cache of `tokens` prompt tokens holds.
    pub fn payload_bytes(&self, tokens: usize) -> u64 {
        self.kv
            .map_or(0, |kv| kv.bytes_per_token().saturating_mul(tokens as u64))
    }

    /// Simulated time to write or read `bytes` at the disk's throughput.
    pub fn io_time(&self, bytes: u64) -> Duration {
        if self.disk_bytes_per_second > 0.0 {
            Duration::try_from_secs_f64(bytes as f64 / self.disk_bytes_per_second)
                .unwrap_or(Duration::MAX)
        } else {
            Duration::ZERO
        }
    }

    /// Checks the values; the error names the bad one.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let bps = self.disk_bytes_per_second;
        if !bps.is_finite() || bps < 0.0 {
            return Err(format!(
                "disk_bytes_per_second must be 0 (instant) or positive, not {bps}"
            ));
        }
        if let Some(kv) = self.kv {
            if kv.layers == 0 || kv.kv_heads == 0 || kv.head_dim == 0 || kv.bytes_per_value == 0 {
                return Err(format!(
                    "every field of the KV geometry must be positive: {kv:?}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_figures() {
        // 53,248 values per token, about 104 KB at 16 bits; 188,416 values, about 368 KB.
        assert_eq!(KvGeometry::GEMMA2_2B.bytes_per_token(), 53_248 * 2);
        assert_eq!(KvGeometry::GEMMA2_27B.bytes_per_token(), 188_416 * 2);
        let cost = CacheCost {
            kv: Some(KvGeometry::GEMMA2_2B),
            disk_bytes_per_second: 100e6,
        };
        assert_eq!(cost.payload_bytes(1000), 106_496_000);
        assert_eq!(cost.io_time(100_000_000), Duration::from_secs(1));
        assert_eq!(CacheCost::default().io_time(1 << 30), Duration::ZERO);
    }
}
