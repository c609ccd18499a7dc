//! Matrix-vector (decode) and matrix-matrix (prefill) products against weights kept in their
//! GGUF block format, dequantized in registers, and the fused gate/up SwiGLU.
//!
//! One workgroup owns `rows` weight rows; the `lanes` threads of a row each take every
//! `lanes`-th block of 32 weights, dequantize it into 32 registers once and multiply it into the
//! running sums of up to [`MAX_TILE`] tokens, so a short prefill reads each weight once per tile
//! of tokens, not once per token (16 tokens and more go through `prefill.rs`). A shared-memory
//! tree then adds the lanes' sums. [`Layout::for_device`] picks `lanes`: 32 on a GPU (a warp per
//! row, neighbouring threads read neighbouring blocks), 8 on a CPU Vulkan driver (lavapipe's SIMD
//! width), which measured twice as fast there.

use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::fused::{CubeT, count_launch};
use super::weights::{DeviceWeight, MODE_OFFSET, dequantize_block, kernel_args, load_dense_block, placeholder};

/// How threads are laid out over the weight rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Threads sharing one weight row (a power of two).
    pub lanes: u32,
    /// Weight rows per workgroup.
    pub rows: u32,
}

impl Layout {
    /// GPUs: 32 lanes per row (a warp), 4 rows per workgroup. CPU drivers (lavapipe): 8 lanes,
    /// its SIMD width, and 16 rows, the fastest of the layouts timed in docs/kernels.md.
    pub fn for_device(is_cpu: bool) -> Self {
        if is_cpu { Layout { lanes: 8, rows: 16 } } else { Layout { lanes: 32, rows: 4 } }
    }
}
/// Most tokens one workgroup multiplies per pass over its rows (prefill).
pub const MAX_TILE: u32 = 8;

/// Σ w·x of a block held in registers against `x[x_at .. x_at + 32]`.
#[cube]
fn block_dot<F: Float>(x: &Tensor<F>, x_at: usize, w: &Array<f32>) -> f32 {
    let mut sum = f32::new(0.0);
    #[unroll]
    for j in 0..32usize {
        sum += w[j] * f32::cast_from(x[x_at + j]);
    }
    sum
}

/// The chunk row this thread reads: its own, or for threads past the chunk's end (they still
/// take part in the barriers, and write nothing) the last one.
#[cube]
pub(super) fn row_to_read(local_row: usize, chunk_rows: u32) -> usize {
    min(local_row, chunk_rows as usize - 1)
}

/// Adds the lanes' partial sums of each row in `partial` (`lanes · rows` per sum, the gate sums
/// first and, `gated`, the up sums after them): afterwards the row's first lane's slot,
/// `partial[s · lanes · rows + UNIT_POS_Y · lanes]`, holds the row's sum `s`.
#[cube]
pub(super) fn reduce_lanes(
    acc: &Array<f32>,
    acc_up: &Array<f32>,
    partial: &mut SharedMemory<f32>,
    #[comptime] gated: bool,
    #[comptime] tile: u32,
    #[comptime] lanes: u32,
    #[comptime] rows: u32,
) {
    let lane = UNIT_POS_X as usize;
    let width = comptime!((lanes * rows) as usize);
    let slot = UNIT_POS_Y as usize * comptime!(lanes as usize) + lane;
    let sums = comptime!(if gated { 2 * tile } else { tile });
    #[unroll]
    for t in 0..tile {
        partial[t as usize * width + slot] = acc[t as usize];
        if comptime!(gated) {
            partial[(tile + t) as usize * width + slot] = acc_up[t as usize];
        }
    }
    if comptime!(lanes > 1) {
        sync_cube();
        #[unroll]
        for step in 1..comptime!(lanes.trailing_zeros() + 1) {
            let stride = comptime!((lanes >> step) as usize);
            if lane < stride {
                #[unroll]
                for s in 0..sums {
                    let at = s as usize * width + slot;
                    partial[at] += partial[at + stride];
                }
            }
            sync_cube();
        }
    }
}

/// Adds the lanes' partial sums of each row ([`reduce_lanes`]) and writes
/// `out[token, first_row + local_row]` (or, `gated`, `silu(gate) · up`, the gate sums in `acc`
/// and the up sums in `acc_up`); rows past the chunk's `chunk_rows` write nothing.
#[cube]
pub(super) fn reduce_and_store<F: Float>(
    acc: &Array<f32>,
    acc_up: &Array<f32>,
    out: &mut Tensor<F>,
    local_row: usize,
    first_row: u32,
    chunk_rows: u32,
    first_token: usize,
    #[comptime] gated: bool,
    #[comptime] tile: u32,
    #[comptime] lanes: u32,
    #[comptime] rows: u32,
) {
    let tokens = out.shape(0);
    let n = out.shape(1);
    let width = comptime!((lanes * rows) as usize);
    let slot = UNIT_POS_Y as usize * comptime!(lanes as usize);
    let mut partial = SharedMemory::<f32>::new(comptime!((lanes * rows * MAX_TILE * 2) as usize));
    reduce_lanes(acc, acc_up, &mut partial, gated, tile, lanes, rows);
    if UNIT_POS_X == 0 && local_row < chunk_rows as usize {
        let row = first_row as usize + local_row;
        #[unroll]
        for t in 0..tile {
            let token = first_token + t as usize;
            if token < tokens {
                let mut value = partial[t as usize * width + slot];
                if comptime!(gated) {
                    let up = partial[(tile + t) as usize * width + slot];
                    value = value / (f32::new(1.0) + f32::exp(-value)) * up;
                }
                out[token * n + row] = F::cast_from(value);
            }
        }
    }
}

