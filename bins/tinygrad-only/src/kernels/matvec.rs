//! One token times a weight, the decode step's matrix-vector products, with loads as wide as the
//! data allows:
//!
//! - dense (f16/f32) rows: the lanes of a row read neighbouring vectors of it, so one load
//!   instruction of a warp covers one contiguous span of the row (256 bytes of f16 at 4 values
//!   per vector);
//! - the 32-weight block formats (Q8_0, Q4_0, Q4_1, int8, nf4): a lane still takes whole blocks,
//!   but reads a block's quant words 4 at a time (2 loads for 8-bit, 1 for 4-bit) and its 32
//!   inputs as 8 vectors, and folds the block's scale and minimum in once:
//!   `Σ (d·q + m)·x = d·Σ q·x + m·Σ x`.
//!
//! Both may fuse what surrounds the product in the model, two launches per layer fewer:
//! - the RMSNorm of the input: the workgroup's threads first stage `x · norm` in shared memory
//!   in f32 and sum `x²` together, then every row reads the staged input, and each sum is scaled
//!   by `1/rms` once at the end. That prologue is paid per workgroup, so it is taken only for
//!   products of at most [`MAX_NORMED_ROWS_PER_COL`] rows per input (Q/K/V, gate and up): for the
//!   output head, thousands of workgroups would each redo it, and one norm launch is cheaper;
//! - the residual add of the output: the row's first lane starts its sum from the residual;
//! - after the Q/K/V product, RoPE and the KV-cache write ([`RopeInto`]): the rows are taken in
//!   pair order, and each pair is rotated and written to the queries or the caches
//!   (`rope.rs`), so the product is never stored and `rope.rs`'s own launch is not needed.
//!
//! The kernel in `linear.rs` loads a block's quants a word and its inputs a value at a time,
//! too narrow to stream a GPU's memory (docs/benchmarks/2026-11-27-gpu-h200.md); it still serves
//! the K-quants and prompts.

use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::fused::{CubeT, count_launch};
use super::linear::{Layout, reduce_and_store, row_to_read};
pub use super::rope::RopeInto;
use super::rope::{RopeCache, RopeCacheLaunch, pair_order_row, rotate_and_store_pair};
use super::weights::{Chunk, DeviceWeight, MODE_NF4, Packing, block_min, nf4_level};

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

/// What a launch fuses around the product: the RMSNorm of its input (the norm's weight and
/// `eps`), the residual its output is added to (`[1, rows]`), and RoPE with the cache write
/// (the output is then the rotated queries, `[1, heads, head_dim]`).
#[derive(Debug, Default)]
pub struct Fused {
    pub norm: Option<(CubeT, f32)>,
    pub residual: Option<CubeT>,
    pub rope: Option<RopeInto>,
}

/// Products with more rows than this per input column take the norm as a launch of its own
/// (`norm.rs`) rather than a prologue in each of their workgroups.
const MAX_NORMED_ROWS_PER_COL: usize = 4;

/// With a `norm` weight, stages the workgroup's normed input: `staged[i] = x[i] · norm[i]` in
/// f32 for every vector of the row, split over all `threads` of the workgroup, which also sum
/// `x²` together, and returns `1/rms(x)`, by which the products of the staged input are scaled.
/// Else returns 1 and stages nothing.
#[cube]
fn stage_normed_input<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    norm: &ComptimeOption<Tensor<Vector<F, N>>>,
    staged: &mut SharedMemory<Vector<f32, N>>,
    eps: f32,
    #[comptime] threads: u32,
) -> f32 {
    let mut scale = f32::new(1.0);
    #[comptime]
    if let ComptimeOption::Some(norm) = norm {
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
        scale = f32::new(1.0) / f32::sqrt(partial[0] / f32::cast_from(cols as u32) + eps);
    }
    scale
}

/// The chunk row a thread reads ([`row_to_read`]), in pair order when the product ends in
/// RoPE (heads of `head_dim` rows, the caches' last dimension).
#[cube]
fn weight_row<F: Float>(local_row: usize, chunk_rows: u32, rope: &ComptimeOption<RopeCache<F>>) -> usize {
    let mut row = row_to_read(local_row, chunk_rows);
    #[comptime]
    if let ComptimeOption::Some(rope) = rope {
        row = pair_order_row(row, rope.keys.shape(2));
    }
    row
}

