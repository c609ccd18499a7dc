//! Products against weights of any packing (the K-quants included), dequantized in registers,
//! for short prompts and what `matvec.rs` does not take, and the fused gate/up SwiGLU.
//!
//! One workgroup owns `rows` weight rows; the `lanes` threads of a row each take every
//! `lanes`-th block of 32 weights, dequantize it into 32 registers once and multiply it into the
//! running sums of up to [`MAX_TILE`] tokens, so a short prefill reads each weight once per tile
//! of tokens, not once per token (`product.rs` sends longer prompts to `prefill.rs`). A
//! shared-memory tree then adds the lanes' sums (`layout.rs`). `Layout::for_device` picks `lanes`:
//! 32 on a GPU (a warp per row, neighbouring threads read neighbouring blocks), 8 on a CPU Vulkan
//! driver (lavapipe's SIMD width), the faster there (docs/kernels.md).

use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_wgpu::WgpuRuntime;
use cubecl::prelude::*;

use super::layout::{ChunkSpan, ChunkSpanLaunch, Layout, MAX_TILE, local_row, reduce_and_store, row_to_read};
use super::stream::{CubeT, count_launch};
use super::weights::{BlockFormat, DeviceWeight, Packed, load_block, tensor_arg};

/// `Σ w·x` of a block of 32 weights already dequantized into the registers `w`, against
/// `x[x_at .. x_at + 32]`.
#[cube]
fn dequantized_block_dot<F: Float>(x: &Tensor<F>, x_at: usize, w: &Array<f32>) -> f32 {
    let mut sum = f32::new(0.0);
    #[unroll]
    for j in 0..32usize {
        sum += w[j] * f32::cast_from(x[x_at + j]);
    }
    sum
}

/// `out = x · Wᵀ` (or, with `up`, `silu(x · Wᵀ) · (x · Upᵀ)`) for one chunk of rows and one
/// tile of `tile` tokens, the weights block-quantized (`format`) or dense (f32 or f16,
/// `[rows, cols]`).
#[cube(launch_unchecked)]
fn linear_kernel<F: Float, S: Float, W: Float>(
    x: &Tensor<F>,
    weights: &Packed<S, W>,
    up: &ComptimeOption<Packed<S, W>>,
    out: &mut Tensor<F>,
    span: &ChunkSpan,
    #[comptime] format: BlockFormat,
    #[comptime] tile: u32,
    #[comptime] layout: Layout,
    #[define(F, S, W)] _dtypes: [StorageType; 3],
) {
    let gated = comptime!(up.is_some());
    let tokens = x.shape(0);
    let k = x.shape(1);
    let row_read = row_to_read(local_row(layout), span);
    let first_token = (CUBE_POS_Y * tile) as usize;
    let blocks = k / 32;
    let mut acc = Array::<f32>::new(comptime!(tile as usize));
    let mut acc_up = Array::<f32>::new(comptime!(tile as usize));
    #[unroll]
    for t in 0..tile {
        acc[t as usize] = f32::new(0.0);
        acc_up[t as usize] = f32::new(0.0);
    }
    // Each block is dequantized into registers once and used for every token of the tile.
    let mut w = Array::<f32>::new(32usize);
    let mut w_up = Array::<f32>::new(32usize);
    let mut b = UNIT_POS_X as usize;
    while b < blocks {
        load_block::<S, W>(weights, row_read, b, k, &mut w, format);
        #[comptime]
        if let ComptimeOption::Some(up) = up {
            load_block::<S, W>(up, row_read, b, k, &mut w_up, format);
        }
        #[unroll]
        for t in 0..tile {
            let x_at = min(first_token + t as usize, tokens - 1) * k + b * 32;
            acc[t as usize] += dequantized_block_dot::<F>(x, x_at, &w);
            if comptime!(gated) {
                acc_up[t as usize] += dequantized_block_dot::<F>(x, x_at, &w_up);
            }
        }
        b += comptime!(layout.lanes as usize);
    }
    #[comptime]
    if let ComptimeOption::Some(dense) = &weights.dense {
        // Inputs past the last whole block of 32 (dense weights may have any width).
        let mut c = blocks * 32 + UNIT_POS_X as usize;
        while c < k {
            #[unroll]
            for t in 0..tile {
                let x_c = f32::cast_from(x[min(first_token + t as usize, tokens - 1) * k + c]);
                acc[t as usize] += f32::cast_from(dense[row_read * k + c]) * x_c;
                #[comptime]
                if let ComptimeOption::Some(up) = up {
                    #[comptime]
                    if let ComptimeOption::Some(up_dense) = &up.dense {
                        acc_up[t as usize] += f32::cast_from(up_dense[row_read * k + c]) * x_c;
                    }
                }
            }
            c += comptime!(layout.lanes as usize);
        }
    }
    reduce_and_store::<F>(&acc, &acc_up, out, span, first_token, gated, tile, layout);
}

/// `x · Wᵀ` for `x` `[tokens, cols]` contiguous; with `up`, `silu(x · Wᵀ) · (x · Upᵀ)`. One
/// launch per chunk of rows.
pub fn linear(x: CubeT, weight: &DeviceWeight, up: Option<&DeviceWeight>, layout: Layout) -> CubeT {
    let tokens = x.meta.shape()[0];
    let out =
        empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([tokens, weight.rows]), x.dtype);
    let tile = if tokens == 1 { 1 } else { MAX_TILE };
    let format = weight.packing.block_format().unwrap_or(BlockFormat::DENSE);
    for (i, chunk) in weight.chunks.iter().enumerate() {
        let [scales_dtype, dense_dtype] = chunk.dtypes(&x);
        let (count, dim) = layout.grid(chunk.rows, tokens.div_ceil(tile as usize));
        let span = ChunkSpanLaunch::new((i * weight.rows_per_chunk) as u32, chunk.rows as u32);
        count_launch();
        // SAFETY: rows past the chunk read its last row (`row_to_read`) and write nothing, tiles past the
        // last token read its inputs, a block-format row is whole blocks of 32 and the dense tail stops
        // at `cols`; only the packing the weight has is bound, and read (the kind is comptime).
        unsafe {
            linear_kernel::launch_unchecked::<WgpuRuntime>(
                &x.client,
                count,
                dim,
                tensor_arg(&x),
                chunk.packed_arg(),
                up.map(|up| up.chunks[i].packed_arg()).into(),
                tensor_arg(&out),
                span,
                format,
                tile,
                layout,
                [x.dtype.into(), scales_dtype, dense_dtype],
            )
        };
    }
    out
}