/// `out = x · Wᵀ` (or `silu(x · Gateᵀ) · (x · Upᵀ)` when `gated`) for one chunk of rows, the
/// weights block-quantized (`bits` 4 or 8: `quants`, `scales`, `mins`) or dense (`bits` 0:
/// `dense`, f32 or f16, `[rows, cols]`); the arguments of the other kind are placeholders.
#[cube(launch_unchecked)]
fn linear_kernel<F: Float, S: Float, W: Float>(
    x: &Tensor<F>,
    quants: &Tensor<u32>,
    scales: &Tensor<S>,
    mins: &Tensor<S>,
    dense: &Tensor<W>,
    up_quants: &Tensor<u32>,
    up_scales: &Tensor<S>,
    up_mins: &Tensor<S>,
    up_dense: &Tensor<W>,
    out: &mut Tensor<F>,
    first_row: u32,
    chunk_rows: u32,
    #[comptime] bits: u32,
    #[comptime] mode: u32,
    #[comptime] gated: bool,
    #[comptime] tile: u32,
    #[comptime] lanes: u32,
    #[comptime] rows: u32,
    #[define(F, S, W)] _dtypes: [StorageType; 3],
) {
    let tokens = x.shape(0);
    let k = x.shape(1);
    let local_row = (CUBE_POS_X * rows + UNIT_POS_Y) as usize;
    let row_read = row_to_read(local_row, chunk_rows);
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
        if comptime!(bits == 0) {
            load_dense_block::<W>(dense, row_read * k + b * 32, &mut w);
            if comptime!(gated) {
                load_dense_block::<W>(up_dense, row_read * k + b * 32, &mut w_up);
            }
        } else {
            let block = row_read * blocks + b;
            dequantize_block::<S>(quants, scales, mins, block, &mut w, bits, mode);
            if comptime!(gated) {
                dequantize_block::<S>(up_quants, up_scales, up_mins, block, &mut w_up, bits, mode);
            }
        }
        #[unroll]
        for t in 0..tile {
            let x_at = min(first_token + t as usize, tokens - 1) * k + b * 32;
            acc[t as usize] += block_dot::<F>(x, x_at, &w);
            if comptime!(gated) {
                acc_up[t as usize] += block_dot::<F>(x, x_at, &w_up);
            }
        }
        b += comptime!(lanes as usize);
    }
    if comptime!(bits == 0) {
        // Inputs past the last whole block of 32 (dense weights may have any width).
        let mut c = blocks * 32 + UNIT_POS_X as usize;
        while c < k {
            #[unroll]
            for t in 0..tile {
                let x_c = f32::cast_from(x[min(first_token + t as usize, tokens - 1) * k + c]);
                acc[t as usize] += f32::cast_from(dense[row_read * k + c]) * x_c;
                if comptime!(gated) {
                    acc_up[t as usize] += f32::cast_from(up_dense[row_read * k + c]) * x_c;
                }
            }
            c += comptime!(lanes as usize);
        }
    }
    reduce_and_store::<F>(&acc, &acc_up, out, local_row, first_row, chunk_rows, first_token, gated, tile, lanes, rows);
}

/// `x · Wᵀ` for `x` `[tokens, cols]` contiguous; with `up`, `silu(x · Wᵀ) · (x · Upᵀ)`.
pub fn linear(x: CubeT, weight: &DeviceWeight, up: Option<&DeviceWeight>, layout: Layout) -> CubeT {
    let tokens = x.meta.shape()[0];
    if tokens == 1 && super::matvec::handles(weight) {
        return super::matvec::matvec(x, weight, up, super::matvec::Fused::default(), layout);
    }
    if tokens >= super::prefill::MIN_TOKENS && weight.cols.is_multiple_of(32) {
        return super::prefill::linear(x, weight, up);
    }
    let out =
        empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([tokens, weight.rows]), x.dtype);
    let tile = if tokens == 1 { 1 } else { MAX_TILE };
    let Layout { lanes, rows } = layout;
    let (bits, mode) = weight.packing.block_format().unwrap_or((0, MODE_OFFSET));
    for (i, chunk) in weight.chunks.iter().enumerate() {
        let [quants, scales, mins, dense] = kernel_args(chunk, &x);
        let [up_quants, up_scales, up_mins, up_dense] = match up {
            Some(up) => kernel_args(&up.chunks[i], &x),
            None => [&quants, &scales, &mins, &dense].map(placeholder),
        };
        let dtypes = [x.dtype.into(), scales.dtype.into(), dense.dtype.into()];
        let count =
            CubeCount::Static(chunk.rows.div_ceil(rows as usize) as u32, tokens.div_ceil(tile as usize) as u32, 1);
        count_launch();
        // SAFETY: rows past the chunk read its last row (`row_to_read`) and write nothing, tiles past the
        // last token read its inputs, the dense tail stops at `cols`, and the placeholders of the kind the
        // weight is not are never read (the kind is comptime).
        unsafe {
            linear_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
                &x.client,
                count,
                CubeDim::new_2d(lanes, rows),
                x.clone().into_tensor_arg(),
                quants.into_tensor_arg(),
                scales.into_tensor_arg(),
                mins.into_tensor_arg(),
                dense.into_tensor_arg(),
                up_quants.into_tensor_arg(),
                up_scales.into_tensor_arg(),
                up_mins.into_tensor_arg(),
                up_dense.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                (i * weight.rows_per_chunk) as u32,
                chunk.rows as u32,
                bits,
                mode,
                up.is_some(),
                tile,
                lanes,
                rows,
                dtypes,
            )
        };
    }
    out
}
