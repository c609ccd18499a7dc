//! The fast-path seam: every operation a framework may do faster goes through [`Kernels`].
//!
//! [`Composed`] builds each operation from Burn's primitive tensor ops. It runs on every backend
//! and is the reference that framework-specific providers are tested against. A binary picks the
//! provider; the model in [`crate::model`] is written once against the trait.
//!
//! Why a provider type and not `impl Kernels for Wgpu`: Rust's orphan rule forbids a bin crate
//! implementing a llama-core trait for a burn-wgpu type, but it may implement it for a local
//! struct (`struct WgpuKernels; impl Kernels<Wgpu> for WgpuKernels`).

use burn::tensor::{Bool, DType, Int, Tensor, TensorData, activation, backend::Backend};

use crate::dequant::{self, DequantError, GgmlType};

/// A matmul weight as stored in the file, before the provider decides how to keep it.
#[derive(Debug, Clone, Copy)]
pub struct RawWeight<'a> {
    pub name: &'a str,
    pub ggml_type: GgmlType,
    /// Row-major `rows × cols` in `ggml_type`'s block layout.
    pub bytes: &'a [u8],
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
}

pub trait Kernels<B: Backend>: Send + Sync {
    /// How this provider keeps a matmul weight on the device (dense, or still quantized).
    type Weight: Clone + Send + Sync;

    /// Human-readable name for logs and `--json` output.
    fn name(&self) -> &'static str;

