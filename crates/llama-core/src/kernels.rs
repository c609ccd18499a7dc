//! The fast-path seam: every operation a framework may do faster goes through [`Kernels`].
//!
//! [`Composed`] builds each operation from Burn's primitive tensor ops. It runs on every backend
//! and is the reference that framework-specific providers are tested against. A binary picks the
//! provider; the model in [`crate::model`] is written once against the trait.
//!
//! Why a provider type and not `impl Kernels for Wgpu`: Rust's orphan rule forbids a bin crate
//! implementing a llama-core trait for a burn-wgpu type, but it may implement it for a local
//! struct (`struct WgpuKernels; impl Kernels<Wgpu> for WgpuKernels`).

use burn::tensor::{Bool, DType, Distribution, Int, Tensor, TensorData, activation, backend::Backend};

use crate::dequant::{self, DequantError, GgmlType};
use crate::kv_cache::CachedKv;
use crate::rope::RopeTables;

/// The static-shape decode step's position and what follows from it, made once per step by
/// [`Kernels::step_position`] and read by every layer.
#[derive(Debug, Clone)]
pub struct StepPosition<B: Backend> {
    /// The token's position `[1]`, on the device.
    pub position: Tensor<B, 1, Int>,
    /// The rotary tables' rows at `position`, `[1, width]`, in the width the provider's
    /// `rope_qkv_into_cache_at` reads.
    pub cos: Tensor<B, 2>,
    pub sin: Tensor<B, 2>,
    /// `[capacity]`: true for the cache rows at or before `position`.
    pub visible: Tensor<B, 1, Bool>,
}

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

/// The input of a product that begins with an RMSNorm, `rms_norm(x) = x / sqrt(mean(x²) + eps) *
/// weight` over the last dimension, kept unnormed so that a provider may fuse the norm into the
/// product ([`Kernels::norm_linear`]).
#[derive(Debug, Clone)]
pub struct Normed<'a, B: Backend> {
    /// `[tokens, dim]`: the residual stream.
    pub x: Tensor<B, 2>,
    /// `[dim]`: the norm's weight.
    pub weight: &'a Tensor<B, 1>,
    pub eps: f64,
}

pub trait Kernels<B: Backend>: Send + Sync {
    /// How this provider keeps a matmul weight on the device (dense, or still quantized).
    type Weight: Clone + Send + Sync;

    /// Human-readable name for logs and `--json` output.
    fn name(&self) -> &'static str;

    /// Whether greedy decoding on `device` should take the argmax there and read back one id,
    /// rather than read back the logits and scan them on the host (`generation::read_step`).
    /// Worth it where the logits must cross a bus (a GPU: 256 KB per token on a 128k
    /// vocabulary); on a CPU the host scan is cheaper than the framework's argmax call, so the
    /// default is no.
    fn greedy_on_device(&self, device: &B::Device) -> bool {
        let _ = device;
        false
    }

    /// Whether plain greedy decoding on `device` should be pipelined: the argmax stays on the
    /// device, the next step's embedding is looked up from it there ([`Self::embed_ids`]), and
    /// that step is queued before the id reaches the host, which reads one step behind. Host
    /// and device work then overlap instead of adding up. Default: where the argmax is taken on
    /// the device anyway.
    fn pipelines_greedy(&self, device: &B::Device) -> bool {
        self.greedy_on_device(device)
    }

    /// Whether decoding without `--compile` runs the static-shape step op by op (as PyTorch's
    /// static-cache decoders do) rather than shapes that follow the cache. Where `--compile`
    /// captures that step, this makes the capture the flags' only difference: the same kernels
    /// on the same shapes, so the same tokens.
    fn eager_decode_is_static(&self, device: &B::Device) -> bool {
        let _ = device;
        false
    }

