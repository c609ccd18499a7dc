//! Attention's input side (`qkv_into_cache`) and attention itself, at host positions and at the
//! static step's device position, and the KV cache.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use llama_core::kernels::{Kernels, Pass, Position, Projections, QkvIntoCache, RawWeight, RmsNorm};
use llama_core::kv_cache::CachedKv;
use llama_core::rope::{RopeTables, inverse_frequencies};

use super::products::LINEAR_TYPES;
use super::{ABS, REL, as_f32, assert_close, download, naive_linear, naive_rms_norm, random, upload, weight_bytes};

/// Rotation of a `head_dim` vector at `position`, in f64 from the f32 angle.
fn rotate(x: &[f64], position: usize, inv_freq: &[f32]) -> Vec<f64> {
    let half = x.len() / 2;
    let mut out = vec![0.0; x.len()];
    for i in 0..half {
        let angle = (position as f32 * inv_freq[i]) as f64;
        let (a, b) = (x[i], x[i + half]);
        out[i] = a * angle.cos() - b * angle.sin();
        out[i + half] = b * angle.cos() + a * angle.sin();
    }
    out
}

/// The attention heads and the cache a Q/K/V check writes into.
struct QkvCase {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    /// The first token's position.
    start: usize,
}

impl QkvCase {
    fn width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    fn cache_shape(&self) -> [usize; 3] {
        [self.kv_heads, self.capacity, self.head_dim]
    }

    /// `(queries, keys, values)` expected from the projection `qkv` `[tokens, width]`: queries
    /// rotated, keys rotated and values written over `old_keys`/`old_values` at `start ..`, the
    /// rest of the cache kept.
    fn expected(&self, qkv: &[f64], inv_freq: &[f32], old: [&[f32]; 2]) -> [Vec<f64>; 3] {
        let (width, head_dim) = (self.width(), self.head_dim);
        let head = |t: usize, slot: usize| &qkv[t * width + slot * head_dim..][..head_dim];
        let mut q = Vec::new();
        let mut keys: Vec<f64> = old[0].iter().map(|&v| v as f64).collect();
        let mut values: Vec<f64> = old[1].iter().map(|&v| v as f64).collect();
        for t in 0..qkv.len() / width {
            let position = self.start + t;
            for h in 0..self.heads {
                q.extend(rotate(head(t, h), position, inv_freq));
            }
            for h in 0..self.kv_heads {
                let at = (h * self.capacity + position) * head_dim;
                keys[at..at + head_dim].copy_from_slice(&rotate(head(t, self.heads + h), position, inv_freq));
                values[at..at + head_dim].copy_from_slice(head(t, self.heads + self.kv_heads + h));
            }
        }
        [q, keys, values]
    }
}

