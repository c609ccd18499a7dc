//! The kernels of `matvec.rs`: one token times a weight, one launch per chunk of rows, in two
//! variants by how the weight is stored:
//!
//! - dense (f16/f32) rows ([`matvec_kernel`]): the lanes of a row read neighbouring vectors of
//!   it, so one load instruction of a warp covers one contiguous span of the row;
//! - the 32-weight block formats ([`block_matvec_kernel`]): a lane takes whole blocks, reads a
//!   block's quant words 4 at a time and its 32 inputs as 8 vectors, and folds the block's scale
//!   and minimum in once: `Σ (d·q + m)·x = d·Σ q·x + m·Σ x`.
//!
//! Both share their prologue ([`stage_normed_input`], where the product fuses the RMSNorm of its
//! input) and their ending ([`store_row`], a plain store, a residual add, or RoPE into the KV
//! cache), each chosen at compile time by which [`ComptimeOption`]s a launch binds.

use cubecl::prelude::*;

use super::layout::{ChunkSpan, Layout, local_row, reduce_and_store, row_to_read};
use super::rope::{RopeCache, pair_order_row, rotate_and_store_pair};
use super::weights::{BlockFormat, MODE_NF4, block_min, nf4_level};

/// A one-token product's input as one kernel argument: the row `x` `[1, cols]`, read as vectors
/// of `N`, and where the product fuses the RMSNorm before it, the norm's weight and `eps`.
#[derive(CubeLaunch, CubeType)]
pub struct Input<F: Float, N: Size> {
    pub x: Tensor<Vector<F, N>>,
    pub norm: ComptimeOption<Tensor<Vector<F, N>>>,
    pub eps: f32,
}

/// Where a one-token product's rows go, as one kernel argument: `out` (`[1, rows]`), to which
/// the rows are added to `residual` where bound; or with `rope`, rotated into the queries
/// (`out`, `[1, heads, head_dim]`) and the caches ([`rotate_and_store_pair`]).
#[derive(CubeLaunch, CubeType)]
pub struct RowEnding<F: Float> {
    pub out: Tensor<F>,
    pub residual: ComptimeOption<Tensor<F>>,
    pub rope: ComptimeOption<RopeCache<F>>,
}

/// A dense weight chunk `[rows, cols]` read as vectors of `N`, and with it, the up projection
/// of a fused SwiGLU (`silu(x · w_r) · (x · up_r)`).
#[derive(CubeLaunch, CubeType)]
pub struct DenseRows<W: Float, N: Size> {
    pub weights: Tensor<Vector<W, N>>,
    pub up: ComptimeOption<Tensor<Vector<W, N>>>,
}

/// A chunk of a 32-weight block format as one kernel argument: quant words read as vectors of
/// `N`, a scale per block, and a minimum per block where the format stores one (Q4_1).
#[derive(CubeLaunch, CubeType)]
pub struct BlockRows<S: Float, N: Size> {
    pub quants: Tensor<Vector<u32, N>>,
    pub scales: Tensor<S>,
    pub mins: ComptimeOption<Tensor<S>>,
}

/// A block-format weight chunk and, for a fused SwiGLU, its up projection's.
#[derive(CubeLaunch, CubeType)]
pub struct BlockWeights<S: Float, N: Size> {
    pub weights: BlockRows<S, N>,
    pub up: ComptimeOption<BlockRows<S, N>>,
}

/// `Σ_i w[at + i·step] · x_i` for i in 0..4: the four vectors a lane multiplies per pass, all
/// loaded before the first product.
#[cube]
fn four_products<W: Float, N: Size>(
    w: &Tensor<Vector<W, N>>,
    at: usize,
    step: usize,
    x0: Vector<f32, N>,
    x1: Vector<f32, N>,
    x2: Vector<f32, N>,
    x3: Vector<f32, N>,
) -> Vector<f32, N> {
    let w0 = w[at];
    let w1 = w[at + step];
    let w2 = w[at + 2 * step];
    let w3 = w[at + 3 * step];
    Vector::<f32, N>::cast_from(w0) * x0
        + Vector::<f32, N>::cast_from(w1) * x1
        + Vector::<f32, N>::cast_from(w2) * x2
        + Vector::<f32, N>::cast_from(w3) * x3
}

