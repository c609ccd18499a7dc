//! libtorch's own operations behind llama-core's fast-path trait, as a PyTorch user's eager
//! Llama calls them (`rms_norm`, `scaled_dot_product_attention`, `silu`, one product per
//! projection): each one ATen op where llama-core's `Composed` builds it from several small Burn
//! ops.
//!
//! Two choices are the CPU's, each measured (docs/pytorch.md): weights are stored as one slice of
//! their outputs per thread; one token's product is an `embedding_bag` row sum over that layout
//! (one bag per thread; MKL's batch-1 sgemv runs on one core, in its generic code path on AMD) and
//! a prompt's is a `bmm` ([`TchWeight`]); and decode attention is a grouped
//! matmul-softmax-matmul, which beats CPU SDPA at these sizes.

use burn::tensor::{Int, Tensor};
use burn_tch::{LibTorchDevice, TchTensor};
use llama_core::dequant::DequantError;
use llama_core::kernels::{
    Capabilities, Kernels, Normed, Position, Product, Projections, QkvIntoCache, RawWeight, StepPosition, TokenIds,
    composed,
};
use llama_core::kv_cache::CachedKv;
use llama_core::rope::RopeTables;

use crate::ops::{Tch, full_width_rows, grouped_attention, in_place, raw, rms_norm, split_rotated, wrap};
use crate::weight::TchWeight;

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

    fn capabilities(&self, device: &LibTorchDevice) -> Capabilities {
        Capabilities {
            name: "libtorch ops (embedding_bag row sums for one token, thread-split bmm for prompts, rms_norm, sdpa)",
            // On CUDA; on a CPU `argmax` plus a one-element readback measured slower per token
            // than reading the logits (docs/pytorch.md).
            greedy_on_device: off_cpu(device),
            // Nowhere: burn-tch reads a tensor back synchronously, so the next step could only be
            // queued after the id had arrived, which is what the unpipelined loop does.
            pipelines_greedy: false,
            // On CUDA, as the PyTorch anchor's eager loop and gpt-fast decode: `--half` and
            // `--half --compile` then run the same kernels, and the graph is their only
            // difference. With shapes that follow the cache, SDPA got no mask and libtorch picked
            // another attention kernel than the static step's masked one, and the two runs'
            // greedy ids parted (docs/benchmarks/2026-11-27-gpu-h200.md). On a CPU the dynamic
            // step stays: its attention reads only the filled rows, not the whole context.
            static_decode: off_cpu(device),
            // One product per layer fewer: on a CPU each `embedding_bag` call has a fixed cost
            // (and a thread fork) that a bigger table amortises; with two slices the gate is one
            // bag, the up the other.
            stacks_gate_up: true,
        }
    }

    fn load_weight(&self, raw: RawWeight<'_>, device: &LibTorchDevice) -> Result<TchWeight, DequantError> {
        TchWeight::load(raw, device)
    }

    fn random_weight(&self, rows: usize, cols: usize, std: f64, device: &LibTorchDevice) -> TchWeight {
        TchWeight::random(rows, cols, std, device)
    }

    fn weight_bytes(&self, weight: &TchWeight) -> usize {
        weight.bytes()
    }

    fn embed(&self, table: &TchWeight, ids: TokenIds<'_, Tch>) -> Tensor<Tch, 2> {
        match ids {
            TokenIds::Host(ids, _) => table.rows(ids),
            TokenIds::Device(ids) => table.rows_at(ids),
        }
    }

    fn linear(&self, x: Tensor<Tch, 2>, weight: &TchWeight) -> Tensor<Tch, 2> {
        weight.linear(x)
    }

    fn attention(&self, q: Tensor<Tch, 3>, kv: CachedKv<Tch>, at: &Position<Tch>) -> Tensor<Tch, 2> {
        match at {
            Position::Host(_) => attention(q, kv),
            Position::Device(step) => attention_at(q, kv, step),
        }
    }

    /// libtorch's norm, product and out-of-place `+` (the residual add as the step did it before
    /// it moved here from the norms: the same ops, so the same results on the CUDA runs recorded
    /// in docs/benchmarks).
    fn product(&self, p: Product<'_, Tch, TchWeight>) -> Tensor<Tch, 2> {
        let x = match p.norm {
            Some(norm) => wrap(rms_norm(raw(p.x), raw(norm.weight.clone()), norm.eps)),
            None => p.x,
        };
        let y = p.weight.linear(x);
        match p.residual {
            Some(residual) => wrap(raw(residual) + raw(y)),
            None => y,
        }
    }

    fn qkv_into_cache(&self, args: QkvIntoCache<'_, Tch, TchWeight>) -> (Tensor<Tch, 3>, CachedKv<Tch>) {
        let pass = args.pass;
        let qkv = composed::project(self, args.input, args.weight);
        let tokens = qkv.dims()[0];
        let (cache_keys, cache_values) = args.cache;
        match &pass.at {
            Position::Host(start) => {
                let (cos, sin) = full_width_rows(pass.rope, *start, tokens);
                let (queries, keys, values) = split_rotated(qkv, pass.heads, pass.kv_heads, &cos, &sin);
                let write = |new: tch::Tensor| {
                    move |cache: &mut tch::Tensor| {
                        cache.narrow(1, *start as i64, tokens as i64).copy_(&new.transpose(0, 1))
                    }
                };
                let (keys, values) = (in_place(cache_keys, write(keys)), in_place(cache_values, write(values)));
                (wrap(queries), CachedKv { keys, values, len: start + tokens })
            }
            Position::Device(step) => {
                let position = step.position.clone().into_primitive().tensor;
                let (cos, sin) = (raw(step.cos.clone()), raw(step.sin.clone()));
                let (queries, keys, values) = split_rotated(qkv, pass.heads, pass.kv_heads, &cos, &sin);
                let write = |new: tch::Tensor| {
                    let position = position.shallow_clone();
                    move |cache: &mut tch::Tensor| {
                        let _ = cache.index_copy_(1, &position, &new.transpose(0, 1));
                    }
                };
                let (keys, values) = (in_place(cache_keys, write(keys)), in_place(cache_values, write(values)));
                (wrap(queries), CachedKv::whole(keys, values))
            }
        }
    }

    /// The default with `narrow` (one call per half) in place of Burn's `slice` (a shape read and
    /// a slice per dimension).
    fn swiglu_product(&self, input: Normed<'_, Tch>, gate_up: &Projections<TchWeight>) -> Tensor<Tch, 2> {
        let Projections::Stacked(gate_up) = gate_up else {
            return composed::swiglu_product(self, input, gate_up);
        };
        let both = raw(self.product(Product::normed(input, gate_up)));
        let ffn = both.size()[1] / 2;
        wrap(both.narrow(1, 0, ffn).silu() * both.narrow(1, ffn, ffn))
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

    #[cfg(feature = "cuda-graph")]
    fn run_static_step(
        &self,
        x: Tensor<Tch, 2>,
        position: usize,
        id: u64,
        step: &mut llama_core::kernels::StaticStep<Tch>,
    ) -> Tensor<Tch, 2> {
        if matches!(x.device(), LibTorchDevice::Cuda(_)) {
            return self.graph.run(x, position, id, step);
        }
        llama_core::kernels::run_step_eagerly(x, position, step)
    }
}

/// Causal attention over the cache's first `kv.len` rows: grouped on a CPU for one query, else
/// SDPA.
fn attention(q: Tensor<Tch, 3>, kv: CachedKv<Tch>) -> Tensor<Tch, 2> {
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

/// One query at the static step's device position over the whole cache, masked.
fn attention_at(q: Tensor<Tch, 3>, kv: CachedKv<Tch>, step: &StepPosition<Tch>) -> Tensor<Tch, 2> {
    let [_, heads, head_dim] = q.dims();
    let (q, k, v) = (raw(q), raw(kv.keys), raw(kv.values));
    let visible = step.visible.clone().into_primitive().tensor;
    if k.device() == tch::Device::Cpu {
        return wrap(grouped_attention(&q, &k, &v, Some(&visible)));
    }
    let q = q.transpose(0, 1); // [heads, 1, head_dim]
    let out = tch::Tensor::scaled_dot_product_attention(&q, &k, &v, Some(visible.unsqueeze(0)), 0.0, false, None, true);
    wrap(out.reshape([1, (heads * head_dim) as i64]))
}
