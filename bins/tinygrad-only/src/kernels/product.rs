//! Which kernel takes a product: the one place that routes between them, so that no kernel
//! module launches another's kernels.
//!
//! - one row against a dense or 32-weight block weight: `matvec.rs`, which may fuse the norm
//!   before it, the residual after it, or RoPE and the cache write;
//! - 2 to [`MAX_ROWS`] rows against such a weight (a server's step of several sequences, a short
//!   prompt): `matvec.rs` too, each weight row read once for every row (the norm a launch of its
//!   own, the residual fused);
//! - [`prefill::MIN_TOKENS`] rows and more, whole blocks of 32 wide: `prefill.rs` (dequantize,
//!   then Burn's matmul);
//! - everything else (the K-quants): `linear.rs`.

use super::layout::{Layout, MAX_ROWS};
use super::matvec::{self, Fused};
use super::stream::CubeT;
use super::weights::DeviceWeight;
use super::{linear, norm, prefill};

/// Whether `rows` against `weight` (and `up`) go to `matvec.rs` in one launch per chunk.
pub fn in_matvec(rows: usize, weight: &DeviceWeight, up: Option<&DeviceWeight>) -> bool {
    (1..=MAX_ROWS).contains(&rows) && matvec::handles(weight) && up.is_none_or(matvec::handles)
}

/// Whether `rows` against `weight` (and `up`) go to `matvec.rs` with the norm before them and the
/// ending after them fused: one row.
pub fn fuses(rows: usize, weight: &DeviceWeight, up: Option<&DeviceWeight>) -> bool {
    rows == 1 && in_matvec(rows, weight, up)
}

/// Whether the one-row Q/K/V product against `qkv` can also rotate its rows and write them into
/// the cache, for heads `head_dim` wide.
pub fn fuses_rope(rows: usize, qkv: &DeviceWeight, head_dim: usize, layout: Layout) -> bool {
    fuses(rows, qkv, None) && matvec::folds_rope(qkv, head_dim, layout)
}

/// `x · Wᵀ` for `x` `[rows, cols]` contiguous; with `up`, `silu(x · Wᵀ) · (x · Upᵀ)`.
pub fn linear(x: CubeT, weight: &DeviceWeight, up: Option<&DeviceWeight>, layout: Layout) -> CubeT {
    let rows = x.meta.shape()[0];
    if in_matvec(rows, weight, up) {
        return matvec::matvec(x, weight, up, Fused::default(), layout);
    }
    if rows >= prefill::MIN_TOKENS && weight.cols.is_multiple_of(32) {
        return prefill::linear(x, weight, up);
    }
    linear::linear(x, weight, up, layout)
}

/// [`matvec::matvec`] for `x` `[rows, cols]` contiguous against a weight [`matvec::handles`], with
/// what `fused` names; where the product would not stage the norm ([`matvec::stages_norm`], and
/// always for several rows), the norm runs as a launch of its own first.
pub fn matvec(x: CubeT, weight: &DeviceWeight, up: Option<&DeviceWeight>, fused: Fused, layout: Layout) -> CubeT {
    let rows = x.meta.shape()[0];
    match fused.norm {
        Some((norm, eps)) if rows > 1 || !matvec::stages_norm(&x, weight, layout) => {
            let x = norm::rms_norm(x, norm, eps);
            matvec::matvec(x, weight, up, Fused { norm: None, ..fused }, layout)
        }
        _ => matvec::matvec(x, weight, up, fused, layout),
    }
}
