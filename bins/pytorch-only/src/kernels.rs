//! libtorch's own operations behind llama-core's fast-path trait, as a PyTorch user's eager
//! Llama calls them (`rms_norm`, `scaled_dot_product_attention`, `silu`, one product per
//! projection): each one ATen op where llama-core's `Composed` builds it from several small Burn
//! ops.
//!
//! Two choices are the CPU's, each measured (docs/pytorch.md): weights are stored as one slice of
//! their outputs per thread; one token's product is an `embedding_bag` row sum over that layout
//! (one bag per thread; MKL's batch-1 sgemv runs on one core, in its generic code path on AMD) and
//! a prompt's is a `bmm`; and decode attention is a grouped matmul-softmax-matmul, which beats
//! CPU SDPA at these sizes.
//! The operations work on the `tch::Tensor` inside burn-tch's primitive, with no copy in or out.

use burn::tensor::{Distribution, Int, Tensor, TensorData, TensorPrimitive};
use burn_tch::{LibTorch, LibTorchDevice, TchTensor};
use llama_core::dequant::{self, DequantError};
use llama_core::kernels::{Kernels, Normed, RawWeight, StepPosition, transpose};
use llama_core::kv_cache::CachedKv;
use llama_core::rope::RopeTables;

pub type Tch = LibTorch<f32>;

/// The `tch::Tensor` inside a Burn tensor, and its storage record (burn-tch's in-place bookkeeping).
fn unwrap<const D: usize>(t: Tensor<Tch, D>) -> TchTensor {
    t.into_primitive().tensor()
}

pub(crate) fn raw<const D: usize>(t: Tensor<Tch, D>) -> tch::Tensor {
    unwrap(t).tensor
}

/// A fresh ATen result as a Burn tensor of rank `D` (the caller knows the rank).
pub(crate) fn wrap<const D: usize>(t: tch::Tensor) -> Tensor<Tch, D> {
    debug_assert_eq!(t.dim(), D, "rank of a wrapped libtorch result");
    Tensor::from_primitive(TensorPrimitive::Float(TchTensor::new(t)))
}

/// A matmul weight `W` `[out, in]`, stored transposed and split by outputs into `parts` slices,
/// `[parts, in, out / parts]`: `x · Wᵀ` for a prompt is then one `bmm` whose batch ATen spreads
/// over its threads (`parts` is the CPU's thread count; 1 on CUDA, or when `out` does not divide).
///
/// On a CPU a single token's product is a weighted sum of the rows of that layout,
/// `Σᵢ xᵢ · Wᵀ[i, ..]`, one sum per slice: exactly `embedding_bag(mode = sum)` with `x` as the
/// per-sample weights, which runs FBGEMM's vectorised row-sum kernel, one bag per thread, at the
/// memory bound, where MKL takes its generic (non-AVX) `sgemv` on this AMD CPU (docs/pytorch.md
/// has the numbers). `bags` holds that call's fixed row indices and bag offsets.
#[derive(Debug, Clone)]
pub struct TchWeight {
    stacked: Tensor<Tch, 3>,
    bags: Option<RowBags>,
}

/// `indices` `0 .. parts · in` and `offsets` `[0, in, 2·in, ..]`: bag p sums slice p's rows.
#[derive(Debug, Clone)]
struct RowBags {
    indices: Tensor<Tch, 1, Int>,
    offsets: Tensor<Tch, 1, Int>,
}

impl TchWeight {
    fn new(stacked: Tensor<Tch, 3>) -> Self {
        let [parts, cols, _] = stacked.dims();
        let device = stacked.device();
        let bags = (device == LibTorchDevice::Cpu).then(|| RowBags {
            indices: Tensor::arange(0..(parts * cols) as i64, &device),
            offsets: Tensor::arange_step(0..(parts * cols) as i64, cols, &device),
        });
        Self { stacked, bags }
    }

    fn raw(&self) -> tch::Tensor {
        raw(self.stacked.clone())
    }

