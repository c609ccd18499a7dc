//! Every [`Kernels`] operation checked against a naive host loop in f64, on random inputs.
//! Generic over the backend, so each binary's tests run them on its own framework, and a
//! framework's fast-path provider is held to the same bounds as [`crate::kernels::Composed`].

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::dequant::{self, GgmlType};
use crate::kernels::{Kernels, Normed, RawWeight};
use crate::kv_cache::CachedKv;
use crate::sampling::Rng;

/// Deterministic N(0, 1)-ish values (sum of uniforms), so failures reproduce.
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| ((0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0) as f32 * 1.7).collect()
}

fn upload<B: Backend, const D: usize>(values: &[f32], shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

fn download<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 data")
}

/// Fails unless every element is within `abs + rel·|expected|`.
pub fn assert_close(what: &str, got: &[f32], expected: &[f64], abs: f64, rel: f64) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let err = (g as f64 - e).abs();
        assert!(err <= abs + rel * e.abs(), "{what}: element {i}: got {g}, expected {e} (|err| {err:.3e})");
    }
}

/// Bounds for f32 compute (inputs of magnitude ~1, sums over at most a few hundred terms).
const ABS: f64 = 1e-4;
const REL: f64 = 1e-4;

/// `n` weights' bytes in `ty`, for the formats providers keep packed: random values quantized,
/// or for the K-quants (no quantizer here) random super-blocks with small fixed `d` (and `dmin`),
/// so every 6-bit scale, minimum and quant pattern occurs.
/// Q4_1 has no quantizer either: its blocks get the Q4_0 nibbles with a separate minimum.
fn weight_bytes(ty: GgmlType, n: usize, seed: u64) -> Vec<u8> {
    let values = random(n, seed);
    let f16_bytes = |v: f32| half::f16::from_f32(v).to_le_bytes();
    let random_super_blocks = |scales_at: &[(usize, f32)]| -> Vec<u8> {
        let mut rng = Rng::new(seed);
        let mut bytes: Vec<u8> =
            (0..ty.bytes_for(n).expect("whole super-blocks")).map(|_| rng.next_u64() as u8).collect();
        for block in bytes.chunks_exact_mut(ty.block_bytes()) {
            for &(at, value) in scales_at {
                block[at..at + 2].copy_from_slice(&f16_bytes(value));
            }
        }
        bytes
    };
    match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values.iter().flat_map(|&v| f16_bytes(v)).collect(),
        GgmlType::Q8_0 => dequant::quantize_q8_0(&values),
        GgmlType::Q4_0 => dequant::quantize_q4_0(&values),
        GgmlType::Q4_1 => dequant::quantize_q4_0(&values)
            .chunks(18)
            .enumerate()
            .flat_map(|(i, block)| [&block[..2], &f16_bytes(-0.3 - 0.01 * (i % 7) as f32)[..], &block[2..]].concat())
            .collect(),
        // w = d·sc·q - dmin·m with sc, m < 64 and q < 16: within about [-0.25, 1.9].
        GgmlType::Q4K => random_super_blocks(&[(0, 1.0 / 512.0), (2, 1.0 / 256.0)]),
        // w = d·sc·(q - 32) with |sc| ≤ 128 and |q - 32| ≤ 32: within about ±1.
        GgmlType::Q6K => random_super_blocks(&[(208, 1.0 / 4096.0)]),
        other => panic!("no test bytes for {other:?}"),
    }
}

/// The weight formats [`check_linear`] loads.
pub const LINEAR_TYPES: [GgmlType; 7] =
    [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4K, GgmlType::Q6K];

/// `x · Wᵀ` in f64 from the weight as llama-core dequantizes it.
fn naive_linear(x: &[f32], w: &[f32], tokens: usize, rows: usize, cols: usize) -> Vec<f64> {
    (0..tokens)
        .flat_map(|t| (0..rows).map(move |r| (0..cols).map(|c| x[t * cols + c] as f64 * w[r * cols + c] as f64).sum()))
        .collect()
}