/// `qkv_into_cache` for every weight format, stacked and as three weights, one token (the decode
/// step, which a provider may fuse) and three, in the head width of Llama 3 and SmolLM2 (64) and
/// a narrow one, at the first position and further in; one token also at a device position.
pub fn check_qkv_into_cache<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let cols = 256;
    let norm_weight = random(cols, 40);
    let norm = RmsNorm { weight: upload::<B, 1>(&norm_weight, [cols], device), eps: 1e-5 };
    for ty in LINEAR_TYPES {
        for (head_dim, start, tokens) in [(64, 0, 1), (64, 7, 1), (8, 5, 1), (64, 3, 3)] {
            let case = QkvCase { heads: 4, kv_heads: 2, head_dim, capacity: 12, start };
            let rows = case.width();
            let bytes = weight_bytes(ty, rows * cols, 41);
            let w = llama_core::dequant::dequantize(ty, &bytes, rows * cols).expect("dequantize test weight");
            let load = |name: &str, rows: std::ops::Range<usize>| {
                let row_bytes = ty.bytes_for(cols).expect("whole blocks");
                let bytes = &bytes[rows.start * row_bytes..rows.end * row_bytes];
                let raw = RawWeight { name, ggml_type: ty, bytes, rows: rows.len(), cols };
                k.load_weight(raw, device).unwrap_or_else(|e| panic!("load {ty:?} weight: {e}"))
            };
            let (q_rows, kv_rows) = (case.heads * head_dim, case.kv_heads * head_dim);
            let forms = [
                ("stacked", Projections::Stacked(load("test.qkv", 0..rows))),
                (
                    "separate",
                    Projections::Separate(vec![
                        load("test.q", 0..q_rows),
                        load("test.k", q_rows..q_rows + kv_rows),
                        load("test.v", q_rows + kv_rows..rows),
                    ]),
                ),
            ];
            let inv_freq = inverse_frequencies(head_dim, 10_000.0, None);
            let rope = RopeTables::<B>::new(&inv_freq, case.capacity, device);
            let mut positions = vec![Position::Host(start)];
            if tokens == 1 {
                let position = Tensor::<B, 1, Int>::from_data(TensorData::from([start as i64]), device);
                positions.push(Position::Device(k.step_position(&rope, position, case.capacity)));
            }
            let x = random(tokens * cols, 42);
            let old = [43, 44].map(|seed| random(case.kv_heads * case.capacity * head_dim, seed));
            let h = as_f32(&naive_rms_norm(&x, &norm_weight, norm.eps));
            let expected = case.expected(&naive_linear(&h, &w, tokens, rows, cols), &inv_freq, [&old[0], &old[1]]);
            for ((form, weight), at) in forms.iter().flat_map(|f| positions.iter().map(move |at| (f, at))) {
                let place = if matches!(at, Position::Host(_)) { "host" } else { "device" };
                let what = |part: &str| {
                    format!(
                        "qkv_into_cache {part} {form} {ty:?} head_dim={head_dim} {place} start={start} tokens={tokens}"
                    )
                };
                let pass = Pass { at: at.clone(), rope: &rope, heads: case.heads, kv_heads: case.kv_heads };
                let cache = (upload(&old[0], case.cache_shape(), device), upload(&old[1], case.cache_shape(), device));
                let input = norm.of(upload(&x, [tokens, cols], device));
                let (q, kv) = k.qkv_into_cache(QkvIntoCache { input, weight, pass: &pass, cache });
                let len = if place == "host" { start + tokens } else { case.capacity };
                assert_eq!(kv.len, len, "{}", what("visible rows"));
                let got = [q, kv.keys, kv.values].map(download);
                for ((part, got), expected) in ["queries", "keys", "values"].into_iter().zip(&got).zip(&expected) {
                    assert_close(&what(part), got, expected, ABS * 10.0, REL * 10.0);
                }
            }
        }
    }
}

/// The shape of an attention check.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub tokens: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub keys: usize,
    pub head_dim: usize,
}

