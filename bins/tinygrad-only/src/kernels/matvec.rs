//! A few rows times a weight, the decode step's matrix-vector products (one token, or one token
//! of each of up to [`MAX_ROWS`] sequences a server decodes together, each weight row read once
//! for all of them): which kernel serves a weight (`matvec_kernel.rs` for dense rows,
//! `block_matvec_kernel.rs` for the 32-weight block formats Q8_0, Q4_0, Q4_1, int8, nf4), with
//! what arguments, in how many workgroups, with loads as wide as the data allows.
//!
//! Either kernel may fuse what surrounds the product in the model, two launches per layer fewer
//! (the norm and RoPE for one row only):
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
//! Where the norm would cost more staged per workgroup than launched once (see
//! [`stages_norm`]), `product.rs` runs `norm.rs` first.
//!
//! The kernel in `linear.rs` loads a block's quants a word and its inputs a value at a time,
//! too narrow to stream a GPU's memory (docs/kernels.md); it still serves the K-quants and
//! prompts.

use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_wgpu::WgpuRuntime;
use cubecl::prelude::*;

use super::block_matvec_kernel::{BlockRowsLaunch, BlockWeightsLaunch, block_matvec_kernel};
use super::layout::{ChunkSpanLaunch, Layout, MAX_ROWS};
use super::matvec_kernel::{DenseRowsLaunch, InputLaunch, RowEndingLaunch, matvec_kernel};
pub use super::rope::RopeInto;
use super::stream::{CubeT, count_launch};
use super::weights::{Chunk, DeviceWeight, Packing, tensor_arg};

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
/// the reduction's and `reduce_and_store`'s. Else the norm is a launch of its own.
pub fn stages_norm(x: &CubeT, weight: &DeviceWeight, layout: Layout) -> bool {
    let threads = layout.threads() as usize;
    let shared_bytes = 4 * (weight.cols + threads + threads * 2);
    weight.rows <= MAX_NORMED_ROWS_PER_COL * weight.cols
        && shared_bytes <= x.client.properties().hardware.max_shared_memory_size
}

/// Whether [`matvec`] takes this weight's products of a few rows: dense weights and the 32-weight
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

/// A block chunk's quants read as vectors of `vector`, with its scales and minimums.
fn block_rows<S: Float, N: Size>(chunk: &Chunk) -> BlockRowsLaunch<S, N, WgpuRuntime> {
    let scales = chunk.scales.as_ref().expect("block formats have scales");
    BlockRowsLaunch::new(tensor_arg(&chunk.data), tensor_arg(scales), chunk.mins.as_ref().map(tensor_arg).into())
}

/// The input row, and the norm where the product stages it, as one kernel argument.
fn input_arg<F: Float, N: Size>(x: &CubeT, fused: &Fused) -> InputLaunch<F, N, WgpuRuntime> {
    let (norm, eps) = fused.norm.as_ref().map_or((None, 0.0), |(norm, eps)| (Some(tensor_arg(norm)), *eps));
    InputLaunch::new(tensor_arg(x), norm.into(), eps)
}

/// Where the rows go, `out` and what `fused` ends the product with, as one kernel argument.
fn ending_arg<F: Float>(out: &CubeT, fused: &Fused) -> RowEndingLaunch<F, WgpuRuntime> {
    let rope = fused.rope.as_ref().map(RopeInto::arg);
    RowEndingLaunch::new(tensor_arg(out), fused.residual.as_ref().map(tensor_arg).into(), rope.into())
}

/// `x · Wᵀ` for `x` `[rows, cols]` (contiguous, at most [`MAX_ROWS`] rows) against a weight
/// [`handles`] accepts, each weight row read once for all of them; with `up`,
/// `silu(x · Wᵀ) · (x · Upᵀ)`; with what `fused` names, plus the residual, and for one row of
/// `rms_norm(x)` (only where [`stages_norm`]), or rotated into queries `[1, heads, head_dim]`
/// and the caches (only where [`folds_rope`]). One launch per chunk of weight rows.
pub fn matvec(x: CubeT, weight: &DeviceWeight, up: Option<&DeviceWeight>, fused: Fused, layout: Layout) -> CubeT {
    /// Block formats: words and inputs per vector (a block is 8 vectors of inputs, 1 or 2 of words).
    const BLOCK_VECTOR: usize = 4;
    let rows = x.meta.shape()[0];
    assert!((1..=MAX_ROWS).contains(&rows), "a matvec takes 1 to {MAX_ROWS} rows, not {rows}");
    assert!(fused.norm.is_none() || (rows == 1 && stages_norm(&x, weight, layout)), "a norm matvec cannot stage");
    assert!(fused.rope.is_none() || rows == 1, "RoPE ends a one-row product only");
    // The rows each workgroup holds sums for: a power of two, so that few variants are compiled.
    let tile = rows.next_power_of_two() as u32;
    let out_shape = match &fused.rope {
        Some(into) => {
            into.assert_in_bounds();
            let head_dim = into.head_dim();
            Shape::new([1, weight.rows / head_dim - 2 * into.kv_heads, head_dim])
        }
        None => Shape::new([rows, weight.rows]),
    };
    let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), out_shape, x.dtype);
    // The staging buffer's length in vectors of `vector`: the row when normed, else 1.
    let staged_vectors = |vector: usize| if fused.norm.is_some() { (weight.cols / vector) as u32 } else { 1 };
    for (i, chunk) in weight.chunks.iter().enumerate() {
        let (count, dim) = layout.grid(chunk.rows, 1);
        let span = ChunkSpanLaunch::new((i * weight.rows_per_chunk) as u32, chunk.rows as u32);
        count_launch();
        match weight.packing.block_format() {
            Some(format) => {
                let weights = BlockWeightsLaunch::new(block_rows(chunk), up.map(|up| block_rows(&up.chunks[i])).into());
                let scales_dtype = chunk.scales.as_ref().expect("block formats have scales").dtype;
                // SAFETY: weight rows past the chunk read its last row (`row_to_read`) and write nothing; a tile's
                // sums past `x`'s rows read its last row (`input_row`) and are not stored; a row is whole blocks of
                // 32, and the norm's weight is as long as the row; with RoPE, rows are read in pair order within
                // whole heads (`folds_rope`), and the position has a table row and a cache row (asserted above).
                unsafe {
                    block_matvec_kernel::launch_unchecked::<WgpuRuntime>(
                        &x.client,
                        count,
                        dim,
                        BLOCK_VECTOR,
                        input_arg(&x, &fused),
                        weights,
                        ending_arg(&out, &fused),
                        span,
                        format,
                        staged_vectors(BLOCK_VECTOR),
                        tile,
                        layout,
                        [x.dtype.into(), scales_dtype.into()],
                    )
                }
            }
            // SAFETY: as the block case; `vector_size` divides the row, so a row's last vector ends at its
            // end.
            None => unsafe {
                let vector = vector_size(&x, &chunk.data, weight.cols);
                let weights =
                    DenseRowsLaunch::new(tensor_arg(&chunk.data), up.map(|up| tensor_arg(&up.chunks[i].data)).into());
                matvec_kernel::launch_unchecked::<WgpuRuntime>(
                    &x.client,
                    count,
                    dim,
                    vector,
                    input_arg(&x, &fused),
                    weights,
                    ending_arg(&out, &fused),
                    span,
                    staged_vectors(vector),
                    tile,
                    layout,
                    [x.dtype.into(), chunk.data.dtype.into()],
                )
            },
        }
    }
    out
}
