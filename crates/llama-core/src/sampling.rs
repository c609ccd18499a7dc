//! Choosing the next token from the logits.

/// SplitMix64: tiny, fast and identical on every platform, so a seed gives the same tokens
/// everywhere (statistical quality is ample for sampling).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Index of the largest logit; ties go to the lowest id, NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// The `k` largest logits as `(id, logit)`, largest first, ties by lower id.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit_desc = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    let k = k.min(ids.len());
    if k == 0 {
        return Vec::new();
    }
    ids.select_nth_unstable_by(k - 1, by_logit_desc);
    ids.truncate(k);
    ids.sort_by(by_logit_desc);
    ids.into_iter().map(|id| (id, logits[id as usize])).collect()
}

/// Temperature sampling; temperature 0 is greedy argmax.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    rng: Rng,
}

impl Sampler {
    pub fn new(temperature: f32, seed: u64) -> Self {
        Self { temperature, rng: Rng::new(seed) }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.temperature as f64;
        let max = logits[argmax(logits) as usize] as f64;
        // Softmax in f64 relative to the max: no overflow, and tiny probabilities keep their weight.
        let weights: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) * inv_t).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut target = self.rng.next_f64() * total;
        for (id, w) in weights.iter().enumerate() {
            if target < *w {
                return id as u32;
            }
            target -= w;
        }
        argmax(logits) // only reachable through rounding at the very end of the range
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_go_to_the_lowest_id() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.5]), 1);
    }

    #[test]
    fn top_k_is_sorted_and_stable() {
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9], 3), vec![(1, 0.9), (3, 0.9), (2, 0.5)]);
        assert_eq!(top_k(&[0.1], 5), vec![(0, 0.1)]);
    }

    #[test]
    fn zero_temperature_is_greedy() {
        let mut s = Sampler::new(0.0, 1);
        assert_eq!(s.sample(&[0.0, 2.0, 1.0]), 1);
    }

    #[test]
    fn sampling_follows_the_softmax() {
        // logits ln(1), ln(3): probabilities 1/4 and 3/4 at temperature 1.
        let logits = [0.0f32, 3.0f32.ln()];
        let mut s = Sampler::new(1.0, 42);
        let n = 40_000;
        let ones = (0..n).filter(|_| s.sample(&logits) == 1).count();
        let p = ones as f64 / n as f64;
        assert!((p - 0.75).abs() < 0.01, "p(1) = {p}");
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(0.8, seed);
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