/// With a norm weight, stages the workgroup's normed input: `staged[i] = x[i] · norm[i]` in
/// f32 for every vector of the row, split over all `threads` of the workgroup, which also sum
/// `x²` together, and returns `1/rms(x)`, by which the products of the staged input are scaled.
/// Else returns 1 and stages nothing.
#[cube]
fn stage_normed_input<F: Float, N: Size>(
    input: &Input<F, N>,
    staged: &mut SharedMemory<Vector<f32, N>>,
    #[comptime] threads: u32,
) -> f32 {
    let mut scale = f32::new(1.0);
    #[comptime]
    if let ComptimeOption::Some(norm) = &input.norm {
        let x = &input.x;
        let cols = x.shape(1);
        let thread = UNIT_POS as usize;
        let mut squares = Vector::<f32, N>::new(f32::new(0.0));
        let mut i = thread;
        while i < cols / N::value() {
            let value = Vector::<f32, N>::cast_from(x[i]);
            squares += value * value;
            staged[i] = value * Vector::<f32, N>::cast_from(norm[i]);
            i += comptime!(threads as usize);
        }
        let mut partial = SharedMemory::<f32>::new(comptime!(threads as usize));
        let mut total = f32::new(0.0);
        #[unroll]
        for k in 0..N::value() {
            total += squares[k];
        }
        partial[thread] = total;
        sync_cube();
        #[unroll]
        for step in 1..comptime!(threads.trailing_zeros() + 1) {
            let stride = comptime!((threads >> step) as usize);
            if thread < stride {
                partial[thread] += partial[thread + stride];
            }
            sync_cube();
        }
        scale = f32::new(1.0) / f32::sqrt(partial[0] / f32::cast_from(cols as u32) + input.eps);
    }
    scale
}

/// The chunk row this thread reads ([`row_to_read`]), in pair order when the product ends in
/// RoPE (heads of `head_dim` rows, the caches' last dimension).
#[cube]
fn weight_row<F: Float>(span: &ChunkSpan, ending: &RowEnding<F>, #[comptime] layout: Layout) -> usize {
    let mut row = row_to_read(local_row(layout), span);
    #[comptime]
    if let ComptimeOption::Some(rope) = &ending.rope {
        row = pair_order_row(row, rope.keys.shape(2));
    }
    row
}

/// Input vector `at`: staged (normed) in shared memory where the norm is fused, else read
/// from `x`.
#[cube]
fn input_at<F: Float, N: Size>(
    input: &Input<F, N>,
    staged: &SharedMemory<Vector<f32, N>>,
    at: usize,
) -> Vector<f32, N> {
    if comptime!(input.norm.is_some()) { staged[at] } else { Vector::<f32, N>::cast_from(input.x[at]) }
}

/// Adds the row's lanes' sums and stores the row by `ending`, unless the row is past the chunk's
/// end: the tail both kernels share, [`reduce_and_store`] with a tile of one token (`gated`:
/// `silu(sum) · sum_up`), or with RoPE, [`rotate_and_store_pair`]. With a residual, the row's
/// output starts from it.
#[cube]
fn store_row<F: Float>(
    sum: f32,
    sum_up: f32,
    ending: &mut RowEnding<F>,
    span: &ChunkSpan,
    #[comptime] gated: bool,
    #[comptime] layout: Layout,
) {
    let mut acc = Array::<f32>::new(1usize);
    let mut acc_up = Array::<f32>::new(1usize);
    acc[0] = sum;
    acc_up[0] = sum_up;
    #[comptime]
    if let ComptimeOption::Some(residual) = &ending.residual {
        // The row's first lane alone adds it: the lanes' sums are added up next.
        let first_lane = UNIT_POS_X == 0;
        if first_lane {
            acc[0] += f32::cast_from(residual[span.first_row as usize + row_to_read(local_row(layout), span)]);
        }
    }
    #[comptime]
    match &mut ending.rope {
        ComptimeOption::Some(rope) => rotate_and_store_pair::<F>(acc[0], &mut ending.out, rope, span, layout),
        ComptimeOption::None => {
            reduce_and_store::<F>(&acc, &acc_up, &mut ending.out, span, 0usize, gated, 1u32, layout)
        }
    }
}

