//! libtorch's own operations behind llama-core's fast-path trait, as a PyTorch user's eager
//! Llama calls them (`rms_norm`, `scaled_dot_product_attention`, `silu`, one product per
//! projection): each one ATen op where llama-core's `Composed` builds it from several small Burn
//! ops.
//!
//! Two choices are the CPU's, each measured (docs/pytorch.md): weights are stored as one slice of
//! their outputs per thread; one token's product is an `embedding_bag` row sum over that layout
//! (one bag per thread; MKL's batch-1 sgemv runs on one core, in its generic code path on AMD) and
//! a prompt's is a `bmm` ([`TchWeight`]); and decode attention is a grouped
//! matmul-softmax-matmul, which beats CPU SDPA at these sizes (`attention.rs`).

use burn::tensor::{Bool, Tensor};
use burn_tch::{LibTorchDevice, TchTensor};
use llama_core::dequant::DequantError;
use llama_core::kernels::{
    Capabilities, Kernels, Normed, Placement, Product, Projections, QkvIntoCache, RawWeight, Rows, TokenIds, composed,
};
use llama_core::kv_cache::CachedKv;

use crate::ops::{Tch, in_place, raw, rms_norm, split_rotated, wrap};
use crate::weight::TchWeight;

/// The fused-op provider (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct TchKernels;

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

    fn attention(&self, q: Tensor<Tch, 3>, kv: CachedKv<Tch>, rows: &Rows<Tch>) -> Tensor<Tch, 2> {
        crate::attention::attention(q, kv, rows)
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

    /// The projection, one rotation for every row's queries and keys, and the cache writes: for
    /// one sequence into its rows of its slot, for the static step at its device position, and
    /// for several sequences in one indexed write per tensor.
    fn qkv_into_cache(&self, args: QkvIntoCache<'_, Tch, TchWeight>) -> (Tensor<Tch, 3>, CachedKv<Tch>) {
        let rows = args.rows;
        let qkv = composed::project(self, args.input, args.weight);
        let (cos, sin) = (raw(rows.cos.clone()), raw(rows.sin.clone()));
        let (queries, keys, values) = split_rotated(qkv, rows.heads, rows.kv_heads, &cos, &sin);
        let kv_heads = rows.kv_heads as i64;
        let write = |new: tch::Tensor| {
            move |cache: &mut tch::Tensor| match (rows.spans.as_slice(), &rows.visible) {
                ([span], None) => {
                    let own = cache.narrow(0, span.slot as i64 * kv_heads, kv_heads);
                    own.narrow(1, span.start as i64, span.rows as i64).copy_(&new.transpose(0, 1));
                }
                ([span], Some(_)) => {
                    let position = rows.positions.clone().into_primitive().tensor;
                    let mut own = cache.narrow(0, span.slot as i64 * kv_heads, kv_heads);
                    let _ = own.index_copy_(1, &position, &new.transpose(0, 1));
                }
                _ => {
                    let [slots, positions] = [&rows.slots, &rows.positions].map(|t| t.clone().into_primitive().tensor);
                    let [capacity, head_dim] = [cache.size()[1], cache.size()[2]];
                    let mut by_slot = cache.view([-1, kv_heads, capacity, head_dim]);
                    let _ = by_slot.index_put_(&[Some(slots), None, Some(positions)], &new, false);
                }
            }
        };
        let (keys, values) = (in_place(args.cache.keys, write(keys)), in_place(args.cache.values, write(values)));
        (wrap(queries), CachedKv { keys, values })
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

    /// The full-width table rows `split_rotated` reads, and for the static step the visible
    /// positions as SDPA's boolean mask (true = may attend): index_select, arange and compare once
    /// per step, not per layer.
    fn rows(&self, placement: Placement<'_, Tch>) -> Rows<Tch> {
        let positions = placement.positions.clone().into_primitive().tensor;
        let (cos, sin) = placement.rope.full_width();
        let visible = placement.static_capacity.map(|capacity| {
            let all = tch::Tensor::arange(capacity as i64, (tch::Kind::Int64, positions.device()));
            Tensor::<Tch, 2, Bool>::from_primitive(TchTensor::new(all.unsqueeze(0).le_tensor(&positions.unsqueeze(1))))
        });
        Rows {
            cos: wrap(raw(cos.clone()).index_select(0, &positions)),
            sin: wrap(raw(sin.clone()).index_select(0, &positions)),
            spans: placement.spans,
            positions: placement.positions,
            slots: placement.slots,
            heads: placement.heads,
            kv_heads: placement.kv_heads,
            visible,
        }
    }
}