    /// Uploads a weight read from a GGUF file.
    fn load_weight(&self, raw: RawWeight<'_>, device: &B::Device) -> Result<Self::Weight, DequantError>;

    /// Wraps a dense weight created on the device, laid out `[in, out]` (random-weight models).
    fn dense_weight(&self, weight_in_out: Tensor<B, 2>) -> Self::Weight;

    /// `x · Wᵀ` for the stored `[out, in]` weight W: `[tokens, in]` → `[tokens, out]`.
    fn linear(&self, x: Tensor<B, 2>, weight: &Self::Weight) -> Tensor<B, 2>;

    /// Rows `ids` of a `[vocab, dim]` embedding table (loaded like any matmul weight, so a tied
    /// output head shares it).
    fn embed(&self, table: &Self::Weight, ids: &[u32], device: &B::Device) -> Tensor<B, 2>;

    /// `x / sqrt(mean(x²) + eps) * weight` over the last dimension.
    fn rms_norm(&self, x: Tensor<B, 2>, weight: &Tensor<B, 1>, eps: f64) -> Tensor<B, 2>;

    /// Rotary embedding in half-split layout (see [`crate::rope`]): `x` is `[tokens, heads, head_dim]`,
    /// `cos`/`sin` are `[tokens, head_dim / 2]` for the tokens' positions.
    fn rope(&self, x: Tensor<B, 3>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 3>;

    /// Causal grouped-query attention of `q` `[tokens, heads, head_dim]` over the cached
    /// `k`, `v` `[kv_heads, keys, head_dim]`, where the queries sit at positions
    /// `keys - tokens .. keys`. Returns `[tokens, heads * head_dim]`.
    fn attention(&self, q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>) -> Tensor<B, 2>;

    /// `silu(gate) * up`, the SwiGLU activation.
    fn swiglu(&self, gate: Tensor<B, 2>, up: Tensor<B, 2>) -> Tensor<B, 2>;
}

/// The reference provider: plain compositions of Burn tensor ops, dense f32 weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct Composed;

impl<B: Backend> Kernels<B> for Composed {
    /// `[in, out]`, contiguous: `linear` is a plain `x · W`.
    ///
    /// Why not keep GGUF's `[out, in]` and multiply by a transposed view: burn-wgpu 0.21 with
    /// fusion computes wrong decode (M = 1) results in that layout inside the full model (found
    /// by `kernel_checks::check_incremental_decode`; syncing around the matmul, or a contiguous
    /// right-hand side, both fix it). The transpose happens once, on the host, at load.
    type Weight = Tensor<B, 2>;

    fn name(&self) -> &'static str {
        "composed burn ops"
    }

    fn load_weight(&self, raw: RawWeight<'_>, device: &B::Device) -> Result<Tensor<B, 2>, DequantError> {
        let values = dequant::dequantize(raw.ggml_type, raw.bytes, raw.rows * raw.cols)?;
        let transposed = transpose(&values, raw.rows, raw.cols);
        Ok(Tensor::from_data(TensorData::new(transposed, [raw.cols, raw.rows]), device))
    }

    fn dense_weight(&self, weight_in_out: Tensor<B, 2>) -> Tensor<B, 2> {
        weight_in_out
    }

    fn linear(&self, x: Tensor<B, 2>, weight: &Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(weight.clone())
    }

    fn embed(&self, table: &Tensor<B, 2>, ids: &[u32], device: &B::Device) -> Tensor<B, 2> {
        // The table is stored [dim, vocab]: a token's embedding is a column.
        let ids: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
        let n = ids.len();
        table.clone().select(1, Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n]), device)).transpose()
    }

    fn rms_norm(&self, x: Tensor<B, 2>, weight: &Tensor<B, 1>, eps: f64) -> Tensor<B, 2> {
        // The mean of squares in f32: in f16 a residual stream value above 256 squares past the
        // largest f16 (65504).
        let dtype = x.dtype();
        let in_f32 = |t: Tensor<B, 2>| if dtype == DType::F32 { t } else { t.cast(DType::F32) };
        let x32 = in_f32(x);
        let inv_rms = x32.clone().powi_scalar(2).mean_dim(1).add_scalar(eps).sqrt().recip();
        let normed = x32 * inv_rms;
        let normed = if dtype == DType::F32 { normed } else { normed.cast(dtype) };
        normed * weight.clone().unsqueeze::<2>()
    }

    fn rope(&self, x: Tensor<B, 3>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 3> {
        let [tokens, heads, head_dim] = x.dims();
        let half = head_dim / 2;
        let x1 = x.clone().slice([0..tokens, 0..heads, 0..half]);
        let x2 = x.slice([0..tokens, 0..heads, half..head_dim]);
        let cos = cos.unsqueeze_dim::<3>(1);
        let sin = sin.unsqueeze_dim::<3>(1);
        let rotated_first = x1.clone() * cos.clone() - x2.clone() * sin.clone();
        let rotated_second = x2 * cos + x1 * sin;
        Tensor::cat(vec![rotated_first, rotated_second], 2)
    }

    fn attention(&self, q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>) -> Tensor<B, 2> {
        let [tokens, heads, head_dim] = q.dims();
        let [kv_heads, keys, _] = k.dims();
        let group = heads / kv_heads;
        // Query head h reads KV head h / group (llama.cpp and HF's repeat_kv agree). Grouping the
        // queries as [kv_heads, group * tokens, head_dim] lets one batched matmul per KV head do
        // the work without materialising repeated keys.
        let q = q.swap_dims(0, 1).reshape([kv_heads, group * tokens, head_dim]);
        let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(1.0 / (head_dim as f64).sqrt());
        let scores = if tokens > 1 {
            let mask = causal_mask::<B>(group, tokens, keys, &scores.device());
            scores.mask_fill(mask.unsqueeze::<3>(), f32::NEG_INFINITY)
        } else {
            scores // a single query at the newest position may see every key
        };
        let probs = activation::softmax(scores, 2);
        let out = probs.matmul(v); // [kv_heads, group * tokens, head_dim]
        out.reshape([heads, tokens, head_dim]).swap_dims(0, 1).reshape([tokens, heads * head_dim])
    }

    fn swiglu(&self, gate: Tensor<B, 2>, up: Tensor<B, 2>) -> Tensor<B, 2> {
        activation::silu(gate) * up
    }
}

/// Row-major `rows × cols` → `cols × rows`, in cache-sized tiles.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0f32; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

/// `true` where query row `(g, t)` must not see key `s`: the queries are the last `tokens` of
/// `keys` positions, so query `t` sees keys `0 ..= keys - tokens + t`.
fn causal_mask<B: Backend>(group: usize, tokens: usize, keys: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    let first_query_pos = keys - tokens;
    let mask: Vec<bool> = (0..group * tokens)
        .flat_map(|row| {
            let visible = first_query_pos + row % tokens;
            (0..keys).map(move |s| s > visible)
        })
        .collect();
    Tensor::from_data(TensorData::new(mask, [group * tokens, keys]), device)
}