    /// Uploads a weight read from a GGUF file.
    fn load_weight(&self, raw: RawWeight<'_>, device: &B::Device) -> Result<Self::Weight, DequantError>;

    /// A `rows × cols` (`[out, in]`) weight of N(0, `std`²) values generated on the device
    /// (random-weight models for speed measurements).
    fn random_weight(&self, rows: usize, cols: usize, std: f64, device: &B::Device) -> Self::Weight;

    /// Device bytes `weight` occupies (what a matmul against it reads).
    fn weight_bytes(&self, weight: &Self::Weight) -> usize;

    /// `x · Wᵀ` for the stored `[out, in]` weight W: `[tokens, in]` → `[tokens, out]`.
    fn linear(&self, x: Tensor<B, 2>, weight: &Self::Weight) -> Tensor<B, 2>;

    /// Rows `ids` of a `[vocab, dim]` embedding table (loaded like any matmul weight, so a tied
    /// output head shares it).
    fn embed(&self, table: &Self::Weight, ids: &[u32], device: &B::Device) -> Tensor<B, 2>;

    /// [`Self::embed`] for ids already on the device, `[tokens]` (a greedy step's argmax): the
    /// step that reads them can be queued before they reach the host.
    fn embed_ids(&self, table: &Self::Weight, ids: Tensor<B, 1, Int>) -> Tensor<B, 2>;

    /// `x / sqrt(mean(x²) + eps) * weight` over the last dimension.
    fn rms_norm(&self, x: Tensor<B, 2>, weight: &Tensor<B, 1>, eps: f64) -> Tensor<B, 2>;

    /// `rms_norm(input) · Wᵀ`: a norm and the product that reads it. A provider may fuse them:
    /// every workgroup of the product reads the whole row anyway, so it can normalise the row
    /// itself (once, shared by its rows) and skip the norm's own launch.
    fn norm_linear(&self, input: Normed<'_, B>, weight: &Self::Weight) -> Tensor<B, 2> {
        self.linear(self.normed(input), weight)
    }

    /// `residual + x · Wᵀ`: a product whose output joins the residual stream. A provider may add
    /// the residual as it writes each output, with no separate add.
    fn linear_add(&self, x: Tensor<B, 2>, weight: &Self::Weight, residual: Tensor<B, 2>) -> Tensor<B, 2> {
        residual + self.linear(x, weight)
    }

    /// [`Self::rms_norm`] of a product's input, unfused.
    fn normed(&self, input: Normed<'_, B>) -> Tensor<B, 2> {
        self.rms_norm(input.x, input.weight, input.eps)
    }

    /// Rotary embedding in half-split layout (see [`crate::rope`]) of `x` `[tokens, heads, head_dim]`
    /// whose tokens sit at positions `start .. start + tokens`.
    fn rope(&self, x: Tensor<B, 3>, tables: &RopeTables<B>, start: usize) -> Tensor<B, 3>;

    /// From one fused `[tokens, (heads + 2·kv_heads)·head_dim]` Q/K/V projection: rotates the
    /// queries and keys for positions `start ..`, writes keys and values into the layer's cache
    /// `cache_keys`/`cache_values` `[kv_heads, capacity, head_dim]` at `start`, and returns
    /// `(queries [tokens, heads, head_dim], cache_keys, cache_values)`. A provider may do it all
    /// in one pass, writing the cache in place.
    #[allow(clippy::too_many_arguments)]
    fn rope_qkv_into_cache(
        &self,
        qkv: Tensor<B, 2>,
        heads: usize,
        kv_heads: usize,
        tables: &RopeTables<B>,
        start: usize,
        cache_keys: Tensor<B, 3>,
        cache_values: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
        let [tokens, width] = qkv.dims();
        let head_dim = width / (heads + 2 * kv_heads);
        let (q_end, k_end) = (heads * head_dim, (heads + kv_heads) * head_dim);
        let part = |range: std::ops::Range<usize>, n: usize| {
            qkv.clone().slice([0..tokens, range]).reshape([tokens, n, head_dim])
        };
        let q = self.rope(part(0..q_end, heads), tables, start);
        let keys = self.rope(part(q_end..k_end, kv_heads), tables, start);
        let values = part(k_end..width, kv_heads);
        let slot = [0..kv_heads, start..start + tokens, 0..head_dim];
        let cache_keys = cache_keys.slice_assign(slot.clone(), keys.swap_dims(0, 1));
        let cache_values = cache_values.slice_assign(slot, values.swap_dims(0, 1));
        (q, cache_keys, cache_values)
    }

    /// [`Self::rope_qkv_into_cache`] of [`Self::norm_linear`]: the attention's whole input side,
    /// from the unnormed residual stream to the rotated queries and the written cache. A provider
    /// may do it in one pass for one token: if each pair of rows that RoPE rotates together is
    /// summed in one workgroup, that workgroup can rotate the pair and write it where it belongs,
    /// and the projection itself is never stored.
    #[allow(clippy::too_many_arguments)]
    fn norm_linear_rope_into_cache(
        &self,
        input: Normed<'_, B>,
        qkv: &Self::Weight,
        heads: usize,
        kv_heads: usize,
        tables: &RopeTables<B>,
        start: usize,
        cache_keys: Tensor<B, 3>,
        cache_values: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
        let qkv = self.norm_linear(input, qkv);
        self.rope_qkv_into_cache(qkv, heads, kv_heads, tables, start, cache_keys, cache_values)
    }

    /// What the static-shape step derives from its device position `position` `[1]`, computed once
    /// per step rather than once per layer (in a captured graph, 2 to 4 kernels fewer per layer):
    /// the rotary rows at it, in the width [`Self::rope_qkv_into_cache_at`] reads (half here), and
    /// which of the cache's `capacity` rows are visible.
    fn step_position(&self, tables: &RopeTables<B>, position: Tensor<B, 1, Int>, capacity: usize) -> StepPosition<B> {
        let (cos, sin) = tables.tables();
        let device = position.device();
        let visible =
            Tensor::<B, 1, Int>::arange(0..capacity as i64, &device).lower_equal(position.clone().expand([capacity]));
        StepPosition {
            cos: cos.clone().select(0, position.clone()),
            sin: sin.clone().select(0, position.clone()),
            position,
            visible,
        }
    }

    /// [`Self::rope_qkv_into_cache`] for one token at the device position `step.position`, so
    /// that no shape and no host value depends on it (the static-shape decode step, which a
    /// framework may capture once and replay). Returns the whole caches.
    fn rope_qkv_into_cache_at(
        &self,
        qkv: Tensor<B, 2>,
        heads: usize,
        kv_heads: usize,
        step: &StepPosition<B>,
        cache_keys: Tensor<B, 3>,
        cache_values: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
        let [_, width] = qkv.dims();
        let head_dim = width / (heads + 2 * kv_heads);
        let qkv = qkv.reshape([1, heads + 2 * kv_heads, head_dim]);
        let part = |first: usize, n: usize| qkv.clone().slice([0..1, first..first + n, 0..head_dim]);
        let q = rotate_half_split(part(0, heads), step.cos.clone(), step.sin.clone());
        let keys = rotate_half_split(part(heads, kv_heads), step.cos.clone(), step.sin.clone());
        let values = part(heads + kv_heads, kv_heads);
        // Without a host position there is no slice to assign: blend the new row in where the
        // position matches (every cache row is read and written, O(capacity), fine for a reference).
        let [_, capacity, _] = cache_keys.dims();
        let device = cache_keys.device();
        let row =
            Tensor::<B, 1, Int>::arange(0..capacity as i64, &device).equal(step.position.clone().expand([capacity]));
        let shape = [kv_heads, capacity, head_dim];
        let row = row.reshape([1, capacity, 1]).expand(shape);
        let cache_keys = cache_keys.mask_where(row.clone(), keys.swap_dims(0, 1).expand(shape));
        let cache_values = cache_values.mask_where(row, values.swap_dims(0, 1).expand(shape));
        (q, cache_keys, cache_values)
    }

    /// Runs `step`, the static-shape decode step (see [`crate::model::Llama::decode`]), on
    /// the embedding `x` `[1, dim]` at `position`, against the KV cache with id `cache_id`. By
    /// default it puts the position on the device and calls the step; a provider may instead
    /// capture the step once (a CUDA graph: every call has the same shapes and buffers) and
    /// replay it for later tokens of the same cache.
    fn run_static_step(
        &self,
        x: Tensor<B, 2>,
        position: usize,
        cache_id: u64,
        step: &mut dyn FnMut(Tensor<B, 2>, Tensor<B, 1, Int>) -> Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let _ = cache_id;
        run_step_eagerly(x, position, step)
    }

    /// Attention of one query `q` `[1, heads, head_dim]` at the device position `step.position`
    /// over the whole caches `k`, `v` `[kv_heads, capacity, head_dim]`, the rows `step.visible`
    /// leaves out masked: the static-shape form of [`Self::attention`]. Returns `[1, heads * head_dim]`.
    fn attention_at(&self, q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, step: &StepPosition<B>) -> Tensor<B, 2> {
        let [_, heads, head_dim] = q.dims();
        let [kv_heads, capacity, _] = k.dims();
        let group = heads / kv_heads;
        let q = q.reshape([kv_heads, group, head_dim]);
        let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(1.0 / (head_dim as f64).sqrt());
        let future = step.visible.clone().bool_not().reshape([1, 1, capacity]).expand([kv_heads, group, capacity]);
        activation::softmax(scores.mask_fill(future, f32::NEG_INFINITY), 2).matmul(v).reshape([1, heads * head_dim])
    }

    /// Causal grouped-query attention of `q` `[tokens, heads, head_dim]` over the first
    /// `kv.len` cached keys and values (`[kv_heads, capacity, head_dim]`), where the queries sit
    /// at positions `kv.len - tokens .. kv.len`. Returns `[tokens, heads * head_dim]`.
    fn attention(&self, q: Tensor<B, 3>, kv: CachedKv<B>) -> Tensor<B, 2>;

    /// `silu(gate) * up`, the SwiGLU activation.
    fn swiglu(&self, gate: Tensor<B, 2>, up: Tensor<B, 2>) -> Tensor<B, 2>;

    /// `swiglu(h · Gateᵀ, h · Upᵀ)` for `h = rms_norm(input)`: the feed-forward's norm and first
    /// half. A provider may read both weights in one pass over the input, fuse the norm as
    /// [`Self::norm_linear`] does, and never write the two intermediate activations.
    fn norm_linear_swiglu(&self, input: Normed<'_, B>, gate: &Self::Weight, up: &Self::Weight) -> Tensor<B, 2> {
        let h = self.normed(input);
        self.swiglu(self.linear(h.clone(), gate), self.linear(h, up))
    }

    /// Whether the model should load each layer's gate and up weights stacked into one
    /// `[2·ffn, dim]` weight (when the file stores both in the same format) and call
    /// [`Self::norm_linear_swiglu_stacked`] instead of [`Self::norm_linear_swiglu`]: one product where a
    /// provider's fixed cost per call matters more than a fused two-weight kernel.
    fn stacks_gate_up(&self) -> bool {
        false
    }

    /// [`Self::norm_linear_swiglu`] with the gate and up weights stacked by rows, `[Gate; Up]`.
    fn norm_linear_swiglu_stacked(&self, input: Normed<'_, B>, gate_up: &Self::Weight) -> Tensor<B, 2> {
        let both = self.norm_linear(input, gate_up);
        let [tokens, width] = both.dims();
        let ffn = width / 2;
        self.swiglu(both.clone().slice([0..tokens, 0..ffn]), both.slice([0..tokens, ffn..width]))
    }
}

/// The reference provider: plain compositions of Burn tensor ops, dense weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct Composed;

/// Largest block of a dense weight: wgpu binds each tensor as one storage buffer, and drivers
/// cap those (lavapipe: 128 MiB); Llama 3's 128256 × 2048 embedding is 1 GiB in f32.
const MAX_BLOCK_BYTES: usize = 64 << 20;

/// A dense weight laid out `[in, out]`, split along `out` into column blocks of at most
/// [`MAX_BLOCK_BYTES`] (counted in f32), so `linear` is `x · W` block by block.
///
/// Why `[in, out]` and not GGUF's `[out, in]` with a transposed view: burn-wgpu 0.21 with fusion
/// computes wrong decode (M = 1) results in that layout inside the full model (found by
/// `kernel_checks::check_incremental_decode`; syncing around the matmul, or a contiguous
/// right-hand side, both fix it). The transpose happens once, on the host, at load.
#[derive(Debug, Clone)]
pub struct DenseWeight<B: Backend> {
    /// `[in, out_i]` each; the `out_i` add up to `out`.
    blocks: Vec<Tensor<B, 2>>,
    /// Output features per block (the last may have fewer).
    block_out: usize,
}

/// Output rows per block for a weight with `cols` inputs.
fn rows_per_block(rows: usize, cols: usize) -> usize {
    (MAX_BLOCK_BYTES / 4 / cols.max(1)).clamp(1, rows.max(1))
}

impl<B: Backend> Kernels<B> for Composed {
    type Weight = DenseWeight<B>;