/// Row widths checked per format: three blocks of 32, or one K-quant super-block of 256. Dense
/// rows also come long enough for a matrix-vector kernel's unrolled passes (520: 130 vectors of
/// 4 values) and in a width that only 2 divides (542); 32-weight blocks in rows of 40 blocks,
/// more than a 32-lane row's threads, so some take two.
fn row_widths(ty: GgmlType) -> Vec<usize> {
    match ty.block_elements() {
        1 => vec![96, 520, 542],
        32 => vec![96, 1280],
        n => vec![n],
    }
}

/// `linear`, `linear_add`, `norm_linear`, `norm_linear_swiglu` (both forms) and `embed` for every
/// weight format in [`LINEAR_TYPES`], against llama-core's own dequantization (itself checked
/// against llama.cpp).
pub fn check_linear<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let rows = 40;
    let eps = 1e-5;
    for (ty, cols) in LINEAR_TYPES.into_iter().flat_map(|ty| row_widths(ty).into_iter().map(move |cols| (ty, cols))) {
        let load = |seed: u64| {
            let bytes = weight_bytes(ty, rows * cols, seed);
            let dense = dequant::dequantize(ty, &bytes, rows * cols).expect("dequantize test weight");
            let raw = RawWeight { name: "test.weight", ggml_type: ty, bytes: &bytes, rows, cols };
            (k.load_weight(raw, device).unwrap_or_else(|e| panic!("load {ty:?} weight: {e}")), dense)
        };
        let (weight, w) = load(2);
        let (up_weight, up) = load(3);
        let stacked_bytes = [weight_bytes(ty, rows * cols, 2), weight_bytes(ty, rows * cols, 3)].concat();
        let raw = RawWeight { name: "test.stacked", ggml_type: ty, bytes: &stacked_bytes, rows: 2 * rows, cols };
        let gate_up_weight = k.load_weight(raw, device).unwrap_or_else(|e| panic!("load stacked {ty:?} weight: {e}"));
        let norm_weight = random(cols, 4);
        let norm_weight_t = upload::<B, 1>(&norm_weight, [cols], device);
        // Decode is one token; prefill is several (providers may switch strategy with the count).
        for tokens in [1, 3, 6, 17] {
            let what = |op: &str| format!("{op} {ty:?} cols={cols} tokens={tokens}");
            let x = random(tokens * cols, 1);
            let x_t = upload::<B, 2>(&x, [tokens, cols], device);
            let expected = naive_linear(&x, &w, tokens, rows, cols);
            let got = download(k.linear(x_t.clone(), &weight));
            assert_close(&what("linear"), &got, &expected, ABS * 10.0, REL * 10.0);

            let residual = random(tokens * rows, 6);
            let with_residual: Vec<f64> = expected.iter().zip(&residual).map(|(&e, &r)| e + r as f64).collect();
            let got = download(k.linear_add(x_t.clone(), &weight, upload(&residual, [tokens, rows], device)));
            assert_close(&what("linear_add"), &got, &with_residual, ABS * 10.0, REL * 10.0);

            // The products of the normed input, as the model calls them.
            let h: Vec<f32> = naive_rms_norm(&x, &norm_weight, eps).iter().map(|&v| v as f32).collect();
            let input = || Normed { x: x_t.clone(), weight: &norm_weight_t, eps };
            let normed_expected = naive_linear(&h, &w, tokens, rows, cols);
            let got = download(k.norm_linear(input(), &weight));
            assert_close(&what("norm_linear"), &got, &normed_expected, ABS * 10.0, REL * 10.0);

            let up_expected = naive_linear(&h, &up, tokens, rows, cols);
            let swiglu: Vec<f64> =
                normed_expected.iter().zip(&up_expected).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect();
            let got = download(k.norm_linear_swiglu(input(), &weight, &up_weight));
            assert_close(&what("norm_linear_swiglu"), &got, &swiglu, ABS * 10.0, REL * 10.0);
            let got = download(k.norm_linear_swiglu_stacked(input(), &gate_up_weight));
            assert_close(&what("norm_linear_swiglu_stacked"), &got, &swiglu, ABS * 10.0, REL * 10.0);
        }

        let ids = [5u32, 0, 39, 5];
        let got = download(k.embed(&weight, &ids, device));
        let expected: Vec<f64> = ids
            .iter()
            .flat_map(|&id| w[id as usize * cols..(id as usize + 1) * cols].iter().map(|&v| v as f64))
            .collect();
        assert_close(&format!("embed {ty:?} cols={cols}"), &got, &expected, 1e-6, 1e-6);
        let device_ids =
            Tensor::<B, 1, Int>::from_data(TensorData::new(ids.map(i64::from).to_vec(), [ids.len()]), device);
        let got = download(k.embed_ids(&weight, device_ids));
        assert_close(&format!("embed_ids {ty:?} cols={cols}"), &got, &expected, 1e-6, 1e-6);
    }
}

