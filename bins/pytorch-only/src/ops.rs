//! The libtorch calls pytorch-only's provider is made of, on the `tch::Tensor` inside burn-tch's
//! primitive, with no copy in or out.

use burn::tensor::{Tensor, TensorPrimitive};
use burn_tch::{LibTorch, TchTensor};

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

/// `x / sqrt(mean(x²) + eps) * weight` over the last dimension of `x` `[rows, dim]`.
pub fn rms_norm(x: tch::Tensor, weight: tch::Tensor, eps: f64) -> tch::Tensor {
    let size = x.size();
    let (rows, dim) = (size[0], size[1]);
    if rows == 1 && x.kind() == tch::Kind::Float && x.device() == tch::Device::Cpu {
        return rms_norm_row(&x, dim, &weight, eps);
    }
    // ATen's rms_norm takes the mean of squares in f32 for f16/bf16 inputs (as Composed does).
    x.rms_norm([dim], Some(weight), eps)
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
pub fn grouped_attention(
    q: &tch::Tensor,
    k: &tch::Tensor,
    v: &tch::Tensor,
    visible: Option<&tch::Tensor>,
) -> tch::Tensor {
    let (heads, head_dim) = (q.size()[1], q.size()[2]);
    let kv_heads = k.size()[0];
    let q = q.reshape([kv_heads, heads / kv_heads, head_dim]);
    // `baddbmm` rather than `matmul` and a product: one call where `matmul` adds its own
    // reshapes around the same `bmm` and the scale is a second op
    // (docs/benchmarks/2026-11-27-cpu-decode-time-split.md). At beta 0 its input is ignored, NaN
    // included (documented), but must broadcast to the scores' shape: a view of `q` does.
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
pub fn split_rotated(
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

/// Half-split rotary embedding of `x` `[tokens, heads, head_dim]` with full-width `cos`, `sin`
/// `[tokens, head_dim]` (`RopeTables::full_width`): `x·cos + (x₂, x₁)·sin`, where `roll` by half
/// a head swaps the halves. Three ATen calls where the half-by-half form takes seven.
pub fn rotate(x: &tch::Tensor, cos: &tch::Tensor, sin: &tch::Tensor) -> tch::Tensor {
    let half = x.size()[2] / 2;
    (x * cos.unsqueeze(1)).addcmul(&x.roll([half], [2]), &sin.unsqueeze(1))
}

/// Runs `write` on the cache's libtorch tensor, in place when Burn holds no other reference to
/// it (else on a copy, as Burn's own in-place rule does).
pub fn in_place(cache: Tensor<Tch, 3>, write: impl FnOnce(&mut tch::Tensor)) -> Tensor<Tch, 3> {
    let cache = unwrap(cache);
    let mut cache = if cache.can_mut() { cache } else { TchTensor::new(cache.tensor.copy()) };
    write(&mut cache.tensor);
    Tensor::from_primitive(TensorPrimitive::Float(cache))
}