    /// `x` `[1, in]` times the weight on a CPU, as one `embedding_bag` (see the type's docs);
    /// `[parts, cols, slice]` are the weight's dims, which the caller has already read.
    fn row_sum(&self, x: tch::Tensor, bags: &RowBags, [parts, cols, slice]: [i64; 3]) -> tch::Tensor {
        let table = self.raw().view([parts * cols, slice]);
        let (indices, offsets) =
            (bags.indices.clone().into_primitive().tensor, bags.offsets.clone().into_primitive().tensor);
        let x = x.reshape([cols]);
        // One copy of x per bag (`cat` is a cheaper call than `repeat` at this size).
        let weights = if parts == 1 { x } else { tch::Tensor::cat(&vec![&x; parts as usize], 0) };
        const SUM: i64 = 0;
        let (out, ..) = tch::Tensor::embedding_bag(&table, &indices, &offsets, false, SUM, false, Some(weights), false);
        out.view([1, parts * slice])
    }
}

/// Output slices for a weight of `out` rows on `device`.
fn parts_for(out: usize, device: &LibTorchDevice) -> usize {
    let threads = match device {
        LibTorchDevice::Cpu => tch::get_num_threads().max(1) as usize,
        _ => 1,
    };
    if out.is_multiple_of(threads) { threads } else { 1 }
}

/// The fused-op provider (see the module docs). With the `cuda-graph` feature it also holds the
/// captured decode step of `--compile` on CUDA.
#[derive(Clone, Default)]
pub struct TchKernels {
    #[cfg(feature = "cuda-graph")]
    graph: std::sync::Arc<crate::cuda_graph::StepGraph>,
}

/// Whether `device` is an accelerator (CUDA, MPS, Vulkan), where the choices above differ from a CPU's.
fn off_cpu(device: &LibTorchDevice) -> bool {
    !matches!(device, LibTorchDevice::Cpu)
}

impl Kernels<Tch> for TchKernels {
    type Weight = TchWeight;

