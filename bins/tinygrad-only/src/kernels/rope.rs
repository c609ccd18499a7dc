//! Rotary embedding in one kernel that reads the position tables in place.
//!
//! Composed, RoPE slices the table rows for the positions, splits `x` in halves, does four
//! multiplies and two adds and concatenates: several kernels and a copy. Here each thread
//! rotates one `(x[i], x[i + d/2])` pair, reading `cos`/`sin` straight from the whole tables at
//! row `start + token`, so no table slice is ever made.

use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::fused::CubeT;

#[cube(launch)]
fn rope_kernel<F: Float>(
    x: &Tensor<F>,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    out: &mut Tensor<F>,
    start: u32,
    #[define(F)] _dtype: StorageType,
) {
    // One workgroup per (token, head); x is [tokens, heads, head_dim] contiguous.
    let heads = x.shape(1);
    let head_dim = x.shape(2);
    let half = head_dim / 2;
    let token = CUBE_POS_X as usize / heads;
    let base = CUBE_POS_X as usize * head_dim;
    let table_row = (start as usize + token) * half;
    let mut i = UNIT_POS_X as usize;
    while i < half {
        let c = cos[table_row + i];
        let s = sin[table_row + i];
        let a = x[base + i];
        let b = x[base + i + half];
        out[base + i] = a * c - b * s;
        out[base + i + half] = b * c + a * s;
        i += CUBE_DIM_X as usize;
    }
}

/// `x` `[tokens, heads, head_dim]` contiguous, rotated for positions `start ..`; `cos`/`sin` are
/// the whole `[positions, head_dim / 2]` tables, contiguous.
pub fn rope(x: CubeT, cos: CubeT, sin: CubeT, start: usize) -> CubeT {
    let shape = x.meta.shape().clone();
    let (tokens, heads, head_dim) = (shape[0], shape[1], shape[2]);
    let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([tokens, heads, head_dim]), x.dtype);
    let client = x.client.clone();
    let dtype = x.dtype;
    rope_kernel::launch::<burn_wgpu::WgpuRuntime>(
        &client,
        CubeCount::Static((tokens * heads) as u32, 1, 1),
        CubeDim::new_1d((head_dim as u32 / 2).clamp(1, 64)),
        x.into_tensor_arg(),
        cos.into_tensor_arg(),
        sin.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        start as u32,
        dtype.into(),
    );
    out
}