/// RMSNorm of each `x.len() / weight.len()`-wide row of `x`, in f64.
fn naive_rms_norm(x: &[f32], weight: &[f32], eps: f64) -> Vec<f64> {
    let cols = weight.len();
    x.chunks(cols)
        .flat_map(|row| {
            let mean_square = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
            let inv = 1.0 / (mean_square + eps).sqrt();
            row.iter().zip(weight).map(move |(&v, &g)| v as f64 * inv * g as f64)
        })
        .collect()
}

pub fn check_rms_norm<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let (cols, eps) = (576, 1e-5);
    let w = random(cols, 4);
    for rows in [1, 4] {
        let x = random(rows * cols, 3);
        let got = download(k.rms_norm(upload(&x, [rows, cols], device), &upload(&w, [cols], device), eps));
        assert_close(&format!("rms_norm rows={rows}"), &got, &naive_rms_norm(&x, &w, eps), ABS, REL);
    }
}

pub fn check_rope<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let (tokens, heads, head_dim, positions) = (3, 2, 8, 16);
    let half = head_dim / 2;
    let inv_freq = crate::rope::inverse_frequencies(head_dim, 10_000.0, None);
    let tables = crate::rope::RopeTables::<B>::new(&inv_freq, positions, device);
    let x = random(tokens * heads * head_dim, 5);
    let x_t = upload::<B, 3>(&x, [tokens, heads, head_dim], device);
    // At the first position and further in, where the table rows are a view at an offset.
    for start in [0, 5, positions - tokens] {
        let got = download(k.rope(x_t.clone(), &tables, start));
        let mut expected = vec![0.0f64; x.len()];
        for t in 0..tokens {
            for h in 0..heads {
                let base = (t * heads + h) * head_dim;
                for i in 0..half {
                    let angle = ((start + t) as f32 * inv_freq[i]) as f64;
                    let (c, s) = (angle.cos(), angle.sin());
                    let (a, b) = (x[base + i] as f64, x[base + i + half] as f64);
                    expected[base + i] = a * c - b * s;
                    expected[base + i + half] = b * c + a * s;
                }
            }
        }
        assert_close(&format!("rope start={start}"), &got, &expected, ABS, REL);
    }
}

/// Rotation of pair `i` of a `head_dim` vector at `position`, in f64 from the f32 angle.
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

    /// `(queries, keys, values)` expected from the fused projection `qkv` `[tokens, width]`:
    /// queries rotated, keys rotated and values written over `old_keys`/`old_values` at
    /// `start ..`, the rest of the cache kept.
    fn expected(
        &self,
        qkv: &[f64],
        inv_freq: &[f32],
        old_keys: &[f32],
        old_values: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (width, head_dim) = (self.width(), self.head_dim);
        let head = |t: usize, slot: usize| &qkv[t * width + slot * head_dim..][..head_dim];
        let mut q = Vec::new();
        let mut keys: Vec<f64> = old_keys.iter().map(|&v| v as f64).collect();
        let mut values: Vec<f64> = old_values.iter().map(|&v| v as f64).collect();
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
        (q, keys, values)
    }
}