    fn name(&self) -> &'static str {
        "libtorch ops (embedding_bag row sums for one token, thread-split bmm for prompts, rms_norm, sdpa)"
    }

    /// On CUDA; on a CPU `argmax` plus a one-element readback measured 1–4% slower per token
    /// than reading the logits (docs/pytorch.md).
    fn greedy_on_device(&self, device: &LibTorchDevice) -> bool {
        off_cpu(device)
    }

    /// Nowhere: burn-tch reads a tensor back synchronously, so the next step could only be
    /// queued after the id had arrived, which is what the unpipelined loop does.
    fn pipelines_greedy(&self, _device: &LibTorchDevice) -> bool {
        false
    }

    /// On CUDA, as the PyTorch anchor's eager loop and gpt-fast decode: `--half` and
    /// `--half --compile` then run the same kernels, and the graph is their only difference. With
    /// shapes that follow the cache, SDPA got no mask and libtorch picked another attention kernel
    /// than the static step's masked one: on an H200 the two runs' greedy ids parted at token 93
    /// of 128 (docs/benchmarks/2026-11-27-gpu-h200.md). On a CPU the dynamic step stays: its
    /// attention reads only the filled rows, not the whole context.
    fn eager_decode_is_static(&self, device: &LibTorchDevice) -> bool {
        off_cpu(device)
    }

    fn load_weight(&self, raw: RawWeight<'_>, device: &LibTorchDevice) -> Result<TchWeight, DequantError> {
        let (out, cols) = (raw.rows, raw.cols);
        let values = dequant::dequantize(raw.ggml_type, raw.bytes, out * cols)?;
        let parts = parts_for(out, device);
        let slice = out / parts;
        let stacked: Vec<f32> = values.chunks(slice * cols).flat_map(|rows| transpose(rows, slice, cols)).collect();
        // Tensor::from_data converts to the device's float dtype (--dtype / --half).
        Ok(TchWeight::new(Tensor::from_data(TensorData::new(stacked, [parts, cols, slice]), device)))
    }

    fn random_weight(&self, rows: usize, cols: usize, std: f64, device: &LibTorchDevice) -> TchWeight {
        let parts = parts_for(rows, device);
        TchWeight::new(Tensor::random([parts, cols, rows / parts], Distribution::Normal(0.0, std), device))
    }

    fn weight_bytes(&self, weight: &TchWeight) -> usize {
        weight.stacked.shape().num_elements() * weight.stacked.dtype().size()
    }

    fn linear(&self, x: Tensor<Tch, 2>, weight: &TchWeight) -> Tensor<Tch, 2> {
        let [tokens, cols] = x.dims();
        let [parts, _, slice] = weight.stacked.dims();
        let x = raw(x);
        if let (1, Some(bags)) = (tokens, &weight.bags) {
            return wrap(weight.row_sum(x, bags, [parts, cols, slice].map(|d| d as i64)));
        }
        let w = weight.raw();
        if parts == 1 {
            return wrap(x.mm(&w.select(0, 0)));
        }
        let out = x.unsqueeze(0).expand([parts as i64, tokens as i64, cols as i64], false).bmm(&w);
        // [parts, tokens, slice] → [tokens, parts · slice]: a view for one token, a copy for more.
        let out = if tokens == 1 { out } else { out.permute([1, 0, 2]) };
        wrap(out.reshape([tokens as i64, (parts * slice) as i64]))
    }

    fn embed(&self, table: &TchWeight, ids: &[u32], _device: &LibTorchDevice) -> Tensor<Tch, 2> {
        let slice = table.stacked.dims()[2];
        let table = table.raw();
        // Token `id` is column `id % slice` of slice `id / slice`; `stack` copies, so the result
        // never aliases the table (Burn may later write into it in place).
        let rows: Vec<tch::Tensor> = ids
            .iter()
            .map(|&id| table.select(0, (id as usize / slice) as i64).select(1, (id as usize % slice) as i64))
            .collect();
        wrap(tch::Tensor::stack(&rows, 0))
    }

    fn embed_ids(&self, table: &TchWeight, ids: Tensor<Tch, 1, Int>) -> Tensor<Tch, 2> {
        let slice = table.stacked.dims()[2] as i64;
        let ids = ids.into_primitive().tensor;
        // Slice `id / slice`, column `id % slice`: advanced indexing on dims 0 and 2 puts the
        // ids first, [tokens, dim], as a copy.
        let (slices, columns) = (ids.floor_divide_scalar(slice), ids.remainder(slice));
        wrap(table.raw().index(&[Some(slices), None, Some(columns)]))
    }

    fn rms_norm(&self, x: Tensor<Tch, 2>, weight: &Tensor<Tch, 1>, eps: f64) -> Tensor<Tch, 2> {
        let x = raw(x);
        let weight = raw(weight.clone());
        let size = x.size();
        let (rows, dim) = (size[0], size[1]);
        if rows == 1 && x.kind() == tch::Kind::Float && x.device() == tch::Device::Cpu {
            return wrap(rms_norm_row(&x, dim, &weight, eps));
        }
        // ATen's rms_norm takes the mean of squares in f32 for f16/bf16 inputs (as Composed does).
        wrap(x.rms_norm([dim], Some(weight), eps))
    }

    /// libtorch's out-of-place `+`, as the step's residual adds were before they moved here from
    /// the norms: the same ops, so the same results on the CUDA runs recorded in docs/benchmarks.
    fn linear_add(&self, x: Tensor<Tch, 2>, weight: &TchWeight, residual: Tensor<Tch, 2>) -> Tensor<Tch, 2> {
        wrap(raw(residual) + raw(self.linear(x, weight)))
    }

    fn rope(&self, x: Tensor<Tch, 3>, tables: &RopeTables<Tch>, start: usize) -> Tensor<Tch, 3> {
        let (cos, sin) = full_width_rows(tables, start, x.dims()[0]);
        wrap(rotate(&raw(x), &cos, &sin))
    }

    fn rope_qkv_into_cache(
        &self,
        qkv: Tensor<Tch, 2>,
        heads: usize,
        kv_heads: usize,
        tables: &RopeTables<Tch>,
        start: usize,
        cache_keys: Tensor<Tch, 3>,
        cache_values: Tensor<Tch, 3>,
    ) -> (Tensor<Tch, 3>, Tensor<Tch, 3>, Tensor<Tch, 3>) {
        let tokens = qkv.dims()[0];
        let (cos, sin) = full_width_rows(tables, start, tokens);
        let (queries, keys, values) = split_rotated(qkv, heads, kv_heads, &cos, &sin);
        let tokens = tokens as i64;
        let write = |new: tch::Tensor| {
            move |cache: &mut tch::Tensor| cache.narrow(1, start as i64, tokens).copy_(&new.transpose(0, 1))
        };
        (wrap(queries), in_place(cache_keys, write(keys)), in_place(cache_values, write(values)))
    }

    /// The full-width table rows `split_rotated` reads, and the visible rows as SDPA's boolean
    /// mask (true = may attend): index_select, arange and compare once per step, not per layer.
    fn step_position(
        &self,
        tables: &RopeTables<Tch>,
        position: Tensor<Tch, 1, Int>,
        capacity: usize,
    ) -> StepPosition<Tch> {
        let at = position.clone().into_primitive().tensor;
        let (cos, sin) = tables.full_width();
        let visible = tch::Tensor::arange(capacity as i64, (tch::Kind::Int64, at.device())).le_tensor(&at);
        StepPosition {
            cos: wrap(raw(cos.clone()).index_select(0, &at)),
            sin: wrap(raw(sin.clone()).index_select(0, &at)),
            position,
            visible: Tensor::from_primitive(TchTensor::new(visible)),
        }
    }

    fn rope_qkv_into_cache_at(
        &self,
        qkv: Tensor<Tch, 2>,
        heads: usize,
        kv_heads: usize,
        step: &StepPosition<Tch>,
        cache_keys: Tensor<Tch, 3>,
        cache_values: Tensor<Tch, 3>,
    ) -> (Tensor<Tch, 3>, Tensor<Tch, 3>, Tensor<Tch, 3>) {
        let position = step.position.clone().into_primitive().tensor;
        let (queries, keys, values) =
            split_rotated(qkv, heads, kv_heads, &raw(step.cos.clone()), &raw(step.sin.clone()));
        let write = |new: tch::Tensor| {
            let position = position.shallow_clone();
            move |cache: &mut tch::Tensor| {
                let _ = cache.index_copy_(1, &position, &new.transpose(0, 1));
            }
        };
        (wrap(queries), in_place(cache_keys, write(keys)), in_place(cache_values, write(values)))
    }

    fn attention(&self, q: Tensor<Tch, 3>, kv: CachedKv<Tch>) -> Tensor<Tch, 2> {
        let (k, v) = kv.visible();
        let [tokens, heads, head_dim] = q.dims();
        let keys = k.dims()[1];
        let (q, k, v) = (raw(q), raw(k), raw(v));
        if tokens == 1 && k.device() == tch::Device::Cpu {
            return wrap(grouped_attention(&q, &k, &v, None));
        }
        // Query t sits at position keys - tokens + t and sees keys up to it. SDPA's `is_causal`
        // aligns queries with the first keys, right only when there is no cached prefix.
        let mask = (tokens > 1 && tokens != keys).then(|| {
            let first = (keys - tokens) as i64;
            let positions = tch::Tensor::arange(keys as i64, (tch::Kind::Int64, k.device()));
            let queries = tch::Tensor::arange_start(first, keys as i64, (tch::Kind::Int64, k.device()));
            positions.unsqueeze(0).le_tensor(&queries.unsqueeze(1)) // true = may attend
        });
        let is_causal = tokens > 1 && tokens == keys;
        let q = q.transpose(0, 1); // [heads, tokens, head_dim]
        let out = tch::Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, is_causal, None, true);
        wrap(out.transpose(0, 1).reshape([tokens as i64, (heads * head_dim) as i64]))
    }

    fn attention_at(
        &self,
        q: Tensor<Tch, 3>,
        k: Tensor<Tch, 3>,
        v: Tensor<Tch, 3>,
        step: &StepPosition<Tch>,
    ) -> Tensor<Tch, 2> {
        let [_, heads, head_dim] = q.dims();
        let (q, k, v) = (raw(q), raw(k), raw(v));
        let visible = step.visible.clone().into_primitive().tensor;
        if k.device() == tch::Device::Cpu {
            return wrap(grouped_attention(&q, &k, &v, Some(&visible)));
        }
        let q = q.transpose(0, 1); // [heads, 1, head_dim]
        let out =
            tch::Tensor::scaled_dot_product_attention(&q, &k, &v, Some(visible.unsqueeze(0)), 0.0, false, None, true);
        wrap(out.reshape([1, (heads * head_dim) as i64]))
    }

    #[cfg(feature = "cuda-graph")]
    fn run_static_step(
        &self,
        x: Tensor<Tch, 2>,
        position: usize,
        cache_id: u64,
        step: &mut dyn FnMut(Tensor<Tch, 2>, Tensor<Tch, 1, Int>) -> Tensor<Tch, 2>,
    ) -> Tensor<Tch, 2> {
        if matches!(x.device(), LibTorchDevice::Cuda(_)) {
            return self.graph.run(x, position, cache_id, step);
        }
        llama_core::kernels::run_step_eagerly(x, position, step)
    }

    fn swiglu(&self, gate: Tensor<Tch, 2>, up: Tensor<Tch, 2>) -> Tensor<Tch, 2> {
        wrap(raw(gate).silu() * raw(up))
    }

    /// One product per layer fewer: on a CPU each `embedding_bag` call has a fixed cost (and a
    /// thread fork) that a bigger table amortises; with two slices the gate is one bag, the up
    /// the other.
    fn stacks_gate_up(&self) -> bool {
        true
    }

    /// The trait's default with `narrow` (one call per half) in place of Burn's `slice` (a
    /// shape read and a slice per dimension).
    fn norm_linear_swiglu_stacked(&self, input: Normed<'_, Tch>, gate_up: &TchWeight) -> Tensor<Tch, 2> {
        let both = raw(self.norm_linear(input, gate_up));
        let ffn = both.size()[1] / 2;
        wrap(both.narrow(1, 0, ffn).silu() * both.narrow(1, ffn, ffn))
    }
}

