//! Choosing the next token from the logits.
//!
//! The chain is llama.cpp's default order, so the same flags mean the same thing in both:
//! repetition penalty → (temperature 0: argmax) → top-k → top-p → min-p → temperature → draw.
//! top-p and min-p therefore judge the untempered distribution; temperature only reshapes what
//! they kept.

use std::collections::VecDeque;

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
    // The largest value first, over 16 independent lanes (the compiler turns each lane's
    // compare-and-keep into vector max instructions; a NaN never wins a comparison), then its
    // first position. A 128k vocabulary is scanned on every greedy token.
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            if v > *lane {
                *lane = v;
            }
        }
    }
    let max = lanes.iter().chain(tail).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    match logits.iter().position(|&v| v == max) {
        Some(i) => i as u32,
        // Every logit NaN (or none at all): the last one, as a plain left-to-right scan picks.
        None => logits.iter().rposition(|v| v.is_nan()).unwrap_or(0) as u32,
    }
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

/// Every knob of the sampling chain. `Default` is llama.cpp's defaults with our temperature.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SamplingParams {
    /// 0 picks the most likely token (after the repetition penalty).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the fewest most likely tokens whose probabilities reach this sum; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one; 0 keeps all.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens by this; 1 is off.
    pub repeat_penalty: f32,
    /// How many recent tokens (prompt included) the penalties look at.
    pub repeat_last_n: usize,
    /// Subtract this times a token's count among the recent tokens from its logit (OpenAI's
    /// `frequency_penalty`); 0 is off.
    pub frequency_penalty: f32,
    /// Subtract this from the logit of every token among the recent ones (OpenAI's
    /// `presence_penalty`); 0 is off.
    pub presence_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
        }
    }
}

impl SamplingParams {
    /// Always the most likely token: what correctness checks and benchmarks use.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }
}

#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// The last `repeat_last_n` tokens seen, for the repetition penalty.
    recent: VecDeque<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, seed: u64) -> Self {
        Self { recent: VecDeque::with_capacity(params.repeat_last_n), params, rng: Rng::new(seed) }
    }

    pub fn greedy() -> Self {
        Self::new(SamplingParams::greedy(), 0)
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Greedy with no penalty: the next token is the logits' argmax and nothing else, so the
    /// device can pick it (`generation` then reads back one id, not the logits).
    pub fn is_plain_greedy(&self) -> bool {
        self.params.temperature <= 0.0 && !self.penalizes()
    }

    fn penalizes(&self) -> bool {
        let p = &self.params;
        p.repeat_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0
    }

    /// Records a token of the context (prompt or generated) for the repetition penalty.
    pub fn accept(&mut self, id: u32) {
        if self.params.repeat_last_n == 0 {
            return;
        }
        if self.recent.len() == self.params.repeat_last_n {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    /// Forgets the recorded context (a new conversation).
    pub fn clear_history(&mut self) {
        self.recent.clear();
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let candidates = self.distribution(logits);
        let mut target = self.rng.next_f64();
        for &(id, p) in &candidates {
            if target < p {
                return id;
            }
            target -= p;
        }
        // Only reachable through rounding at the very end of the range.
        candidates.first().map_or_else(|| argmax(logits), |c| c.0)
    }

    /// The tokens that can be drawn next and their probabilities (summing to 1), most likely
    /// first. Greedy is a single candidate with probability 1.
    pub fn distribution(&self, logits: &[f32]) -> Vec<(u32, f64)> {
        let p = &self.params;
        let penalized = self.penalized(logits);
        let logits = penalized.as_deref().unwrap_or(logits);
        if p.temperature <= 0.0 {
            return vec![(argmax(logits), 1.0)];
        }
        let k = if p.top_k == 0 { logits.len() } else { p.top_k };
        let mut kept: Vec<(u32, f64)> = top_k(logits, k).into_iter().map(|(id, l)| (id, l as f64)).collect();
        if p.top_p < 1.0 {
            let probs = softmax(&kept, 1.0);
            let mut sum = 0.0;
            // The fewest leading tokens whose mass reaches top_p; at least one.
            let keep = probs.iter().position(|&q| {
                sum += q;
                sum >= p.top_p as f64
            });
            kept.truncate(keep.map_or(kept.len(), |i| i + 1));
        }
        if p.min_p > 0.0 {
            let probs = softmax(&kept, 1.0);
            let threshold = probs[0] * p.min_p as f64;
            let keep = probs.iter().take_while(|&&q| q >= threshold).count().max(1);
            kept.truncate(keep);
        }
        let probs = softmax(&kept, p.temperature as f64);
        kept.iter().zip(probs).map(|(&(id, _), q)| (id, q)).collect()
    }

    /// Logits with the penalties applied (llama.cpp's order: repetition, then frequency and
    /// presence), or `None` when they are off.
    fn penalized(&self, logits: &[f32]) -> Option<Vec<f32>> {
        if !self.penalizes() || self.recent.is_empty() {
            return None;
        }
        let p = &self.params;
        let mut counts = std::collections::HashMap::<u32, u32>::new();
        for &id in &self.recent {
            *counts.entry(id).or_default() += 1;
        }
        let mut out = logits.to_vec();
        // Each distinct token is penalised once for repetition, however often it appeared.
        for (&id, &count) in &counts {
            if let Some(l) = out.get_mut(id as usize) {
                *l = if *l > 0.0 { *l / p.repeat_penalty } else { *l * p.repeat_penalty };
                *l -= count as f32 * p.frequency_penalty + p.presence_penalty;
            }
        }
        Some(out)
    }
}

/// Softmax of candidates sorted by logit, largest first, at `temperature`; computed in f64
/// relative to the largest so nothing overflows and tiny probabilities keep their weight.
fn softmax(sorted: &[(u32, f64)], temperature: f64) -> Vec<f64> {
    let Some(&(_, max)) = sorted.first() else { return Vec::new() };
    let weights: Vec<f64> = sorted.iter().map(|&(_, l)| ((l - max) / temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

#[cfg(test)]
mod tests;
