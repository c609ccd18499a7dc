//! Each stage of the chain against distributions worked out by hand.

use super::*;

fn params(temperature: f32) -> SamplingParams {
    // Every filter off: each test turns on the one it checks.
    SamplingParams { temperature, top_k: 0, top_p: 1.0, min_p: 0.0, ..SamplingParams::default() }
}

fn ln(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

fn assert_distribution(got: &[(u32, f64)], want: &[(u32, f64)]) {
    assert_eq!(got.len(), want.len(), "candidates {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w.0, "candidates {got:?}, want {want:?}");
        assert!((g.1 - w.1).abs() < 1e-6, "candidates {got:?}, want {want:?}");
    }
}

#[test]
fn argmax_ties_go_to_the_lowest_id() {
    assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    assert_eq!(argmax(&[f32::NAN, 0.5, 0.5]), 1);
}

#[test]
fn argmax_agrees_with_a_plain_scan_across_lanes_and_edge_values() {
    let plain = |l: &[f32]| {
        let mut best = 0;
        for (i, &v) in l.iter().enumerate() {
            if v > l[best] || l[best].is_nan() {
                best = i;
            }
        }
        best as u32
    };
    let mut long: Vec<f32> = (0..100).map(|i| ((i * 37) % 101) as f32 * 0.25 - 3.0).collect();
    assert_eq!(argmax(&long), plain(&long));
    long[97] = 1e9; // in the tail after the 16-lane chunks
    long[3] = f32::NAN;
    assert_eq!(argmax(&long), 97);
    long[20] = 1e9; // a tie inside the chunks: the lower id
    assert_eq!(argmax(&long), 20);
    for edge in [vec![], vec![f32::NAN; 40], vec![f32::NEG_INFINITY; 40], vec![f32::NAN, f32::NEG_INFINITY]] {
        assert_eq!(argmax(&edge), plain(&edge), "{edge:?}");
    }
}

#[test]
fn top_k_is_sorted_and_stable() {
    assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9], 3), vec![(1, 0.9), (3, 0.9), (2, 0.5)]);
    assert_eq!(top_k(&[0.1], 5), vec![(0, 0.1)]);
}

#[test]
fn zero_temperature_is_greedy() {
    let mut s = Sampler::new(params(0.0), 1);
    assert_eq!(s.sample(&[0.0, 2.0, 1.0]), 1);
    assert_distribution(&s.distribution(&[0.0, 2.0, 1.0]), &[(1, 1.0)]);
}

#[test]
fn temperature_one_is_the_softmax() {
    let s = Sampler::new(params(1.0), 1);
    assert_distribution(&s.distribution(&ln(&[0.1, 0.6, 0.3])), &[(1, 0.6), (2, 0.3), (0, 0.1)]);
}

#[test]
fn temperature_sharpens_and_flattens() {
    // p ∝ q^(1/T): T = 0.5 squares 0.2 and 0.8 to 0.04 and 0.64, so 1/17 and 16/17.
    let s = Sampler::new(params(0.5), 1);
    assert_distribution(&s.distribution(&ln(&[0.2, 0.8])), &[(1, 16.0 / 17.0), (0, 1.0 / 17.0)]);
    // T = 2 takes square roots: √0.64 = 0.8 and √0.04 = 0.2, so 0.8 and 0.2 of 1.0.
    let s = Sampler::new(params(2.0), 1);
    assert_distribution(
        &s.distribution(&ln(&[0.04, 0.64, 0.32])),
        &[
            (1, 0.8 / (0.8 + 0.2 + 0.32f64.sqrt())),
            (2, 0.32f64.sqrt() / (0.8 + 0.2 + 0.32f64.sqrt())),
            (0, 0.2 / (0.8 + 0.2 + 0.32f64.sqrt())),
        ],
    );
}

#[test]
fn top_k_keeps_the_k_most_likely() {
    // 0.5, 0.3 kept of 0.5/0.3/0.15/0.05: renormalised to 5/8 and 3/8.
    let s = Sampler::new(SamplingParams { top_k: 2, ..params(1.0) }, 1);
    assert_distribution(&s.distribution(&ln(&[0.15, 0.5, 0.05, 0.3])), &[(1, 0.625), (3, 0.375)]);
}