/// `rms_norm` of one f32 row `x` `[1, dim]` on a CPU. ATen's `rms_norm` is a composite there
/// (square, mean, add, rsqrt and two products, each a dispatched op with its own bookkeeping);
/// this is one `dot`, one fused `eps + dot / dim`, `rsqrt` and the two products: half the time
/// per call, and there are two norms per layer (docs/pytorch.md).
fn rms_norm_row(x: &tch::Tensor, dim: i64, weight: &tch::Tensor, eps: f64) -> tch::Tensor {
    let row = x.view([dim]);
    let options = (tch::Kind::Float, tch::Device::Cpu);
    let inverse_dim = tch::Tensor::scalar_tensor(1.0 / dim as f64, options);
    let mut mean_square = tch::Tensor::scalar_tensor(eps, options).addcmul(&row.dot(&row), &inverse_dim);
    let scale = mean_square.rsqrt_();
    let mut normed = x * weight;
    normed.g_mul_(&scale)
}

/// One query `q` `[1, heads, head_dim]` against `k`, `v` `[kv_heads, keys, head_dim]`: query
/// head h reads KV head h / group, so the group's queries are the rows of one matmul per KV head
/// (no repeated keys). `visible` `[keys]` masks the static step's unwritten positions. On a CPU
/// this beats SDPA with `enable_gqa` at every cache length measured (docs/pytorch.md).
fn grouped_attention(q: &tch::Tensor, k: &tch::Tensor, v: &tch::Tensor, visible: Option<&tch::Tensor>) -> tch::Tensor {
    let (heads, head_dim) = (q.size()[1], q.size()[2]);
    let kv_heads = k.size()[0];
    let q = q.reshape([kv_heads, heads / kv_heads, head_dim]);
    // `baddbmm` rather than `matmul` and a product: one call where `matmul` adds its own
    // reshapes around the same `bmm` (about 1.5 µs a call here) and the scale is a second op
    // (1% of a token, measured in docs/benchmarks/2026-11-27-cpu-decode-time-split.md). At
    // beta 0 its input is ignored, NaN included (documented), but must broadcast to the scores'
    // shape: a view of `q` does.
    let ignored = q.narrow(2, 0, 1);
    let scores = ignored.baddbmm(&q, &k.transpose(1, 2), 0.0, 1.0 / (head_dim as f64).sqrt());
    let scores = match visible {
        Some(visible) => scores.masked_fill(&visible.logical_not(), f64::NEG_INFINITY),
        None => scores,
    };
    scores.softmax(-1, None).bmm(v).reshape([1, heads * head_dim])
}

