//! What the checks share: random inputs, uploads and downloads, the comparison, the test
//! weights and the naive f64 loops they are held to.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use llama_core::dequant::{self, GgmlType};
use llama_core::kernels::{Kernels, RawWeight};
use llama_core::sampling::Rng;

/// Deterministic N(0, 1)-ish values (sum of uniforms), so failures reproduce.
pub(super) fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| ((0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0) as f32 * 1.7).collect()
}

pub(super) fn upload<B: Backend, const D: usize>(
    values: &[f32],
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

pub(super) fn download<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
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
pub(super) const ABS: f64 = 1e-4;
pub(super) const REL: f64 = 1e-4;

/// `n` weights' bytes in `ty`, for the formats providers keep packed: random values quantized,
/// or for the K-quants (no quantizer here) random super-blocks with small fixed `d` (and `dmin`),
/// so every 6-bit scale, minimum and quant pattern occurs.
/// Q4_1 has no quantizer either: its blocks get the Q4_0 nibbles with a separate minimum.
pub(super) fn weight_bytes(ty: GgmlType, n: usize, seed: u64) -> Vec<u8> {
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

/// A `rows × cols` test weight in `ty` from `seed`, loaded by the provider, with its values as
/// llama-core dequantizes them (itself checked against llama.cpp).
pub(super) fn test_weight<B: Backend, K: Kernels<B>>(
    k: &K,
    ty: GgmlType,
    [rows, cols]: [usize; 2],
    seed: u64,
    device: &B::Device,
) -> (K::Weight, Vec<f32>) {
    let bytes = weight_bytes(ty, rows * cols, seed);
    let dense = dequant::dequantize(ty, &bytes, rows * cols).expect("dequantize test weight");
    let raw = RawWeight { name: "test.weight", ggml_type: ty, bytes: &bytes, rows, cols };
    (k.load_weight(raw, device).unwrap_or_else(|e| panic!("load {ty:?} weight: {e}")), dense)
}

/// `x · Wᵀ` in f64.
pub(super) fn naive_linear(x: &[f32], w: &[f32], tokens: usize, rows: usize, cols: usize) -> Vec<f64> {
    (0..tokens)
        .flat_map(|t| (0..rows).map(move |r| (0..cols).map(|c| x[t * cols + c] as f64 * w[r * cols + c] as f64).sum()))
        .collect()
}

/// RMSNorm of each `x.len() / weight.len()`-wide row of `x`, in f64.
pub(super) fn naive_rms_norm(x: &[f32], weight: &[f32], eps: f64) -> Vec<f64> {
    let cols = weight.len();
    x.chunks(cols)
        .flat_map(|row| {
            let mean_square = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
            let inv = 1.0 / (mean_square + eps).sqrt();
            row.iter().zip(weight).map(move |(&v, &g)| v as f64 * inv * g as f64)
        })
        .collect()
}

/// f64 values rounded to the f32 the next operation reads.
pub(super) fn as_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}
