//! The block-format variant of `matvec_kernel.rs`: a lane takes whole 32-weight blocks, decodes
//! a block's quants once (4 words at a time) and applies them to every input row of the launch,
//! folding the block's scale and minimum in once per row: `Σ (d·q + m)·x = d·Σ q·x + m·Σ x`. The
//! prologue and the ending are `matvec_kernel.rs`'s.

use cubecl::prelude::*;

use super::layout::{ChunkSpan, Layout};
use super::matvec_kernel::{Input, RowEnding, input_at, input_row, stage_normed_input, store_rows, weight_row};
use super::weights::{BlockFormat, MODE_NF4, block_min, nf4_level};

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

/// The value quant `q` stands for before its block's scale and minimum: `q`, or the NF4 level.
#[cube]
fn level(q: u32, #[comptime] mode: u32) -> f32 {
    if comptime!(mode == MODE_NF4) { nf4_level(q) } else { f32::cast_from(q) }
}

/// Adds `Σ w·x_t` over block `block` of a 32-weight format packed as `w` into `sums[t]` for
/// each input row `t` of the `tile` (those past `x`'s rows not stored), the block's inputs read from
/// vector `x_at` of each row (8 vectors of 4): the block's quants are decoded once, a word at a
/// time, and each word's levels applied to every row, its scale and minimum folded in once per
/// row: `Σ (d·q + m)·x = d·Σ q·x + m·Σ x`. Word `i` of an 8-bit block holds weights `4i .. 4i + 4`;
/// byte `j` of a 4-bit block holds weight `j` in its low nibble and `j + 16` in its high one
/// (GGUF's order, kept by `pack.rs`).
#[cube]
fn packed_block_dots<F: Float, S: Float, N: Size>(
    input: &Input<F, N>,
    staged: &SharedMemory<Vector<f32, N>>,
    x_at: usize,
    w: &BlockRows<S, N>,
    block: usize,
    sums: &mut Array<f32>,
    #[comptime] format: BlockFormat,
    #[comptime] tile: u32,
) {
    let (bits, mode) = comptime!((format.bits, format.mode));
    let word_vectors = comptime!((bits / 4) as usize);
    let (rows, per_row) = (input.x.shape(0), input.x.shape(1) / N::value());
    let mut qx = Array::<f32>::new(comptime!(tile as usize));
    let mut sx = Array::<f32>::new(comptime!(tile as usize));
    #[unroll]
    for t in 0..tile {
        qx[t as usize] = f32::new(0.0);
        sx[t as usize] = f32::new(0.0);
    }
    #[unroll]
    for v in 0..word_vectors {
        let words = w.quants[block * word_vectors + v];
        #[unroll]
        for k in 0..4usize {
            let word = words[k];
            if comptime!(bits == 8) {
                let l0 = level(word & 0xFF, mode);
                let l1 = level((word >> 8) & 0xFF, mode);
                let l2 = level((word >> 16) & 0xFF, mode);
                let l3 = level((word >> 24) & 0xFF, mode);
                #[unroll]
                for t in 0..tile {
                    let xs = input_at::<F, N>(input, staged, input_row(t, rows, tile) * per_row + x_at + v * 4 + k);
                    qx[t as usize] += l0 * xs[0] + l1 * xs[1] + l2 * xs[2] + l3 * xs[3];
                    sx[t as usize] += xs[0] + xs[1] + xs[2] + xs[3];
                }
            } else {
                let (l0, h0) = (level(word & 0xF, mode), level((word >> 4) & 0xF, mode));
                let (l1, h1) = (level((word >> 8) & 0xF, mode), level((word >> 12) & 0xF, mode));
                let (l2, h2) = (level((word >> 16) & 0xF, mode), level((word >> 20) & 0xF, mode));
                let (l3, h3) = (level((word >> 24) & 0xF, mode), level((word >> 28) & 0xF, mode));
                #[unroll]
                for t in 0..tile {
                    let row = input_row(t, rows, tile) * per_row + x_at;
                    let low = input_at::<F, N>(input, staged, row + k);
                    let high = input_at::<F, N>(input, staged, row + 4 + k);
                    qx[t as usize] += l0 * low[0] + h0 * high[0] + l1 * low[1] + h1 * high[1];
                    qx[t as usize] += l2 * low[2] + h2 * high[2] + l3 * low[3] + h3 * high[3];
                    sx[t as usize] += low[0] + high[0] + low[1] + high[1] + low[2] + high[2] + low[3] + high[3];
                }
            }
        }
    }
    let d = f32::cast_from(w.scales[block]);
    let mut m = f32::new(0.0);
    if comptime!(mode != MODE_NF4) {
        m = block_min::<S>(&w.mins, block, d, bits);
    }
    #[unroll]
    for t in 0..tile {
        sums[t as usize] += d * qx[t as usize] + m * sx[t as usize];
    }
}

/// `out[t, first_row + r] = x_t · w_r` over one chunk of weight rows of a 32-weight block format
/// for the `tile` input rows (or, with `up`, `silu(x_t · w_r) · (x_t · up_r)`); `x` and the quant
/// words read as vectors of 4 (`N` is always 4 here: a block is 8 such vectors of inputs and 1
/// or 2 of words). The input and the ending as in [`matvec_kernel`].
#[cube(launch_unchecked)]
pub(super) fn block_matvec_kernel<F: Float, S: Float, N: Size>(
    input: &Input<F, N>,
    weights: &BlockWeights<S, N>,
    ending: &mut RowEnding<F>,
    span: &ChunkSpan,
    #[comptime] format: BlockFormat,
    #[comptime] staged_vectors: u32,
    #[comptime] tile: u32,
    #[comptime] layout: Layout,
    #[define(F, S)] _dtypes: [StorageType; 2],
) {
    let mut staged = SharedMemory::<Vector<f32, N>>::new(comptime!(staged_vectors as usize));
    let scale = stage_normed_input::<F, N>(input, &mut staged, comptime!(layout.threads()));
    let blocks = input.x.shape(1) / 32;
    let first_block = weight_row::<F>(span, ending, layout) * blocks;
    let mut sums = Array::<f32>::new(comptime!(tile as usize));
    let mut sums_up = Array::<f32>::new(comptime!(tile as usize));
    #[unroll]
    for t in 0..tile {
        sums[t as usize] = f32::new(0.0);
        sums_up[t as usize] = f32::new(0.0);
    }
    let mut b = UNIT_POS_X as usize;
    while b < blocks {
        packed_block_dots::<F, S, N>(input, &staged, b * 8, &weights.weights, first_block + b, &mut sums, format, tile);
        #[comptime]
        if let ComptimeOption::Some(up) = &weights.up {
            packed_block_dots::<F, S, N>(input, &staged, b * 8, up, first_block + b, &mut sums_up, format, tile);
        }
        b += comptime!(layout.lanes as usize);
    }
    store_rows::<F>(&mut sums, &mut sums_up, scale, ending, span, comptime!(weights.up.is_some()), tile, layout);
}