/// Input vector `at`: staged (normed) in shared memory, or read from `x`.
#[cube]
fn input<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    staged: &SharedMemory<Vector<f32, N>>,
    at: usize,
    #[comptime] normed: bool,
) -> Vector<f32, N> {
    if comptime!(normed) { staged[at] } else { Vector::<f32, N>::cast_from(x[at]) }
}

/// Adds the row's lanes' sums and writes `out[0, first_row + local_row]` (or, `gated`,
/// `silu(sum) · sum_up`), unless the row is past the chunk's end: the tail both kernels share,
/// [`reduce_and_store`] with a tile of one token, or with `rope`, [`rotate_and_store_pair`] at
/// `position`. The sums are first scaled by `scale` (`1/rms` of a normed input, else 1); with a
/// `residual`, the row's output starts from it.
#[cube]
fn store_row<F: Float>(
    sum: f32,
    sum_up: f32,
    scale: f32,
    residual: &ComptimeOption<Tensor<F>>,
    out: &mut Tensor<F>,
    rope: &mut ComptimeOption<RopeCache<F>>,
    position: u32,
    local_row: usize,
    first_row: u32,
    chunk_rows: u32,
    #[comptime] gated: bool,
    #[comptime] lanes: u32,
    #[comptime] rows: u32,
) {
    let mut acc = Array::<f32>::new(1usize);
    let mut acc_up = Array::<f32>::new(1usize);
    acc[0] = sum * scale;
    acc_up[0] = sum_up * scale;
    #[comptime]
    if let ComptimeOption::Some(residual) = residual {
        // The row's first lane alone adds it: the lanes' sums are added up next.
        let first_lane = UNIT_POS_X == 0;
        if first_lane {
            acc[0] += f32::cast_from(residual[first_row as usize + row_to_read(local_row, chunk_rows)]);
        }
    }
    #[comptime]
    match rope {
        ComptimeOption::Some(rope) => {
            rotate_and_store_pair::<F>(acc[0], out, rope, position, local_row, first_row, chunk_rows, lanes, rows)
        }
        ComptimeOption::None => reduce_and_store::<F>(
            &acc, &acc_up, out, local_row, first_row, chunk_rows, 0usize, gated, 1u32, lanes, rows,
        ),
    }
}

