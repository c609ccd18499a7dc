//! Attention's input side (`qkv_into_cache`) and attention itself, for one sequence's rows and
//! for several sequences' at once (each at its own positions in its own cache slot), at host
//! positions and in the static step, and the KV cache.

use burn::tensor::backend::Backend;
use llama_core::kernels::{Kernels, Placement, Projections, QkvIntoCache, RawWeight, RmsNorm, Rows, Span};
use llama_core::kv_cache::CachedKv;
use llama_core::rope::{RopeTables, inverse_frequencies};

use super::products::LINEAR_TYPES;
use super::support::{
    ABS, REL, as_f32, assert_close, download, naive_linear, naive_rms_norm, random, upload, weight_bytes,
};

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

/// Each row's (slot, position), in row order.
fn row_places(spans: &[Span]) -> Vec<(usize, usize)> {
    spans.iter().flat_map(|s| (s.start..s.end()).map(move |p| (s.slot, p))).collect()
}

/// The provider's rows for `spans` (the static step's where `fixed`), made as the model makes
/// them.
pub(super) fn rows_for<B: Backend, K: Kernels<B>>(
    k: &K,
    rope: &RopeTables<B>,
    spans: &[Span],
    heads: [usize; 2],
    fixed: Option<usize>,
    device: &B::Device,
) -> Rows<B> {
    k.rows(Placement { static_capacity: fixed, ..Placement::from_spans(spans.to_vec(), rope, heads, device) })
}

/// The attention heads and the cache a Q/K/V check writes into.
struct QkvCase {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    slots: usize,
    spans: Vec<Span>,
}

impl QkvCase {
    fn width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    fn cache_shape(&self) -> [usize; 3] {
        [self.slots * self.kv_heads, self.capacity, self.head_dim]
    }

    /// `(queries, keys, values)` expected from the projection `qkv` `[rows, width]`: queries
    /// rotated, each row's keys rotated and values written over `old_keys`/`old_values` at its
    /// slot and position, the rest of the cache kept.
    fn expected(&self, qkv: &[f64], inv_freq: &[f32], old: [&[f32]; 2]) -> [Vec<f64>; 3] {
        let (width, head_dim) = (self.width(), self.head_dim);
        let head = |t: usize, h: usize| &qkv[t * width + h * head_dim..][..head_dim];
        let mut q = Vec::new();
        let mut keys: Vec<f64> = old[0].iter().map(|&v| v as f64).collect();
        let mut values: Vec<f64> = old[1].iter().map(|&v| v as f64).collect();
        for (t, (slot, position)) in row_places(&self.spans).into_iter().enumerate() {
            for h in 0..self.heads {
                q.extend(rotate(head(t, h), position, inv_freq));
            }
            for h in 0..self.kv_heads {
                let at = ((slot * self.kv_heads + h) * self.capacity + position) * head_dim;
                keys[at..at + head_dim].copy_from_slice(&rotate(head(t, self.heads + h), position, inv_freq));
                values[at..at + head_dim].copy_from_slice(head(t, self.heads + self.kv_heads + h));
            }
        }
        [q, keys, values]
    }
}

/// The Q/K/V cases: one sequence decoding (in the head width of Llama 3 and SmolLM2, 64, and a
/// narrow one, at the first position and further in, in slot 0 and a later one), one prefilling,
/// and three sequences of a server's step at once (two decoding, one prefilling a chunk); with
/// whether the static step takes it too (one row).
fn qkv_cases() -> Vec<(usize, Vec<Span>)> {
    let span = |slot, start, rows| Span { slot, start, rows };
    vec![
        (64, vec![span(0, 0, 1)]),
        (64, vec![span(1, 7, 1)]),
        (8, vec![span(0, 5, 1)]),
        (64, vec![span(2, 3, 3)]),
        (64, vec![span(1, 9, 1), span(0, 2, 1), span(2, 4, 5)]),
        (8, vec![span(2, 0, 1), span(0, 11, 1)]),
    ]
}