/// The fused projection split, rotated and written into a cache at `start`; the rest of the
/// cache keeps what it held.
pub fn check_rope_qkv_into_cache<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let case = QkvCase { heads: 4, kv_heads: 2, head_dim: 8, capacity: 10, start: 4 };
    let tokens = 3;
    let inv_freq = crate::rope::inverse_frequencies(case.head_dim, 10_000.0, None);
    let tables = crate::rope::RopeTables::<B>::new(&inv_freq, case.capacity, device);
    let qkv = random(tokens * case.width(), 30);
    let old_keys = random(case.kv_heads * case.capacity * case.head_dim, 31);
    let old_values = random(case.kv_heads * case.capacity * case.head_dim, 32);
    let (q, keys, values) = k.rope_qkv_into_cache(
        upload(&qkv, [tokens, case.width()], device),
        case.heads,
        case.kv_heads,
        &tables,
        case.start,
        upload(&old_keys, case.cache_shape(), device),
        upload(&old_values, case.cache_shape(), device),
    );
    let qkv: Vec<f64> = qkv.iter().map(|&v| v as f64).collect();
    let (expected_q, expected_keys, expected_values) = case.expected(&qkv, &inv_freq, &old_keys, &old_values);
    assert_close("rope_qkv_into_cache queries", &download(q), &expected_q, ABS, REL);
    assert_close("rope_qkv_into_cache keys", &download(keys), &expected_keys, ABS, REL);
    assert_close("rope_qkv_into_cache values", &download(values), &expected_values, 0.0, 0.0);
}

/// `norm_linear_rope_into_cache` for every weight format, one token (the decode step, which a
/// provider may fuse) and three, in the head width of Llama 3 and SmolLM2 (64) and a narrow one,
/// at the first position and further in.
pub fn check_norm_linear_rope_into_cache<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let (cols, eps) = (256, 1e-5);
    let norm_weight = random(cols, 40);
    let norm_weight_t = upload::<B, 1>(&norm_weight, [cols], device);
    for ty in LINEAR_TYPES {
        for (head_dim, start, tokens) in [(64, 0, 1), (64, 7, 1), (8, 5, 1), (64, 3, 3)] {
            let case = QkvCase { heads: 4, kv_heads: 2, head_dim, capacity: 12, start };
            let rows = case.width();
            let what = |part: &str| {
                format!("norm_linear_rope_into_cache {part} {ty:?} head_dim={head_dim} start={start} tokens={tokens}")
            };
            let bytes = weight_bytes(ty, rows * cols, 41);
            let w = dequant::dequantize(ty, &bytes, rows * cols).expect("dequantize test weight");
            let raw = RawWeight { name: "test.qkv", ggml_type: ty, bytes: &bytes, rows, cols };
            let weight = k.load_weight(raw, device).unwrap_or_else(|e| panic!("load {ty:?} weight: {e}"));
            let inv_freq = crate::rope::inverse_frequencies(head_dim, 10_000.0, None);
            let tables = crate::rope::RopeTables::<B>::new(&inv_freq, case.capacity, device);
            let x = random(tokens * cols, 42);
            let old_keys = random(case.kv_heads * case.capacity * head_dim, 43);
            let old_values = random(case.kv_heads * case.capacity * head_dim, 44);
            let (q, keys, values) = k.norm_linear_rope_into_cache(
                Normed { x: upload(&x, [tokens, cols], device), weight: &norm_weight_t, eps },
                &weight,
                case.heads,
                case.kv_heads,
                &tables,
                start,
                upload(&old_keys, case.cache_shape(), device),
                upload(&old_values, case.cache_shape(), device),
            );
            let h: Vec<f32> = naive_rms_norm(&x, &norm_weight, eps).iter().map(|&v| v as f32).collect();
            let qkv = naive_linear(&h, &w, tokens, rows, cols);
            let (expected_q, expected_keys, expected_values) = case.expected(&qkv, &inv_freq, &old_keys, &old_values);
            assert_close(&what("queries"), &download(q), &expected_q, ABS * 10.0, REL * 10.0);
            assert_close(&what("keys"), &download(keys), &expected_keys, ABS * 10.0, REL * 10.0);
            assert_close(&what("values"), &download(values), &expected_values, ABS * 10.0, REL * 10.0);
        }
    }
}