/// `out[0, first_row + r] = Σ_c x[c] · w[r, c]` over one chunk of rows (or, with `up`,
/// `silu(x · w_r) · (x · up_r)`), `x`, `weights` and `up` read as vectors of `N` values; with a
/// `norm` weight, of `rms_norm(x) · norm` (staged: `staged_vectors` is the row's vectors, else 1)
/// instead of `x`; with a `residual`, plus it; with `rope`, rotated by the tables' rows at
/// `position` into `out` (queries) and the caches ([`rotate_and_store_pair`]). What a launch does
/// not fuse is not bound at all (`ComptimeOption::None`).
#[cube(launch_unchecked)]
fn matvec_kernel<F: Float, W: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    norm: &ComptimeOption<Tensor<Vector<F, N>>>,
    residual: &ComptimeOption<Tensor<F>>,
    weights: &Tensor<Vector<W, N>>,
    up: &ComptimeOption<Tensor<Vector<W, N>>>,
    out: &mut Tensor<F>,
    rope: &mut ComptimeOption<RopeCache<F>>,
    position: u32,
    first_row: u32,
    chunk_rows: u32,
    eps: f32,
    #[comptime] staged_vectors: u32,
    #[comptime] lanes: u32,
    #[comptime] rows: u32,
    #[define(F, W)] _dtypes: [StorageType; 2],
) {
    let normed = comptime!(norm.is_some());
    let gated = comptime!(up.is_some());
    let mut staged = SharedMemory::<Vector<f32, N>>::new(comptime!(staged_vectors as usize));
    let scale = stage_normed_input::<F, N>(x, norm, &mut staged, eps, comptime!(lanes * rows));
    let per_row = x.shape(1) / N::value();
    let local_row = (CUBE_POS_X * rows + UNIT_POS_Y) as usize;
    let start = weight_row::<F>(local_row, chunk_rows, rope) * per_row;
    let step = comptime!(lanes as usize);
    let mut sum = Vector::<f32, N>::new(f32::new(0.0));
    let mut sum_up = Vector::<f32, N>::new(f32::new(0.0));
    let mut c = UNIT_POS_X as usize;
    // Four vectors per pass, loaded before they are multiplied: each lane keeps four reads in
    // flight rather than waiting out one load's latency per vector.
    while c + 3 * step < per_row {
        let x0 = input::<F, N>(x, &staged, c, normed);
        let x1 = input::<F, N>(x, &staged, c + step, normed);
        let x2 = input::<F, N>(x, &staged, c + 2 * step, normed);
        let x3 = input::<F, N>(x, &staged, c + 3 * step, normed);
        sum += four_products::<W, N>(weights, start + c, step, x0, x1, x2, x3);
        #[comptime]
        if let ComptimeOption::Some(up) = up {
            sum_up += four_products::<W, N>(up, start + c, step, x0, x1, x2, x3);
        }
        c += 4 * step;
    }
    while c < per_row {
        let xc = input::<F, N>(x, &staged, c, normed);
        sum += Vector::<f32, N>::cast_from(weights[start + c]) * xc;
        #[comptime]
        if let ComptimeOption::Some(up) = up {
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
    store_row::<F>(
        total, total_up, scale, residual, out, rope, position, local_row, first_row, chunk_rows, gated, lanes, rows,
    );
}

/// The value quant `q` stands for before its block's scale and minimum: `q`, or the NF4 level.
#[cube]
fn level(q: u32, #[comptime] mode: u32) -> f32 {
    if comptime!(mode == MODE_NF4) { nf4_level(q) } else { f32::cast_from(q) }
}

/// A chunk of a 32-weight block format as one kernel argument: quant words, a scale per block,
/// and a minimum per block (formats without one bind a one-element stand-in, `Chunk::mins`, which
/// `block_min` does not read).
#[derive(CubeLaunch, CubeType)]
pub struct BlockRows<S: Float, N: Size> {
    pub quants: Tensor<Vector<u32, N>>,
    pub scales: Tensor<S>,
    pub mins: Tensor<S>,
}

/// `Σ w·x` (`normed`: of the staged input) over block `block` of a 32-weight format, its quant words read as vectors of 4 and
/// its inputs as the 8 vectors of 4 from `x_at`. Word `i` of an 8-bit block holds weights
/// `4i .. 4i + 4`; byte `j` of a 4-bit block holds weight `j` in its low nibble and `j + 16` in
/// its high one (GGUF's order, kept by `pack.rs`).
#[cube]
fn block_dot<F: Float, S: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    staged: &SharedMemory<Vector<f32, N>>,
    x_at: usize,
    w: &BlockRows<S, N>,
    block: usize,
    #[comptime] bits: u32,
    #[comptime] mode: u32,
    #[comptime] normed: bool,
) -> f32 {
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
                let xs = input::<F, N>(x, staged, x_at + v * 4 + k, normed);
                #[unroll]
                for byte in 0..4usize {
                    let xe = xs[byte];
                    qx += level((word >> (byte as u32 * 8)) & 0xFF, mode) * xe;
                    sx += xe;
                }
            } else {
                let low = input::<F, N>(x, staged, x_at + k, normed);
                let high = input::<F, N>(x, staged, x_at + 4 + k, normed);
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
        sum += block_min::<S>(&w.mins, block, d, bits, mode) * sx;
    }
    sum
}