/// `qkv_into_cache` for every weight format, stacked and as three weights, for every case of
/// [`qkv_cases`]; the one-row cases also as the static step.
pub fn check_qkv_into_cache<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let cols = 256;
    let norm_weight = random(cols, 40);
    let norm = RmsNorm { weight: upload::<B, 1>(&norm_weight, [cols], device), eps: 1e-5 };
    for ty in LINEAR_TYPES {
        for (head_dim, spans) in qkv_cases() {
            let case = QkvCase { heads: 4, kv_heads: 2, head_dim, capacity: 12, slots: 3, spans };
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
            let tokens = row_places(&case.spans).len();
            let heads = [case.heads, case.kv_heads];
            let mut placements = vec![("host", rows_for(k, &rope, &case.spans, heads, None, device))];
            if tokens == 1 {
                placements.push(("static", rows_for(k, &rope, &case.spans, heads, Some(case.capacity), device)));
            }
            let x = random(tokens * cols, 42);
            let old = [43, 44].map(|seed| random(case.slots * case.kv_heads * case.capacity * head_dim, seed));
            let h = as_f32(&naive_rms_norm(&x, &norm_weight, norm.eps));
            let expected = case.expected(&naive_linear(&h, &w, tokens, rows, cols), &inv_freq, [&old[0], &old[1]]);
            for ((form, weight), (place, rows)) in forms.iter().flat_map(|f| placements.iter().map(move |p| (f, p))) {
                let what = |part: &str| {
                    format!("qkv_into_cache {part} {form} {ty:?} head_dim={head_dim} {place} spans={:?}", case.spans)
                };
                let cache = CachedKv {
                    keys: upload(&old[0], case.cache_shape(), device),
                    values: upload(&old[1], case.cache_shape(), device),
                };
                let input = norm.of(upload(&x, [tokens, cols], device));
                let (q, kv) = k.qkv_into_cache(QkvIntoCache { input, weight, rows, cache });
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

/// An attention check's cache: `slots` slots of `capacity` positions, each slot's first `len`
/// written with random values and the rest with a large one that must never be read.
struct AttentionCache {
    kv_heads: usize,
    capacity: usize,
    head_dim: usize,
    /// `[slots · kv_heads, capacity, head_dim]` each.
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl AttentionCache {
    fn new(slots: usize, [kv_heads, capacity, head_dim]: [usize; 3], lens: &[usize], seed: u64) -> Self {
        let mut keys = random(slots * kv_heads * capacity * head_dim, seed);
        let mut values = random(keys.len(), seed + 1);
        for (slot, &len) in lens.iter().enumerate() {
            for h in 0..kv_heads {
                let block = (slot * kv_heads + h) * capacity;
                for p in len..capacity {
                    keys[(block + p) * head_dim..][..head_dim].fill(1e4);
                    values[(block + p) * head_dim..][..head_dim].fill(1e4);
                }
            }
        }
        Self { kv_heads, capacity, head_dim, keys, values }
    }

    /// Slot `slot`'s first `len` positions, `[kv_heads, len, head_dim]` each.
    fn slot(&self, slot: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
        let take = |all: &[f32]| {
            (0..self.kv_heads)
                .flat_map(|h| {
                    let block = ((slot * self.kv_heads + h) * self.capacity) * self.head_dim;
                    all[block..block + len * self.head_dim].to_vec()
                })
                .collect()
        };
        (take(&self.keys), take(&self.values))
    }

    fn upload<B: Backend>(&self, slots: usize, device: &B::Device) -> CachedKv<B> {
        let shape = [slots * self.kv_heads, self.capacity, self.head_dim];
        CachedKv { keys: upload(&self.keys, shape, device), values: upload(&self.values, shape, device) }
    }
}

/// Each span's naive attention over its own slot, in row order.
fn naive_spans(q: &[f32], cache: &AttentionCache, spans: &[Span], heads: usize) -> Vec<f64> {
    let mut out = Vec::new();
    let mut first = 0;
    for span in spans {
        let width = heads * cache.head_dim;
        let q_span = &q[first * width..(first + span.rows) * width];
        let (k, v) = cache.slot(span.slot, span.end());
        let shape = AttentionShape {
            tokens: span.rows,
            heads,
            kv_heads: cache.kv_heads,
            keys: span.end(),
            head_dim: cache.head_dim,
        };
        out.extend(naive_attention(q_span, &k, &v, shape));
        first += span.rows;
    }
    out
}

/// Prefill (several queries, causal) and decode (one query over every key) shapes of one
/// sequence, in a cache whose later rows hold values that must not be read; several sequences'
/// rows at once over their own slots; one query also in the static step (masked whole cache).
pub fn check_attention<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let (heads, kv_heads) = (6, 2);
    let span = |slot, start, rows| Span { slot, start, rows };
    // The longer ones span several key blocks of a split-KV kernel (merged by a second kernel);
    // head_dim 128 gives each of a 64-thread workgroup's threads two output dimensions. Not 520
    // or 600 keys: there Burn's composed ops on wgpu are wrong (docs/correctness.md).
    let mut cases: Vec<(Vec<Span>, usize)> =
        [(5, 5, 16), (3, 9, 16), (1, 12, 16), (1, 150, 16), (4, 133, 16), (1, 1100, 16), (3, 560, 128), (1, 70, 128)]
            .into_iter()
            .map(|(tokens, keys, head_dim)| (vec![span(0, keys - tokens, tokens)], head_dim))
            .collect();
    cases.push((vec![span(2, 40, 1), span(0, 7, 1), span(1, 0, 1)], 64));
    // A server's slots decoding together, in slot order.
    cases.push((vec![span(0, 5, 1), span(1, 31, 1), span(2, 0, 1), span(3, 12, 1)], 64));
    cases.push((vec![span(1, 99, 1), span(2, 3, 1), span(0, 60, 4)], 16));
    for (spans, head_dim) in cases {
        let what = |how: &str| format!("attention {how} spans={spans:?} head_dim={head_dim}");
        let slots = spans.iter().map(|s| s.slot + 1).max().unwrap_or(1);
        let capacity = spans.iter().map(Span::end).max().unwrap_or(1) + 7;
        let mut lens = vec![0; slots];
        for s in &spans {
            lens[s.slot] = s.end();
        }
        let cache = AttentionCache::new(slots, [kv_heads, capacity, head_dim], &lens, 9);
        let tokens = row_places(&spans).len();
        let q = random(tokens * heads * head_dim, 8);
        let expected = naive_spans(&q, &cache, &spans, heads);
        let q = upload::<B, 3>(&q, [tokens, heads, head_dim], device);
        let rope = RopeTables::<B>::new(&inverse_frequencies(head_dim, 10_000.0, None), capacity, device);
        let rows = rows_for(k, &rope, &spans, [heads, kv_heads], None, device);
        let got = download(k.attention(q.clone(), cache.upload(slots, device), &rows));
        assert_close(&what("over each slot's first rows"), &got, &expected, ABS, REL);
        if tokens == 1 {
            let rows = rows_for(k, &rope, &spans, [heads, kv_heads], Some(capacity), device);
            let got = download(k.attention(q, cache.upload(slots, device), &rows));
            assert_close(&what("in the static step"), &got, &expected, ABS, REL);
        }
    }
}

/// Writing each slot of the cache in steps returns exactly what was written, in order, and
/// leaves the other slots as they were; lengths, room and truncation are per slot.
pub fn check_kv_cache<B: Backend>(device: &B::Device) {
    let (kv_heads, head_dim, capacity, slots) = (2, 4, 16, 3);
    let mut cache = llama_core::kv_cache::KvCache::<B>::new(1, [kv_heads, head_dim], capacity, slots, device);
    let mut written: Vec<Vec<Vec<f32>>> = vec![vec![Vec::new(); kv_heads]; slots];
    for (step, (slot, tokens)) in [(0, 3usize), (2, 1), (0, 1), (1, 2), (2, 4)].into_iter().enumerate() {
        let values = random(kv_heads * tokens * head_dim, 20 + step as u64);
        for (h, own) in written[slot].iter_mut().enumerate() {
            own.extend_from_slice(&values[h * tokens * head_dim..(h + 1) * tokens * head_dim]);
        }
        let t = upload(&values, [kv_heads, tokens, head_dim], device);
        let start = cache.len(slot);
        let kv = cache.take(0).written(slot, start, t.clone(), t);
        let kv = cache.keep(0, kv);
        cache.advance(slot, tokens);
        for (s, own) in written.iter().enumerate() {
            let (keys, values) = kv.slot(s, kv_heads, cache.len(s));
            let expected: Vec<f64> = own.iter().flatten().map(|&v| v as f64).collect();
            assert_eq!(keys.dims(), [kv_heads, cache.len(s), head_dim]);
            assert_close(&format!("slot {s} keys after step {step}"), &download(keys), &expected, 0.0, 0.0);
            assert_close(&format!("slot {s} values after step {step}"), &download(values), &expected, 0.0, 0.0);
        }
    }
    assert_eq!((cache.len(0), cache.len(1), cache.len(2)), (4, 2, 5));
    assert!(cache.check_room(2, capacity - 5).is_ok() && cache.check_room(2, capacity - 4).is_err());
    cache.truncate(0, 1);
    assert_eq!(cache.len(0), 1, "truncate keeps a prefix of one slot");
    assert_eq!(cache.len(2), 5, "and leaves the others");
}
