//! RMSNorm in one kernel, where it is not fused into the product after it (`matvec.rs` does that
//! for one token against the dense and 32-weight block formats; prompts and the K-quants come
//! here first).
//!
//! Composed, a norm is five element-wise and reduce operations (square, mean, add eps, rsqrt,
//! scale) that burn's fuser splits around the reduction; here one workgroup owns a row, sums
//! squares in f32 in registers and shared memory, and writes the normed row: read once, written once.

use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::stream::{CubeT, count_launch};

/// Threads per row.
const THREADS: u32 = 64;

#[cube(launch_unchecked)]
fn rms_norm_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    out: &mut Tensor<F>,
    eps: f32,
    #[define(F)] _dtype: StorageType,
) {
    let cols = x.shape(1);
    let base = CUBE_POS_X as usize * cols;
    let lane = UNIT_POS_X as usize;
    let mut squares = f32::new(0.0);
    let mut c = lane;
    while c < cols {
        // The square in f32: in f16 a residual value above 256 would overflow.
        let v = f32::cast_from(x[base + c]);
        squares += v * v;
        c += comptime!(THREADS as usize);
    }
    let mut partial = SharedMemory::<f32>::new(comptime!(THREADS as usize));
    partial[lane] = squares;
    sync_cube();
    #[unroll]
    for step in 1..7u32 {
        let stride = comptime!((THREADS >> step) as usize);
        if lane < stride {
            partial[lane] += partial[lane + stride];
        }
        sync_cube();
    }
    let inv_rms = f32::new(1.0) / f32::sqrt(partial[0] / f32::cast_from(cols as u32) + eps);
    let mut c = lane;
    while c < cols {
        out[base + c] = F::cast_from(f32::cast_from(x[base + c]) * inv_rms) * weight[c];
        c += comptime!(THREADS as usize);
    }
}

/// `rms_norm(x) · weight` for `x` `[rows, cols]` contiguous.
pub fn rms_norm(x: CubeT, weight: CubeT, eps: f32) -> CubeT {
    let shape = x.meta.shape().clone();
    let rows = shape[0];
    let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), shape, x.dtype);
    let client = x.client.clone();
    let dtype = x.dtype;
    count_launch();
    // SAFETY: one workgroup per row, and columns stop at the row width (the weight's length).
    unsafe {
        rms_norm_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
            &client,
            CubeCount::Static(rows as u32, 1, 1),
            CubeDim::new_1d(THREADS),
            x.into_tensor_arg(),
            weight.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            eps,
            dtype.into(),
        )
    };
    out
}
