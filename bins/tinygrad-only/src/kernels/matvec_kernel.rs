//! The kernels of `matvec.rs`: a few rows (one token, or a server step's up to 16) times a
//! weight, one launch per chunk of the weight's rows, in two variants by how the weight is
//! stored. Each lane loads (and, in a block format, decodes) its share of a weight row once and
//! applies it to every input row of the launch (a comptime `tile`), so the weight is read once
//! whatever the rows:
//!
//! - dense (f16/f32) rows ([`matvec_kernel`]): the lanes of a row read neighbouring vectors of
//!   it, so one load instruction of a warp covers one contiguous span of the row;
//! - the 32-weight block formats (`block_matvec_kernel.rs`): a lane takes whole blocks, reads a
//!   block's quant words 4 at a time and its 32 inputs as 8 vectors, and folds the block's scale
//!   and minimum in once: `Σ (d·q + m)·x = d·Σ q·x + m·Σ x`.
//!
//! Both share their prologue ([`stage_normed_input`], where the product fuses the RMSNorm of its
//! input) and their ending ([`store_rows`], a plain store, a residual add, or RoPE into the KV
//! cache), each chosen at compile time by which [`ComptimeOption`]s a launch binds.

use cubecl::prelude::*;

use super::layout::{ChunkSpan, Layout, local_row, reduce_and_store, row_to_read};
use super::rope::{RopeCache, pair_order_row, rotate_and_store_pair};

/// A product's input as one kernel argument: the rows `x` `[rows, cols]`, read as vectors of
/// `N`, and where the product fuses the RMSNorm before it (one row only), the norm's weight and
/// `eps`.
#[derive(CubeLaunch, CubeType)]
pub struct Input<F: Float, N: Size> {
    pub x: Tensor<Vector<F, N>>,
    pub norm: ComptimeOption<Tensor<Vector<F, N>>>,
    pub eps: f32,
}

/// Where a product's rows go, as one kernel argument: `out` (`[rows, out]`), added to
/// `residual` (`[rows, out]`) where bound; or, for one row, with `rope`, rotated into the queries
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