/// The fused `[tokens, (heads + 2·kv_heads)·head_dim]` projection split into queries and keys,
/// rotated with the `cos`, `sin` rows of their positions, and values, each `[tokens, n, head_dim]`.
/// Queries and keys are adjacent heads of the projection, so one rotation does both.
fn split_rotated(
    qkv: Tensor<Tch, 2>,
    heads: usize,
    kv_heads: usize,
    cos: &tch::Tensor,
    sin: &tch::Tensor,
) -> (tch::Tensor, tch::Tensor, tch::Tensor) {
    let [tokens, width] = qkv.dims();
    let all_heads = heads + 2 * kv_heads;
    let qkv = raw(qkv).reshape([tokens as i64, all_heads as i64, (width / all_heads) as i64]);
    let rotated = rotate(&qkv.narrow(1, 0, (heads + kv_heads) as i64), cos, sin);
    let queries = rotated.narrow(1, 0, heads as i64);
    let keys = rotated.narrow(1, heads as i64, kv_heads as i64);
    let values = qkv.narrow(1, (heads + kv_heads) as i64, kv_heads as i64);
    (queries, keys, values)
}

/// The full-width `(cos, cos)`, `(−sin, sin)` rows of positions `start .. start + len` (views).
fn full_width_rows(tables: &RopeTables<Tch>, start: usize, len: usize) -> (tch::Tensor, tch::Tensor) {
    let (cos, sin) = tables.full_width();
    let rows = |t: &Tensor<Tch, 2>| raw(t.clone()).narrow(0, start as i64, len as i64);
    (rows(cos), rows(sin))
}

/// Half-split rotary embedding of `x` `[tokens, heads, head_dim]` with full-width `cos`, `sin`
/// `[tokens, head_dim]` ([`RopeTables::full_width`]): `x·cos + (x₂, x₁)·sin`, where `roll` by half
/// a head swaps the halves. Three ATen calls where the half-by-half form takes seven.
fn rotate(x: &tch::Tensor, cos: &tch::Tensor, sin: &tch::Tensor) -> tch::Tensor {
    let half = x.size()[2] / 2;
    (x * cos.unsqueeze(1)).addcmul(&x.roll([half], [2]), &sin.unsqueeze(1))
}

/// Runs `write` on the cache's libtorch tensor, in place when Burn holds no other reference to
/// it (else on a copy, as Burn's own in-place rule does).
fn in_place(cache: Tensor<Tch, 3>, write: impl FnOnce(&mut tch::Tensor)) -> Tensor<Tch, 3> {
    let cache = unwrap(cache);
    let mut cache = if cache.can_mut() { cache } else { TchTensor::new(cache.tensor.copy()) };
    write(&mut cache.tensor);
    Tensor::from_primitive(TensorPrimitive::Float(cache))
}