/// `out[0, first_row + r] = x · w_r` over one chunk of rows of a 32-weight block format (or,
/// with `up`, `silu(x · w_r) · (x · up_r)`); `x` and the quant words read as vectors of 4 (`N`
/// is always 4 here: a block is 8 such vectors of inputs and 1 or 2 of words). `norm`,
/// `residual` and `rope` as in [`matvec_kernel`].
#[cube(launch_unchecked)]
fn block_matvec_kernel<F: Float, S: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    norm: &ComptimeOption<Tensor<Vector<F, N>>>,
    residual: &ComptimeOption<Tensor<F>>,
    weights: &BlockRows<S, N>,
    up: &ComptimeOption<BlockRows<S, N>>,
    out: &mut Tensor<F>,
    rope: &mut ComptimeOption<RopeCache<F>>,
    position: u32,
    first_row: u32,
    chunk_rows: u32,
    eps: f32,
    #[comptime] bits: u32,
    #[comptime] mode: u32,
    #[comptime] staged_vectors: u32,
    #[comptime] lanes: u32,
    #[comptime] rows: u32,
    #[define(F, S)] _dtypes: [StorageType; 2],
) {
    let normed = comptime!(norm.is_some());
    let gated = comptime!(up.is_some());
    let mut staged = SharedMemory::<Vector<f32, N>>::new(comptime!(staged_vectors as usize));
    let scale = stage_normed_input::<F, N>(x, norm, &mut staged, eps, comptime!(lanes * rows));
    let blocks = x.shape(1) / 32;
    let local_row = (CUBE_POS_X * rows + UNIT_POS_Y) as usize;
    let first_block = weight_row::<F>(local_row, chunk_rows, rope) * blocks;
    let mut sum = f32::new(0.0);
    let mut sum_up = f32::new(0.0);
    let mut b = UNIT_POS_X as usize;
    while b < blocks {
        sum += block_dot::<F, S, N>(x, &staged, b * 8, weights, first_block + b, bits, mode, normed);
        #[comptime]
        if let ComptimeOption::Some(up) = up {
            sum_up += block_dot::<F, S, N>(x, &staged, b * 8, up, first_block + b, bits, mode, normed);
        }
        b += comptime!(lanes as usize);
    }
    store_row::<F>(
        sum, sum_up, scale, residual, out, rope, position, local_row, first_row, chunk_rows, gated, lanes, rows,
    );
}

/// Values per vector for a row of `cols` in both dtypes: the widest load the device likes for
/// each (cubecl's `io_optimized_vector_sizes`, widest first) that divides the row.
fn vector_size(x: &CubeT, weights: &CubeT, cols: usize) -> usize {
    let widest = |t: &CubeT| t.client.io_optimized_vector_sizes(t.dtype.size()).next().unwrap_or(1);
    let mut size = widest(x).min(widest(weights));
    while size > 1 && !cols.is_multiple_of(size) {
        size /= 2;
    }
    size
}

/// Whether [`matvec`] stages the norm of `x` in its workgroups for `weight`: few enough rows per
/// input (see [`MAX_NORMED_ROWS_PER_COL`]), and the staged row (f32) fits in shared memory beside
/// the reduction's and [`reduce_and_store`]'s.
fn stages_norm(x: &CubeT, weight: &DeviceWeight, layout: Layout) -> bool {
    let threads = (layout.lanes * layout.rows) as usize;
    let shared_bytes = 4 * (weight.cols + threads + threads * 2 * super::linear::MAX_TILE as usize);
    weight.rows <= MAX_NORMED_ROWS_PER_COL * weight.cols
        && shared_bytes <= x.client.properties().hardware.max_shared_memory_size
}

/// The staging buffer's length in vectors of `vector`: the row when `normed`, else 1.
fn staged_vectors(normed: bool, cols: usize, vector: usize) -> u32 {
    if normed { (cols / vector) as u32 } else { 1 }
}

/// Whether [`matvec`] takes this weight's one-token products: dense weights and the 32-weight
/// block formats (the K-quants stay with `linear.rs`).
pub fn handles(weight: &DeviceWeight) -> bool {
    matches!(weight.packing, Packing::Dense | Packing::Bits8 | Packing::Bits4(_))
}

/// Whether [`matvec`] can fuse RoPE and the cache write ([`RopeInto`]) into this Q/K/V
/// product, whose heads are `head_dim` rows: a pair of rows must sit in one workgroup (an even
/// head width and an even number of rows per workgroup) and every chunk must be whole heads.
pub fn folds_rope(weight: &DeviceWeight, head_dim: usize, layout: Layout) -> bool {
    handles(weight)
        && head_dim.is_multiple_of(2)
        && weight.rows.is_multiple_of(head_dim)
        && layout.rows.is_multiple_of(2)
        && (weight.chunks.len() == 1 || weight.rows_per_chunk.is_multiple_of(head_dim))
}

/// `t` as a kernel argument (the launch holds its own handle).
fn arg(t: &CubeT) -> TensorArg<burn_wgpu::WgpuRuntime> {
    t.clone().into_tensor_arg()
}

/// The RoPE ending's kernel argument, when the product ends in RoPE.
fn rope_arg<F: Float>(rope: Option<&RopeInto>) -> ComptimeOptionArgs<RopeCache<F>, burn_wgpu::WgpuRuntime> {
    rope.map(|into| {
        RopeCacheLaunch::new(arg(&into.cos), arg(&into.sin), arg(&into.cache_keys), arg(&into.cache_values))
    })
    .into()
}