#[test]
fn top_p_keeps_the_fewest_that_reach_p() {
    let logits = ln(&[0.5, 0.3, 0.15, 0.05]);
    // 0.5 falls short of 0.75, 0.5 + 0.3 reaches it: two tokens.
    let s = Sampler::new(SamplingParams { top_p: 0.75, ..params(1.0) }, 1);
    assert_distribution(&s.distribution(&logits), &[(0, 0.625), (1, 0.375)]);
    // 0.85 needs the third: 0.5/0.95, 0.3/0.95, 0.15/0.95.
    let s = Sampler::new(SamplingParams { top_p: 0.85, ..params(1.0) }, 1);
    assert_distribution(&s.distribution(&logits), &[(0, 0.5 / 0.95), (1, 0.3 / 0.95), (2, 0.15 / 0.95)]);
    // A tiny p still keeps the most likely token.
    let s = Sampler::new(SamplingParams { top_p: 0.01, ..params(1.0) }, 1);
    assert_distribution(&s.distribution(&logits), &[(0, 1.0)]);
}

#[test]
fn min_p_drops_tokens_far_below_the_best() {
    // Threshold 0.25 × 0.5 = 0.125: 0.05 goes, 0.15 stays.
    let s = Sampler::new(SamplingParams { min_p: 0.25, ..params(1.0) }, 1);
    assert_distribution(
        &s.distribution(&ln(&[0.5, 0.3, 0.15, 0.05])),
        &[(0, 0.5 / 0.95), (1, 0.3 / 0.95), (2, 0.15 / 0.95)],
    );
}

#[test]
fn filters_judge_the_untempered_distribution() {
    // llama.cpp's order: top-p keeps {0.5, 0.3} before temperature 0.5 squares them:
    // 0.25 and 0.09 → 25/34 and 9/34.
    let s = Sampler::new(SamplingParams { top_p: 0.75, ..params(0.5) }, 1);
    assert_distribution(&s.distribution(&ln(&[0.5, 0.3, 0.15, 0.05])), &[(0, 25.0 / 34.0), (1, 9.0 / 34.0)]);
}

#[test]
fn repeat_penalty_divides_positive_and_multiplies_negative_logits() {
    let mut s = Sampler::new(SamplingParams { repeat_penalty: 2.0, ..params(1.0) }, 1);
    for id in [0, 1, 0] {
        s.accept(id);
    }
    // [2, -1, 1] → [1, -2, 1], each seen token penalised once however often it appeared.
    let e = |x: f64| x.exp();
    let total = e(1.0) + e(-2.0) + e(1.0);
    assert_distribution(
        &s.distribution(&[2.0, -1.0, 1.0]),
        &[(0, e(1.0) / total), (2, e(1.0) / total), (1, e(-2.0) / total)],
    );
    // Greedy sees the penalised logits too: token 0's 2 halves to 1, below token 2's 1.5.
    let mut g = Sampler::new(SamplingParams { repeat_penalty: 2.0, ..params(0.0) }, 1);
    g.accept(0);
    assert_eq!(g.sample(&[2.0, -1.0, 1.5]), 2);
}

#[test]
fn repeat_penalty_only_looks_at_the_last_n_tokens() {
    let mut s = Sampler::new(SamplingParams { repeat_penalty: 100.0, repeat_last_n: 2, ..params(0.0) }, 1);
    for id in [0, 2, 2] {
        s.accept(id);
    }
    // Token 0 fell out of the window: it is not penalised and wins.
    assert_eq!(s.sample(&[3.0, 1.0, 3.0]), 0);
    s.clear_history();
    s.accept(0);
    assert_eq!(s.sample(&[3.0, 1.0, 3.0]), 2);
}

#[test]
fn sampling_follows_the_distribution() {
    // Probabilities 1/4 and 3/4 at temperature 1.
    let logits = [0.0f32, 3.0f32.ln()];
    let mut s = Sampler::new(params(1.0), 42);
    let n = 40_000;
    let ones = (0..n).filter(|_| s.sample(&logits) == 1).count();
    let p = ones as f64 / n as f64;
    assert!((p - 0.75).abs() < 0.01, "p(1) = {p}");
}

#[test]
fn same_seed_same_tokens() {
    let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
    let run = |seed| {
        let mut s = Sampler::new(SamplingParams { temperature: 0.8, ..SamplingParams::default() }, seed);
        (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn frequency_and_presence_penalties_subtract_per_count_and_once() {
    // Token 0 seen twice, token 1 once; both start level with token 2.
    let mut s = Sampler::new(SamplingParams { frequency_penalty: 0.5, presence_penalty: 0.25, ..params(0.0) }, 1);
    for id in [0, 0, 1] {
        s.accept(id);
    }
    let penalized = s.penalized(&[3.0, 3.0, 3.0]).expect("penalties on");
    assert_eq!(penalized, vec![3.0 - 2.0 * 0.5 - 0.25, 3.0 - 0.5 - 0.25, 3.0]);
    assert!(!s.is_plain_greedy(), "a penalty keeps greedy on the host");
    assert_eq!(s.sample(&[3.0, 3.0, 3.0]), 2);
}