/// Naive causal GQA of `q` `[tokens, heads, head_dim]` over `k`, `v` `[kv_heads, keys,
/// head_dim]`: query `t` of head `h` sits at position `keys - tokens + t`, reads KV head
/// `h / (heads / kv_heads)`, and sees keys up to its own position.
pub fn naive_attention(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape) -> Vec<f64> {
    let AttentionShape { tokens, heads, kv_heads, keys, head_dim } = shape;
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut out = vec![0.0f64; tokens * heads * head_dim];
    for t in 0..tokens {
        let visible = keys - tokens + t + 1;
        for h in 0..heads {
            let kvh = h / group;
            let qv = &q[(t * heads + h) * head_dim..][..head_dim];
            let scores: Vec<f64> = (0..visible)
                .map(|s| {
                    let kv = &k[(kvh * keys + s) * head_dim..][..head_dim];
                    qv.iter().zip(kv).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for (s, w) in weights.iter().enumerate() {
                let vv = &v[(kvh * keys + s) * head_dim..][..head_dim];
                for d in 0..head_dim {
                    out[(t * heads + h) * head_dim + d] += w / total * vv[d] as f64;
                }
            }
        }
    }
    out
}

/// Prefill (several queries, causal) and decode (one query over every key) shapes, over the
/// whole cache and over the first rows of a longer one, whose later rows hold values that must
/// not be read; one query also at a device position (the static step's masked whole cache).
pub fn check_attention<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let (heads, kv_heads) = (6, 2);
    // The longer ones span several key blocks of a split-KV kernel (merged by a second kernel);
    // head_dim 128 gives each of a 64-thread workgroup's threads two output dimensions. Not 520
    // or 600 keys: there Burn's composed ops on wgpu are wrong (docs/correctness.md).
    let cases =
        [(5, 5, 16), (3, 9, 16), (1, 12, 16), (1, 150, 16), (4, 133, 16), (1, 1100, 16), (3, 560, 128), (1, 70, 128)];
    for (tokens, keys, head_dim) in cases {
        let what = |how: &str| format!("attention {how} tokens={tokens} keys={keys}");
        let shape = AttentionShape { tokens, heads, kv_heads, keys, head_dim };
        let q = random(tokens * heads * head_dim, 8);
        let kk = random(kv_heads * keys * head_dim, 9);
        let v = random(kv_heads * keys * head_dim, 10);
        let expected = naive_attention(&q, &kk, &v, shape);
        let q = upload::<B, 3>(&q, [tokens, heads, head_dim], device);
        let at = Position::Host(keys - tokens);
        let whole = |values: &[f32]| upload::<B, 3>(values, [kv_heads, keys, head_dim], device);
        let got = download(k.attention(q.clone(), CachedKv::whole(whole(&kk), whole(&v)), &at));
        assert_close(&what("over the whole cache"), &got, &expected, ABS, REL);

        let capacity = keys + 7;
        let in_cache = |values: &[f32]| {
            Tensor::<B, 3>::full([kv_heads, capacity, head_dim], 1e4, device)
                .slice_assign([0..kv_heads, 0..keys, 0..head_dim], whole(values))
        };
        let kv = CachedKv { keys: in_cache(&kk), values: in_cache(&v), len: keys };
        assert_close(
            &what("over a cache's first rows"),
            &download(k.attention(q.clone(), kv, &at)),
            &expected,
            ABS,
            REL,
        );
        if tokens == 1 {
            let rope = RopeTables::<B>::new(&inverse_frequencies(head_dim, 10_000.0, None), capacity, device);
            let position = Tensor::<B, 1, Int>::from_data(TensorData::from([(keys - 1) as i64]), device);
            let at = Position::Device(k.step_position(&rope, position, capacity));
            let kv = CachedKv::whole(in_cache(&kk), in_cache(&v));
            assert_close(&what("at a device position"), &download(k.attention(q, kv, &at)), &expected, ABS, REL);
        }
    }
}

/// Appending to the cache in steps returns exactly what was written, in order.
pub fn check_kv_cache<B: Backend>(device: &B::Device) {
    let (kv_heads, head_dim, capacity) = (2, 4, 16);
    let mut cache = llama_core::kv_cache::KvCache::<B>::new(1, kv_heads, head_dim, capacity, device);
    let mut written: Vec<Vec<f32>> = vec![Vec::new(); kv_heads];
    for (step, tokens) in [3usize, 1, 1, 2].into_iter().enumerate() {
        let values = random(kv_heads * tokens * head_dim, 20 + step as u64);
        for h in 0..kv_heads {
            written[h].extend_from_slice(&values[h * tokens * head_dim..(h + 1) * tokens * head_dim]);
        }
        let t = upload(&values, [kv_heads, tokens, head_dim], device);
        let (keys, vals) = cache.append(0, t.clone(), t).visible();
        cache.advance(tokens);
        let expected: Vec<f64> = written.iter().flatten().map(|&v| v as f64).collect();
        assert_eq!(keys.dims(), [kv_heads, cache.len(), head_dim]);
        assert_close(&format!("kv cache keys after step {step}"), &download(keys), &expected, 0.0, 0.0);
        assert_close(&format!("kv cache values after step {step}"), &download(vals), &expected, 0.0, 0.0);
    }
}