/// With a norm weight, stages the workgroup's normed input: `staged[i] = x[i] · norm[i]` in
/// f32 for every vector of the row, split over all `threads` of the workgroup, which also sum
/// `x²` together, and returns `1/rms(x)`, by which the products of the staged input are scaled.
/// Else returns 1 and stages nothing.
#[cube]
pub(super) fn stage_normed_input<F: Float, N: Size>(
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
pub(super) fn weight_row<F: Float>(span: &ChunkSpan, ending: &RowEnding<F>, #[comptime] layout: Layout) -> usize {
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
pub(super) fn input_at<F: Float, N: Size>(
    input: &Input<F, N>,
    staged: &SharedMemory<Vector<f32, N>>,
    at: usize,
) -> Vector<f32, N> {
    if comptime!(input.norm.is_some()) { staged[at] } else { Vector::<f32, N>::cast_from(input.x[at]) }
}

/// Scales each row's lanes' sums by `scale` (the fused norm's `1/rms`, else 1), adds them up and
/// stores them by `ending`, unless the weight row is past the chunk's end: the tail both kernels
/// share, [`reduce_and_store`] for the `tile` input rows (`gated`: `silu(sum) · sum_up`), or for
/// one row with RoPE, [`rotate_and_store_pair`]. With a residual, each output starts from it.
#[cube]
pub(super) fn store_rows<F: Float>(
    sums: &mut Array<f32>,
    sums_up: &mut Array<f32>,
    scale: f32,
    ending: &mut RowEnding<F>,
    span: &ChunkSpan,
    #[comptime] gated: bool,
    #[comptime] tile: u32,
    #[comptime] layout: Layout,
) {
    #[unroll]
    for t in 0..tile {
        sums[t as usize] *= scale;
        sums_up[t as usize] *= scale;
    }
    #[comptime]
    if let ComptimeOption::Some(residual) = &ending.residual {
        // The row's first lane alone adds it: the lanes' sums are added up next.
        let (rows, n) = (residual.shape(0), residual.shape(1));
        let column = span.first_row as usize + row_to_read(local_row(layout), span);
        if UNIT_POS_X == 0 {
            #[unroll]
            for t in 0..tile {
                if (t as usize) < rows {
                    sums[t as usize] += f32::cast_from(residual[t as usize * n + column]);
                }
            }
        }
    }
    #[comptime]
    match &mut ending.rope {
        ComptimeOption::Some(rope) => rotate_and_store_pair::<F>(sums[0], &mut ending.out, rope, span, layout),
        ComptimeOption::None => {
            reduce_and_store::<F>(sums, sums_up, &mut ending.out, span, 0usize, gated, tile, layout)
        }
    }
}

/// `out[t, first_row + r] = Σ_c x[t, c] · w[r, c]` over one chunk of weight rows, for the
/// `tile` input rows `t` (those past `x`'s rows not stored), or with `up`,
/// `silu(x_t · w_r) · (x_t · up_r)`; `x` and the weights read as vectors of `N`; with a norm (one
/// row), of `rms_norm(x) · norm` (staged: `staged_vectors` is the row's vectors, else 1) instead
/// of `x`; ended as `ending` says. What a launch does not fuse is not bound at all.
#[cube(launch_unchecked)]
pub(super) fn matvec_kernel<F: Float, W: Float, N: Size>(
    input: &Input<F, N>,
    weights: &DenseRows<W, N>,
    ending: &mut RowEnding<F>,
    span: &ChunkSpan,
    #[comptime] staged_vectors: u32,
    #[comptime] tile: u32,
    #[comptime] layout: Layout,
    #[define(F, W)] _dtypes: [StorageType; 2],
) {
    let mut staged = SharedMemory::<Vector<f32, N>>::new(comptime!(staged_vectors as usize));
    let scale = stage_normed_input::<F, N>(input, &mut staged, comptime!(layout.threads()));
    let per_row = input.x.shape(1) / N::value();
    let start = weight_row::<F>(span, ending, layout) * per_row;
    let gated = comptime!(weights.up.is_some());
    let mut totals = Array::<f32>::new(comptime!(tile as usize));
    let mut totals_up = Array::<f32>::new(comptime!(tile as usize));
    lane_sums::<F, W, N>(input, &staged, weights, start, &mut totals, &mut totals_up, tile, layout);
    store_rows::<F>(&mut totals, &mut totals_up, scale, ending, span, gated, tile, layout);
}

/// This lane's share of `Σ w·x` (and `Σ up·x`) over the weight row that starts at vector
/// `start`, for each input row of the `tile`, into `totals` (and `totals_up`). One row keeps a
/// vector sum and four weight vectors in flight (each lane waits out one load's latency per four
/// vectors, not per vector); a tile of several takes one weight vector per pass, applies it to
/// every row and keeps each row's sum as one f32 (each product's lanes added at once): a CPU
/// driver holds a thread's vector of `N` as `N` SIMD registers, so a tile of vector sums would
/// not fit in its registers.
#[cube]
fn lane_sums<F: Float, W: Float, N: Size>(
    input: &Input<F, N>,
    staged: &SharedMemory<Vector<f32, N>>,
    weights: &DenseRows<W, N>,
    start: usize,
    totals: &mut Array<f32>,
    totals_up: &mut Array<f32>,
    #[comptime] tile: u32,
    #[comptime] layout: Layout,
) {
    let per_row = input.x.shape(1) / N::value();
    if comptime!(tile == 1) {
        let step = comptime!(layout.lanes as usize);
        let mut sum = Vector::<f32, N>::new(f32::new(0.0));
        let mut sum_up = Vector::<f32, N>::new(f32::new(0.0));
        let mut c = UNIT_POS_X as usize;
        while c + 3 * step < per_row {
            let w = &weights.weights;
            let (w0, w1, w2, w3) = (
                widen(w[start + c]),
                widen(w[start + c + step]),
                widen(w[start + c + 2 * step]),
                widen(w[start + c + 3 * step]),
            );
            let x0 = input_at::<F, N>(input, staged, c);
            let x1 = input_at::<F, N>(input, staged, c + step);
            let x2 = input_at::<F, N>(input, staged, c + 2 * step);
            let x3 = input_at::<F, N>(input, staged, c + 3 * step);
            sum += w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3;
            #[comptime]
            if let ComptimeOption::Some(up) = &weights.up {
                let (u0, u1) = (widen(up[start + c]), widen(up[start + c + step]));
                let (u2, u3) = (widen(up[start + c + 2 * step]), widen(up[start + c + 3 * step]));
                sum_up += u0 * x0 + u1 * x1 + u2 * x2 + u3 * x3;
            }
            c += 4 * step;
        }
        while c < per_row {
            let xc = input_at::<F, N>(input, staged, c);
            sum += widen(weights.weights[start + c]) * xc;
            #[comptime]
            if let ComptimeOption::Some(up) = &weights.up {
                sum_up += widen(up[start + c]) * xc;
            }
            c += step;
        }
        totals[0] = lane_total::<N>(sum);
        totals_up[0] = lane_total::<N>(sum_up);
    } else {
        let rows = input.x.shape(0);
        #[unroll]
        for t in 0..tile {
            totals[t as usize] = f32::new(0.0);
            totals_up[t as usize] = f32::new(0.0);
        }
        let mut c = UNIT_POS_X as usize;
        while c < per_row {
            let w = widen(weights.weights[start + c]);
            let mut u = Vector::<f32, N>::new(f32::new(0.0));
            #[comptime]
            if let ComptimeOption::Some(up) = &weights.up {
                u = widen(up[start + c]);
            }
            #[unroll]
            for t in 0..tile {
                let xc = input_at::<F, N>(input, staged, input_row(t, rows, tile) * per_row + c);
                totals[t as usize] += lane_total::<N>(w * xc);
                if comptime!(weights.up.is_some()) {
                    totals_up[t as usize] += lane_total::<N>(u * xc);
                }
            }
            c += comptime!(layout.lanes as usize);
        }
    }
}

/// The sum of a vector's lanes.
#[cube]
fn lane_total<N: Size>(v: Vector<f32, N>) -> f32 {
    let mut total = f32::new(0.0);
    #[unroll]
    for k in 0..N::value() {
        total += v[k];
    }
    total
}

/// The input row that sum `t` of a `tile` reads: row `t`, or for the sums past the input's
/// `rows` (a tile is a power of two) its last row again, whose sums are never stored. A clamp
/// rather than a branch: a CPU driver runs the lanes of a workgroup in SIMD, where a branch in
/// the inner loop masks every load.
#[cube]
pub(super) fn input_row(t: u32, rows: usize, #[comptime] tile: u32) -> usize {
    let mut row = 0usize;
    if comptime!(tile > 1) {
        row = min(t as usize, rows - 1);
    }
    row
}

/// A weight vector in f32.
#[cube]
fn widen<W: Float, N: Size>(w: Vector<W, N>) -> Vector<f32, N> {
    Vector::<f32, N>::cast_from(w)
}
