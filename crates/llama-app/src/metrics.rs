//! Numbers a benchmark reports: latency statistics, throughput, bandwidth, memory.

use serde::Serialize;

use llama_core::config::LlamaConfig;

/// Distribution of per-token latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencyStats {
    pub mean_ms: f64,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
}

impl LatencyStats {
    /// From durations in seconds; all zero for an empty sample.
    pub fn from_seconds(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|s| s * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Self {
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            median_ms: percentile(&ms, 50.0),
            p10_ms: percentile(&ms, 10.0),
            p90_ms: percentile(&ms, 90.0),
        }
    }
}

/// Linear interpolation between closest ranks (numpy's default) on sorted data.
pub fn percentile(sorted: &[f64], pct: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let rank = pct / 100.0 * (n - 1) as f64;
            let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// Parameters of every matmul one decoded token multiplies through: all layer weights and the
/// output head (the embedding lookup reads one row and is not counted).
pub fn matmul_params_per_token(c: &LlamaConfig) -> u64 {
    let per_layer = 2 * c.dim * c.dim + 2 * c.kv_dim() * c.dim + 3 * c.ffn_dim * c.dim;
    (c.n_layers * per_layer + c.vocab_size * c.dim) as u64
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llama_core::config::ModelSize;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let data = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(percentile(&data, 50.0), 3.0);
        assert!((percentile(&data, 90.0) - 7.6).abs() < 1e-12);
        assert!((percentile(&data, 10.0) - 1.4).abs() < 1e-12);
        let s = LatencyStats::from_seconds(&[0.004, 0.001, 0.003, 0.002, 0.010]);
        assert!((s.mean_ms - 4.0).abs() < 1e-9 && (s.median_ms - 3.0).abs() < 1e-9);
    }

    #[test]
    fn llama_1b_reads_about_1_24_billion_weights_per_token() {
        // Llama 3.2 1B has 1,235,814,400 parameters: these plus 33 × 2048 norm weights. The tied
        // embedding counts once, as the output head.
        let n = matmul_params_per_token(&ModelSize::B1.config());
        assert_eq!(n + 33 * 2048, 1_235_814_400);
    }

    #[test]
    fn peak_rss_is_readable_here() {
        assert!(peak_rss_bytes().is_some_and(|b| b > 1_000_000));
    }
}
