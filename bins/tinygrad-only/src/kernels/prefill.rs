//! Prefill against packed weights: dequantize one chunk into a scratch buffer, then Burn's own
//! tuned matrix multiplication.
//!
//! With many tokens a product is compute-bound, and burn-cubecl's autotuned tiled matmul beats
//! our row-per-workgroup kernel there (docs/kernels.md has both figures). So from [`MIN_TOKENS`] tokens
//! on, each weight chunk is expanded, transposed to `[cols, rows]`, into a scratch tensor in the
//! activations' dtype, multiplied, and dropped: the packed weight stays the only copy in memory
//! between calls, as llama.cpp's GPU backends do for batched products. A dense chunk in the
//! activations' dtype needs no expanding: the matmul reads it through a transposed view. Decode
//! never takes this path.

use burn::tensor::{Shape, ops::FloatTensorOps};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::layout::MAX_ROWS;
use super::stream::{Cube, CubeT, count_launch};
use super::weights::{BlockFormat, Chunk, DeviceWeight, Packed, Packing, load_block, tensor_arg};

/// Tokens from which a product takes this path: more than `matvec.rs` takes.
pub const MIN_TOKENS: usize = MAX_ROWS + 1;

/// `out[c, r] = W[r, c]` for one chunk, dequantized (`format`) or dense. One thread per block of
/// 32 weights of a row.
#[cube(launch_unchecked)]
fn dequantize_transposed_kernel<S: Float, W: Float, O: Float>(
    weights: &Packed<S, W>,
    out: &mut Tensor<O>,
    #[comptime] format: BlockFormat,
    #[define(S, W, O)] _dtypes: [StorageType; 3],
) {
    let cols = out.shape(0);
    let rows = out.shape(1);
    let blocks_per_row = cols / 32;
    let block = ABSOLUTE_POS;
    if block >= rows * blocks_per_row {
        terminate!();
    }
    let row = block / blocks_per_row;
    let b = block % blocks_per_row;
    let mut w = Array::<f32>::new(32usize);
    load_block::<S, W>(weights, row, b, cols, &mut w, format);
    #[unroll]
    for j in 0..32usize {
        out[(b * 32 + j) * rows + row] = O::cast_from(w[j]);
    }
}

/// `silu(gate) · up`, element-wise, into `gate`'s buffer.
#[cube(launch_unchecked)]
fn swiglu_in_place_kernel<F: Float>(gate: &mut Tensor<F>, up: &Tensor<F>, #[define(F)] _dtype: StorageType) {
    let i = ABSOLUTE_POS;
    if i < gate.len() {
        let g = f32::cast_from(gate[i]);
        gate[i] = F::cast_from(g / (f32::new(1.0) + f32::exp(-g)) * f32::cast_from(up[i]));
    }
}

/// Chunk `chunk` of `weight`, dequantized and transposed to `[cols, rows]` in `like`'s dtype.
fn expand(chunk: &Chunk, weight: &DeviceWeight, like: &CubeT) -> CubeT {
    let shape = Shape::new([weight.cols, chunk.rows]);
    let out = empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, like.dtype);
    let blocks = chunk.rows * weight.cols / 32;
    let format = weight.packing.block_format().unwrap_or(BlockFormat::DENSE);
    let [scales_dtype, dense_dtype] = chunk.dtypes(like);
    count_launch();
    // SAFETY: threads past the chunk's blocks return first; a block is 32 weights of one row (this path
    // takes only rows of whole blocks).
    unsafe {
        dequantize_transposed_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
            &like.client,
            CubeCount::Static(blocks.div_ceil(64) as u32, 1, 1),
            CubeDim::new_1d(64),
            chunk.packed_arg(),
            tensor_arg(&out),
            format,
            [scales_dtype, dense_dtype, like.dtype.into()],
        )
    };
    out
}

/// Chunk `chunk` of `weight` as `[cols, rows]` for the matmul: a dense chunk in `like`'s dtype
/// is a transposed view of itself (no copy; Burn's matmul reads either layout), any other is
/// expanded ([`expand`]).
fn transposed(chunk: &Chunk, weight: &DeviceWeight, like: &CubeT) -> CubeT {
    if !matches!(weight.packing, Packing::Dense) || chunk.data.dtype != like.dtype {
        return expand(chunk, weight, like);
    }
    let rows_first = Cube::float_reshape(chunk.data.clone(), Shape::new([chunk.rows, weight.cols]));
    Cube::float_swap_dims(rows_first, 0, 1)
}

/// `x · Wᵀ` for `x` `[tokens, cols]` contiguous, through Burn's matmul, a chunk at a time.
fn product(x: &CubeT, weight: &DeviceWeight) -> CubeT {
    let parts: Vec<CubeT> =
        weight.chunks.iter().map(|chunk| Cube::float_matmul(x.clone(), transposed(chunk, weight, x))).collect();
    match <[CubeT; 1]>::try_from(parts) {
        Ok([single]) => single,
        Err(parts) => Cube::float_cat(parts, 1),
    }
}

/// `x · Wᵀ`, or with `up`, `silu(x · Wᵀ) · (x · Upᵀ)`.
pub fn linear(x: CubeT, weight: &DeviceWeight, up: Option<&DeviceWeight>) -> CubeT {
    let out = product(&x, weight);
    let Some(up) = up else { return out };
    let up = product(&x, up);
    let dtype = out.dtype;
    let elements = out.meta.shape().num_elements();
    count_launch();
    // SAFETY: elements past `gate`'s length return, and `up` has its shape.
    unsafe {
        swiglu_in_place_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
            &out.client.clone(),
            CubeCount::Static(elements.div_ceil(256) as u32, 1, 1),
            CubeDim::new_1d(256),
            tensor_arg(&out),
            tensor_arg(&up),
            dtype.into(),
        )
    };
    out
}
