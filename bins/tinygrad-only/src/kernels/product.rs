//! Which kernel takes a product: the one place that routes between them, so that no kernel
//! module launches another's kernels.
//!
//! - one token against a dense or 32-weight block weight: `matvec.rs`, which may fuse the norm
//!   before it, the residual after it, or RoPE and the cache write;
//! - [`prefill::MIN_TOKENS`] tokens and more: `prefill.rs` (dequantize, then Burn's matmul);
//! - everything else (short prompts, one token against a K-quant): `linear.rs`.

use super::layout::Layout;
use super::matvec::{self, Fused};
use super::stream::CubeT;
use super::weights::DeviceWeight;
use super::{linear, norm, prefill};

/// Whether `tokens` against `weight` (and `up`) go to `matvec.rs`, whose products can fuse the
/// norm before them and the ending after them.
pub fn fuses(tokens: usize, weight: &DeviceWeight, up: Option<&DeviceWeight>) -> bool {
    tokens == 1 && matvec::handles(weight) && up.is_none_or(matvec::handles)
}

/// Whether `tokens` rows against `weight` (and `up`) run as one matvec per row rather than
/// through `linear.rs`: on a CPU Vulkan driver, for fewer rows than `prefill.rs` takes (a
/// server's batched decode step, a short prompt). lavapipe runs `linear.rs`'s token tiles 10 to
/// 20 times slower than a matvec per token (docs/benchmarks/2026-12-05-serve.md), so a few rows
/// go faster one at a time, each through the fused matvec.
pub fn row_by_row(tokens: usize, weight: &DeviceWeight, up: Option<&DeviceWeight>, layout: Layout) -> bool {
    layout.is_cpu() && (2..prefill::MIN_TOKENS).contains(&tokens) && fuses(1, weight, up)
}

/// Whether the one-token Q/K/V product against `qkv` can also rotate its rows and write them
/// into the cache, for heads `head_dim` wide.
pub fn fuses_rope(tokens: usize, qkv: &DeviceWeight, head_dim: usize, layout: Layout) -> bool {
    fuses(tokens, qkv, None) && matvec::folds_rope(qkv, head_dim, layout)
}

/// `x · Wᵀ` for `x` `[tokens, cols]` contiguous; with `up`, `silu(x · Wᵀ) · (x · Upᵀ)`.
pub fn linear(x: CubeT, weight: &DeviceWeight, up: Option<&DeviceWeight>, layout: Layout) -> CubeT {
    let tokens = x.meta.shape()[0];
    if fuses(tokens, weight, up) {
        return matvec::matvec(x, weight, up, Fused::default(), layout);
    }
    if tokens >= prefill::MIN_TOKENS && weight.cols.is_multiple_of(32) {
        return prefill::linear(x, weight, up);
    }
    linear::linear(x, weight, up, layout)
}

/// [`matvec::matvec`] for one token `x` `[1, cols]` contiguous against a weight
/// [`matvec::handles`], with what `fused` names; where the product would not stage the norm
/// ([`matvec::stages_norm`]), the norm runs as a launch of its own first.
pub fn matvec(x: CubeT, weight: &DeviceWeight, up: Option<&DeviceWeight>, fused: Fused, layout: Layout) -> CubeT {
    match fused.norm {
        Some((norm, eps)) if !matvec::stages_norm(&x, weight, layout) => {
            let x = norm::rms_norm(x, norm, eps);
            matvec::matvec(x, weight, up, Fused { norm: None, ..fused }, layout)
        }
        _ => matvec::matvec(x, weight, up, fused, layout),
    }
}