/// `out[0, first_row + r] = Σ_c x[c] · w[r, c]` over one chunk of rows (or, with `up`,
/// `silu(x · w_r) · (x · up_r)`), `x` and the weights read as vectors of `N`; with a norm,
/// of `rms_norm(x) · norm` (staged: `staged_vectors` is the row's vectors, else 1) instead of
/// `x`; ended as `ending` says. What a launch does not fuse is not bound at all.
#[cube(launch_unchecked)]
pub(super) fn matvec_kernel<F: Float, W: Float, N: Size>(
    input: &Input<F, N>,
    weights: &DenseRows<W, N>,
    ending: &mut RowEnding<F>,
    span: &ChunkSpan,
    #[comptime] staged_vectors: u32,
    #[comptime] layout: Layout,
    #[define(F, W)] _dtypes: [StorageType; 2],
) {
    let mut staged = SharedMemory::<Vector<f32, N>>::new(comptime!(staged_vectors as usize));
    let scale = stage_normed_input::<F, N>(input, &mut staged, comptime!(layout.threads()));
    let per_row = input.x.shape(1) / N::value();
    let start = weight_row::<F>(span, ending, layout) * per_row;
    let step = comptime!(layout.lanes as usize);
    let mut sum = Vector::<f32, N>::new(f32::new(0.0));
    let mut sum_up = Vector::<f32, N>::new(f32::new(0.0));
    let mut c = UNIT_POS_X as usize;
    // Four vectors per pass, loaded before they are multiplied: each lane keeps four reads in
    // flight rather than waiting out one load's latency per vector.
    while c + 3 * step < per_row {
        let x0 = input_at::<F, N>(input, &staged, c);
        let x1 = input_at::<F, N>(input, &staged, c + step);
        let x2 = input_at::<F, N>(input, &staged, c + 2 * step);
        let x3 = input_at::<F, N>(input, &staged, c + 3 * step);
        sum += four_products::<W, N>(&weights.weights, start + c, step, x0, x1, x2, x3);
        #[comptime]
        if let ComptimeOption::Some(up) = &weights.up {
            sum_up += four_products::<W, N>(up, start + c, step, x0, x1, x2, x3);
        }
        c += 4 * step;
    }
    while c < per_row {
        let xc = input_at::<F, N>(input, &staged, c);
        sum += Vector::<f32, N>::cast_from(weights.weights[start + c]) * xc;
        #[comptime]
        if let ComptimeOption::Some(up) = &weights.up {
            sum_up += Vector::<f32, N>::cast_from(up[start + c]) * xc;
        }
        c += step;
    }
    let mut total = f32::new(0.0);
    let mut total_up = f32::new(0.0);
    #[unroll]
    for k in 0..N::value() {
        total += sum[k];
        total_up += sum_up[k];
    }
    store_row::<F>(total * scale, total_up * scale, ending, span, comptime!(weights.up.is_some()), layout);
}

/// The value quant `q` stands for before its block's scale and minimum: `q`, or the NF4 level.
#[cube]
fn level(q: u32, #[comptime] mode: u32) -> f32 {
    if comptime!(mode == MODE_NF4) { nf4_level(q) } else { f32::cast_from(q) }
}