pub fn check_swiglu<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let n = 64;
    let (g, u) = (random(n, 6), random(n, 7));
    let got = download(k.swiglu(upload(&g, [2, n / 2], device), upload(&u, [2, n / 2], device)));
    let expected: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| g as f64 / (1.0 + (-g as f64).exp()) * u as f64).collect();
    assert_close("swiglu", &got, &expected, ABS, REL);
}

/// Naive causal GQA: query `t` of head `h` sits at position `keys - tokens + t`, reads KV head
/// `h / (heads / kv_heads)`, and sees keys up to its own position.
#[allow(clippy::too_many_arguments)]
pub fn naive_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    tokens: usize,
    heads: usize,
    kv_heads: usize,
    keys: usize,
    head_dim: usize,
) -> Vec<f64> {
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

/// Prefill (several queries, causal mask) and decode (one query over every key) shapes.
pub fn check_attention<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let (heads, kv_heads) = (6, 2);
    // The longer ones span several key blocks of a split-KV kernel (merged by a second kernel);
    // head_dim 128 gives each of a 64-thread workgroup's threads two output dimensions. Not 520
    // or 600 keys: there Burn's composed ops on wgpu are wrong (docs/correctness.md).
    let cases =
        [(5, 5, 16), (3, 9, 16), (1, 12, 16), (1, 150, 16), (4, 133, 16), (1, 1100, 16), (3, 560, 128), (1, 70, 128)];
    for (tokens, keys, head_dim) in cases {
        let q = random(tokens * heads * head_dim, 8);
        let kk = random(kv_heads * keys * head_dim, 9);
        let v = random(kv_heads * keys * head_dim, 10);
        let expected = naive_attention(&q, &kk, &v, tokens, heads, kv_heads, keys, head_dim);
        let q = upload::<B, 3>(&q, [tokens, heads, head_dim], device);
        let whole = CachedKv::whole(
            upload(&kk, [kv_heads, keys, head_dim], device),
            upload(&v, [kv_heads, keys, head_dim], device),
        );
        let got = download(k.attention(q.clone(), whole));
        assert_close(&format!("attention tokens={tokens} keys={keys}"), &got, &expected, ABS, REL);
        // As the model calls it: the first `keys` rows of a longer KV cache, whose later rows
        // hold values that must not be read.
        let capacity = keys + 7;
        let in_cache = |values: &[f32]| {
            Tensor::<B, 3>::full([kv_heads, capacity, head_dim], 1e4, device)
                .slice_assign([0..kv_heads, 0..keys, 0..head_dim], upload(values, [kv_heads, keys, head_dim], device))
        };
        let got = download(k.attention(q, CachedKv { keys: in_cache(&kk), values: in_cache(&v), len: keys }));
        assert_close(&format!("attention over cache views tokens={tokens} keys={keys}"), &got, &expected, ABS, REL);
    }
}