    fn name(&self) -> &'static str {
        "composed burn ops"
    }

    fn load_weight(&self, raw: RawWeight<'_>, device: &B::Device) -> Result<DenseWeight<B>, DequantError> {
        let block_out = rows_per_block(raw.rows, raw.cols);
        let row_bytes = raw.ggml_type.bytes_for(raw.cols)?;
        let mut blocks = Vec::new();
        for first in (0..raw.rows).step_by(block_out) {
            let rows = block_out.min(raw.rows - first);
            let bytes = &raw.bytes[first * row_bytes..(first + rows) * row_bytes];
            let values = dequant::dequantize(raw.ggml_type, bytes, rows * raw.cols)?;
            let transposed = transpose(&values, rows, raw.cols);
            blocks.push(Tensor::from_data(TensorData::new(transposed, [raw.cols, rows]), device));
        }
        Ok(DenseWeight { blocks, block_out })
    }

    fn random_weight(&self, rows: usize, cols: usize, std: f64, device: &B::Device) -> DenseWeight<B> {
        let block_out = rows_per_block(rows, cols);
        let blocks = (0..rows)
            .step_by(block_out)
            .map(|first| Tensor::random([cols, block_out.min(rows - first)], Distribution::Normal(0.0, std), device))
            .collect();
        DenseWeight { blocks, block_out }
    }

