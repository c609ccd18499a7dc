//! RMSNorm in one kernel, optionally with the residual add before it fused in.
//!
//! Composed, a norm is five element-wise and reduce operations (square, mean, add eps, rsqrt,
//! scale) that burn's fuser splits around the reduction; here one workgroup owns a row, adds the
//! residual, sums squares in f32 in registers and shared memory, and writes both the new residual
//! stream and its normed copy: the row is read once and written twice.

use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::fused::{CubeT, count_launch};

/// Threads per row.
const THREADS: u32 = 64;

#[cube(launch_unchecked)]
fn rms_norm_kernel<F: Float>(
    x: &Tensor<F>,
    delta: &Tensor<F>,
    weight: &Tensor<F>,
    sum_out: &mut Tensor<F>,
    out: &mut Tensor<F>,
    eps: f32,
    #[comptime] add: bool,
    #[define(F)] _dtype: StorageType,
) {
    let cols = x.shape(1);
    let base = CUBE_POS_X as usize * cols;
    let lane = UNIT_POS_X as usize;
    let mut squares = f32::new(0.0);
    let mut c = lane;
    while c < cols {
        let mut v = x[base + c];
        if comptime!(add) {
            v += delta[base + c];
            sum_out[base + c] = v;
        }
        // The square in f32: in f16 a residual value above 256 would overflow.
        let v = f32::cast_from(v);
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
        let mut v = x[base + c];
        if comptime!(add) {
            v += delta[base + c];
        }
        out[base + c] = F::cast_from(f32::cast_from(v) * inv_rms) * weight[c];
        c += comptime!(THREADS as usize);
    }
}

/// `(x + delta, rms_norm(x + delta) · weight)` when `delta` is given, else `(_, rms_norm(x) · weight)`;
/// `x` and `delta` are `[rows, cols]` contiguous.
pub fn rms_norm(x: CubeT, delta: Option<CubeT>, weight: CubeT, eps: f32) -> (Option<CubeT>, CubeT) {
    let shape = x.meta.shape().clone();
    let rows = shape[0];
    let empty = |shape: Shape| empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), shape, x.dtype);
    let out = empty(shape.clone());
    let add = delta.is_some();
    // Unused when not adding: one-element stand-ins (every binding must exist).
    let (delta, sum) = match delta {
        Some(d) => (d, empty(shape)),
        None => (empty(Shape::new([1])), empty(Shape::new([1]))),
    };
    let client = x.client.clone();
    let dtype = x.dtype;
    count_launch();
    // SAFETY: one workgroup per row, columns stop at the row width, and the one-element stand-ins are
    // touched only when adding (comptime).
    unsafe {
        rms_norm_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
            &client,
            CubeCount::Static(rows as u32, 1, 1),
            CubeDim::new_1d(THREADS),
            x.into_tensor_arg(),
            delta.into_tensor_arg(),
            weight.into_tensor_arg(),
            sum.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            eps,
            add,
            dtype.into(),
        )
    };
    (add.then_some(sum), out)
}