/// `x · Wᵀ` for one token `x` `[1, cols]` (contiguous) against a weight [`handles`] accepts;
/// with `up`, `silu(x · Wᵀ) · (x · Upᵀ)`; with what `fused` names, of `rms_norm(x)`, plus the
/// residual, or rotated into queries `[1, heads, head_dim]` and the caches (only where
/// [`folds_rope`]). One launch per chunk of rows.
pub fn matvec(x: CubeT, weight: &DeviceWeight, up: Option<&DeviceWeight>, fused: Fused, layout: Layout) -> CubeT {
    /// Block formats: words and inputs per vector (a block is 8 vectors of inputs, 1 or 2 of words).
    const BLOCK_VECTOR: usize = 4;
    let Layout { lanes, rows } = layout;
    let (x, norm) = match fused.norm {
        Some((norm, eps)) if stages_norm(&x, weight, layout) => (x, Some((norm, eps))),
        Some((norm, eps)) => (super::norm::rms_norm(x, norm, eps), None),
        None => (x, None),
    };
    let out_shape = match &fused.rope {
        Some(into) => {
            into.assert_in_bounds();
            let head_dim = into.head_dim();
            let kv_heads = into.cache_keys.meta.shape()[0];
            Shape::new([1, weight.rows / head_dim - 2 * kv_heads, head_dim])
        }
        None => Shape::new([1, weight.rows]),
    };
    let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), out_shape, x.dtype);
    let (norm, eps) = norm.map_or((None, 0.0), |(norm, eps)| (Some(norm), eps));
    let normed = norm.is_some();
    let position = fused.rope.as_ref().map_or(0, |into| into.position as u32);
    for (i, chunk) in weight.chunks.iter().enumerate() {
        let count = CubeCount::Static(chunk.rows.div_ceil(rows as usize) as u32, 1, 1);
        let dim = CubeDim::new_2d(lanes, rows);
        let (first_row, chunk_rows) = ((i * weight.rows_per_chunk) as u32, chunk.rows as u32);
        count_launch();
        match weight.packing.block_format() {
            Some((bits, mode)) => {
                let block_rows = |c: &Chunk| {
                    BlockRowsLaunch::new(arg(&c.data), c.scales().into_tensor_arg(), c.mins().into_tensor_arg())
                };
                let scales_dtype = chunk.scales.as_ref().expect("block formats have scales").dtype;
                // SAFETY: rows past the chunk read its last row (`row_to_read`) and write nothing; a row is
                // whole blocks of 32, and the norm's weight is as long as the row; with `rope`, rows are
                // read in pair order within whole heads (`folds_rope`), and `position` has a table row and a
                // cache row (asserted above).
                unsafe {
                    block_matvec_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
                        &x.client,
                        count,
                        dim,
                        BLOCK_VECTOR,
                        arg(&x),
                        norm.as_ref().map(arg).into(),
                        fused.residual.as_ref().map(arg).into(),
                        block_rows(chunk),
                        up.map(|up| block_rows(&up.chunks[i])).into(),
                        arg(&out),
                        rope_arg(fused.rope.as_ref()),
                        position,
                        first_row,
                        chunk_rows,
                        eps,
                        bits,
                        mode,
                        staged_vectors(normed, weight.cols, BLOCK_VECTOR),
                        lanes,
                        rows,
                        [x.dtype.into(), scales_dtype.into()],
                    )
                }
            }
            // SAFETY: as the block case; `vector_size` divides the row, so a row's last vector ends at its
            // end.
            None => unsafe {
                let vector = vector_size(&x, &chunk.data, weight.cols);
                matvec_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
                    &x.client,
                    count,
                    dim,
                    vector,
                    arg(&x),
                    norm.as_ref().map(arg).into(),
                    fused.residual.as_ref().map(arg).into(),
                    arg(&chunk.data),
                    up.map(|up| arg(&up.chunks[i].data)).into(),
                    arg(&out),
                    rope_arg(fused.rope.as_ref()),
                    position,
                    first_row,
                    chunk_rows,
                    eps,
                    staged_vectors(normed, weight.cols, vector),
                    lanes,
                    rows,
                    [x.dtype.into(), chunk.data.dtype.into()],
                )
            },
        }
    }
    out
}