/// Appending to the cache in steps returns exactly what was written, in order.
pub fn check_kv_cache<B: Backend>(device: &B::Device) {
    let (kv_heads, head_dim, capacity) = (2, 4, 16);
    let mut cache = crate::kv_cache::KvCache::<B>::new(1, kv_heads, head_dim, capacity, device);
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

/// A two-layer grouped-query model small enough for whole-model checks.
fn tiny_config() -> crate::config::LlamaConfig {
    crate::config::LlamaConfig {
        vocab_size: 64,
        dim: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_dim: 48,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        context_length: 16,
    }
}

/// Decoding token by token through the KV cache gives the logits of one full prefill.
pub fn check_incremental_decode<B: Backend, K: Kernels<B> + Clone>(k: &K, device: &B::Device) {
    let config = tiny_config();
    B::seed(device, 1);
    let model = crate::model::Llama::random(config, true, k.clone(), 16, device);
    let tokens = [3u32, 17, 42, 5, 60, 8];
    let mut full = model.new_cache(16);
    let expected: Vec<f64> =
        download(model.forward(&tokens, &mut full).expect("prefill")).iter().map(|&v| v as f64).collect();
    let mut stepwise = model.new_cache(16);
    model.forward(&tokens[..3], &mut stepwise).expect("prefill");
    let mut last = None;
    for &t in &tokens[3..] {
        last = Some(model.forward(&[t], &mut stepwise).expect("decode"));
    }
    assert_close("incremental decode vs prefill", &download(last.expect("decoded")), &expected, 1e-4, 1e-4);
}

/// The static-shape decode step (device position, whole-cache masked attention), run op by op
/// and through the provider's capture (`--compile`), gives every step's logits as the dynamic
/// step does, after a prefill.
pub fn check_static_decode<B: Backend, K: Kernels<B> + Clone>(k: &K, device: &B::Device) {
    use crate::model::DecodeStep;
    let config = tiny_config();
    B::seed(device, 2);
    let model = crate::model::Llama::random(config, true, k.clone(), 16, device);
    let tokens = [9u32, 33, 1, 50, 27, 4, 61];
    for how in [DecodeStep::Static, DecodeStep::Captured] {
        let (mut dynamic, mut fixed) = (model.new_cache(16), model.new_cache(12));
        model.forward(&tokens[..2], &mut dynamic).expect("prefill");
        model.forward(&tokens[..2], &mut fixed).expect("prefill");
        for (step, &t) in tokens[2..].iter().enumerate() {
            let expected = download(model.decode(t, &mut dynamic, DecodeStep::Dynamic).expect("dynamic step"));
            let expected: Vec<f64> = expected.iter().map(|&v| v as f64).collect();
            let got = download(model.decode(t, &mut fixed, how).expect("static step"));
            assert_close(&format!("{how:?} decode step {step}"), &got, &expected, 1e-4, 1e-4);
        }
        assert_eq!(fixed.len(), tokens.len(), "the {how:?} step advances the cache");
    }
}

/// `generation::argmax_on_device` (greedy decoding on a GPU) picks what the host's
/// `sampling::argmax` picks, ties included: the lowest id.
pub fn check_argmax_on_device<B: Backend>(device: &B::Device) {
    let vocab = 1000;
    let mut logits = random(vocab, 9);
    for (case, ids) in [[613usize, 77, 905], [4, 999, 500]].into_iter().enumerate() {
        for &id in &ids {
            logits[id] = 10.0 + case as f32;
        }
        let expected = crate::sampling::argmax(&logits);
        assert_eq!(expected as usize, *ids.iter().min().expect("ids"), "host argmax keeps the lowest tied id");
        let got = crate::generation::argmax_on_device(upload::<B, 2>(&logits, [1, vocab], device));
        assert_eq!(got, expected, "argmax on the device, ties at {ids:?}");
    }
}

/// All of the above.
pub fn check_all<B: Backend, K: Kernels<B> + Clone>(k: &K, device: &B::Device) {
    check_linear(k, device);
    check_rms_norm(k, device);
    check_rope(k, device);
    check_rope_qkv_into_cache(k, device);
    check_norm_linear_rope_into_cache(k, device);
    check_swiglu(k, device);
    check_attention(k, device);
    check_kv_cache::<B>(device);
    check_incremental_decode(k, device);
    check_static_decode(k, device);
    check_argmax_on_device::<B>(device);
}