    fn weight_bytes(&self, weight: &DenseWeight<B>) -> usize {
        weight.blocks.iter().map(|b| b.shape().num_elements() * b.dtype().size()).sum()
    }

    fn linear(&self, x: Tensor<B, 2>, weight: &DenseWeight<B>) -> Tensor<B, 2> {
        match weight.blocks.as_slice() {
            [single] => x.matmul(single.clone()),
            blocks => Tensor::cat(blocks.iter().map(|b| x.clone().matmul(b.clone())).collect(), 1),
        }
    }

    fn embed(&self, table: &DenseWeight<B>, ids: &[u32], _device: &B::Device) -> Tensor<B, 2> {
        // The table is stored [dim, vocab] in column blocks: a token's embedding is a column.
        let columns = ids
            .iter()
            .map(|&id| {
                let (block, col) = (id as usize / table.block_out, id as usize % table.block_out);
                let b = &table.blocks[block];
                b.clone().slice([0..b.dims()[0], col..col + 1])
            })
            .collect();
        Tensor::cat(columns, 1).transpose()
    }

    fn embed_ids(&self, table: &DenseWeight<B>, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        // Each column block gathers the ids inside it and zeroes the others' rows; the blocks'
        // parts add up to the rows (adding zeros is exact).
        let mut rows: Option<Tensor<B, 2>> = None;
        for (i, block) in table.blocks.iter().enumerate() {
            let width = block.dims()[1] as i64;
            let local = ids.clone().sub_scalar((i * table.block_out) as i64);
            let inside = local.clone().greater_equal_elem(0).bool_and(local.clone().lower_elem(width));
            let part = block.clone().select(1, local.clamp(0, width - 1)).transpose(); // [tokens, dim]
            let dtype = part.dtype();
            let part = part * inside.float().cast(dtype).unsqueeze_dim::<2>(1);
            rows = Some(match rows {
                None => part,
                Some(sum) => sum + part,
            });
        }
        rows.expect("an embedding table has at least one block")
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

    fn rope(&self, x: Tensor<B, 3>, tables: &RopeTables<B>, start: usize) -> Tensor<B, 3> {
        let (cos, sin) = tables.range(start, x.dims()[0]);
        rotate_half_split(x, cos, sin)
    }

    fn attention(&self, q: Tensor<B, 3>, kv: CachedKv<B>) -> Tensor<B, 2> {
        let (k, v) = kv.visible();
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

/// The static decode step run as it is: the position put on `x`'s device, then `step` called
/// (`Kernels::run_static_step`'s default, and what a capturing provider does when it cannot).
pub fn run_step_eagerly<B: Backend>(
    x: Tensor<B, 2>,
    position: usize,
    step: &mut dyn FnMut(Tensor<B, 2>, Tensor<B, 1, Int>) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    let position = Tensor::<B, 1, Int>::from_data(TensorData::from([position as i64]), &x.device());
    step(x, position)
}

/// Half-split rotary embedding of `x` `[tokens, heads, head_dim]` with the `cos`, `sin` rows
/// `[tokens, head_dim / 2]` of its positions: `(x₁·cos - x₂·sin, x₂·cos + x₁·sin)`.
pub fn rotate_half_split<B: Backend>(x: Tensor<B, 3>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 3> {
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