/// `Σ w·x` over block `block` of a 32-weight format packed as `w` (its quant words read as
/// vectors of 4 and its inputs as the 8 vectors of 4 from `x_at`), the block's scale and minimum
/// folded in once. Word `i` of an 8-bit block holds weights `4i .. 4i + 4`; byte `j` of a 4-bit
/// block holds weight `j` in its low nibble and `j + 16` in its high one (GGUF's order, kept by
/// `pack.rs`).
#[cube]
fn packed_block_dot<F: Float, S: Float, N: Size>(
    input: &Input<F, N>,
    staged: &SharedMemory<Vector<f32, N>>,
    x_at: usize,
    w: &BlockRows<S, N>,
    block: usize,
    #[comptime] format: BlockFormat,
) -> f32 {
    let (bits, mode) = comptime!((format.bits, format.mode));
    let word_vectors = comptime!((bits / 4) as usize);
    let mut qx = f32::new(0.0);
    let mut sx = f32::new(0.0);
    #[unroll]
    for v in 0..word_vectors {
        let words = w.quants[block * word_vectors + v];
        #[unroll]
        for k in 0..4usize {
            let word = words[k];
            if comptime!(bits == 8) {
                let xs = input_at::<F, N>(input, staged, x_at + v * 4 + k);
                #[unroll]
                for byte in 0..4usize {
                    let xe = xs[byte];
                    qx += level((word >> (byte as u32 * 8)) & 0xFF, mode) * xe;
                    sx += xe;
                }
            } else {
                let low = input_at::<F, N>(input, staged, x_at + k);
                let high = input_at::<F, N>(input, staged, x_at + 4 + k);
                #[unroll]
                for byte in 0..4usize {
                    let (xl, xh) = (low[byte], high[byte]);
                    qx += level((word >> (byte as u32 * 8)) & 0xF, mode) * xl;
                    qx += level((word >> (byte as u32 * 8 + 4)) & 0xF, mode) * xh;
                    sx += xl + xh;
                }
            }
        }
    }
    let d = f32::cast_from(w.scales[block]);
    let mut sum = d * qx;
    if comptime!(mode != MODE_NF4) {
        sum += block_min::<S>(&w.mins, block, d, bits) * sx;
    }
    sum
}

/// `out[0, first_row + r] = x · w_r` over one chunk of rows of a 32-weight block format (or,
/// with `up`, `silu(x · w_r) · (x · up_r)`); `x` and the quant words read as vectors of 4 (`N`
/// is always 4 here: a block is 8 such vectors of inputs and 1 or 2 of words). The input and
/// the ending as in [`matvec_kernel`].
#[cube(launch_unchecked)]
pub(super) fn block_matvec_kernel<F: Float, S: Float, N: Size>(
    input: &Input<F, N>,
    weights: &BlockWeights<S, N>,
    ending: &mut RowEnding<F>,
    span: &ChunkSpan,
    #[comptime] format: BlockFormat,
    #[comptime] staged_vectors: u32,
    #[comptime] layout: Layout,
    #[define(F, S)] _dtypes: [StorageType; 2],
) {
    let mut staged = SharedMemory::<Vector<f32, N>>::new(comptime!(staged_vectors as usize));
    let scale = stage_normed_input::<F, N>(input, &mut staged, comptime!(layout.threads()));
    let blocks = input.x.shape(1) / 32;
    let first_block = weight_row::<F>(span, ending, layout) * blocks;
    let mut sum = f32::new(0.0);
    let mut sum_up = f32::new(0.0);
    let mut b = UNIT_POS_X as usize;
    while b < blocks {
        sum += packed_block_dot::<F, S, N>(input, &staged, b * 8, &weights.weights, first_block + b, format);
        #[comptime]
        if let ComptimeOption::Some(up) = &weights.up {
            sum_up += packed_block_dot::<F, S, N>(input, &staged, b * 8, up, first_block + b, format);
        }
        b += comptime!(layout.lanes as usize);
    }
    store_row::<F>(sum * scale, sum_up * scale, ending, span, comptime!(weights.up.is_some()), layout);
}
