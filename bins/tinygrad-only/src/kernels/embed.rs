//! Embedding lookup from a packed table: the rows a prompt needs, dequantized as they are read.
//!
//! The table is split in chunks like every weight (see `weights.rs`), so the host groups the
//! wanted rows by chunk ([`embed_picks`]) and the device runs one launch per chunk used.

use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_wgpu::WgpuRuntime;
use cubecl::prelude::*;

use super::layout::{ChunkSpan, ChunkSpanLaunch};
use super::stream::{CubeT, count_launch};
use super::weights::{BlockFormat, DeviceWeight, Packed, dequantize_block, tensor_arg};

/// Rows of one chunk of a table: for each pair `(token, row)` in `picks`, `out[token, ..] =
/// W[row, ..]`, one workgroup per pair.
#[cube(launch_unchecked)]
fn embed_kernel<F: Float, S: Float, W: Float>(
    picks: &Tensor<u32>,
    table: &Packed<S, W>,
    out: &mut Tensor<F>,
    first_pair: u32,
    #[comptime] format: BlockFormat,
    #[define(F, S, W)] _dtypes: [StorageType; 3],
) {
    let pair = (first_pair + CUBE_POS_X) as usize;
    copy_row::<F, S, W>(table, out, picks[2 * pair] as usize, picks[2 * pair + 1] as usize, format);
}

/// Rows of one chunk of a table for token ids on the device: token `t = CUBE_POS_X` takes row
/// `ids[t] - span.first_row` if this chunk holds it (another launch writes it otherwise).
#[cube(launch_unchecked)]
fn embed_ids_kernel<F: Float, S: Float, W: Float, I: Int>(
    ids: &Tensor<I>,
    table: &Packed<S, W>,
    out: &mut Tensor<F>,
    span: &ChunkSpan,
    #[comptime] format: BlockFormat,
    #[define(F, S, W, I)] _dtypes: [StorageType; 4],
) {
    let t = CUBE_POS_X as usize;
    let id = u32::cast_from(ids[t]);
    if id >= span.first_row && id < span.first_row + span.rows {
        copy_row::<F, S, W>(table, out, t, (id - span.first_row) as usize, format);
    }
}

/// `out[t, ..] = W[row, ..]`, dequantized for a block format, the cube's threads striding over
/// the row's blocks (or, dense, its values).
#[cube]
fn copy_row<F: Float, S: Float, W: Float>(
    table: &Packed<S, W>,
    out: &mut Tensor<F>,
    t: usize,
    row: usize,
    #[comptime] format: BlockFormat,
) {
    let k = out.shape(1);
    #[comptime]
    if let ComptimeOption::Some(blocks) = &table.blocks {
        let per_row = k / 32;
        let mut w = Array::<f32>::new(32usize);
        let mut b = UNIT_POS_X as usize;
        while b < per_row {
            dequantize_block::<S>(blocks, row * per_row + b, &mut w, format);
            #[unroll]
            for j in 0..32usize {
                out[t * k + b * 32 + j] = F::cast_from(w[j]);
            }
            b += CUBE_DIM_X as usize;
        }
    }
    #[comptime]
    if let ComptimeOption::Some(dense) = &table.dense {
        let mut c = UNIT_POS_X as usize;
        while c < k {
            out[t * k + c] = F::cast_from(dense[row * k + c]);
            c += CUBE_DIM_X as usize;
        }
    }
}

/// Which rows of `table` `ids` needs, grouped by chunk: a flat list of `(token, row in chunk)`
/// pairs sorted by chunk, and for each chunk used `(chunk, first pair, pairs)`.
pub fn embed_picks(ids: &[u32], table: &DeviceWeight) -> (Vec<u32>, Vec<(usize, usize, usize)>) {
    let mut order: Vec<(usize, usize)> = ids.iter().enumerate().map(|(token, &id)| (id as usize, token)).collect();
    order.sort_by_key(|&(id, token)| (id / table.rows_per_chunk, token));
    let mut picks = Vec::with_capacity(2 * ids.len());
    let mut groups: Vec<(usize, usize, usize)> = Vec::new();
    for (pair, &(id, token)) in order.iter().enumerate() {
        let chunk = id / table.rows_per_chunk;
        match groups.last_mut() {
            Some((last, _, count)) if *last == chunk => *count += 1,
            _ => groups.push((chunk, pair, 1)),
        }
        picks.extend([token as u32, (id % table.rows_per_chunk) as u32]);
    }
    (picks, groups)
}

/// The rows [`embed_picks`] chose, as a `[tokens, cols]` tensor of `dtype`; `picks` is its pair
/// list on the device.
pub fn embed(picks: CubeT, groups: &[(usize, usize, usize)], table: &DeviceWeight, dtype: DType) -> CubeT {
    let tokens = picks.meta.shape()[0] / 2;
    let out = empty_device_contiguous_dtype(
        picks.client.clone(),
        picks.device.clone(),
        Shape::new([tokens, table.cols]),
        dtype,
    );
    let format = table.packing.block_format().unwrap_or(BlockFormat::DENSE);
    for &(i, first_pair, pairs) in groups {
        let chunk = &table.chunks[i];
        let [scales_dtype, dense_dtype] = chunk.dtypes(&out);
        count_launch();
        // SAFETY: `picks` holds (token, row) pairs the host made from in-range ids and this chunk's rows;
        // columns stop at the row width, and a block-format row is whole blocks of 32.
        unsafe {
            embed_kernel::launch_unchecked::<WgpuRuntime>(
                &picks.client,
                CubeCount::Static(pairs as u32, 1, 1),
                CubeDim::new_1d(64),
                tensor_arg(&picks),
                chunk.packed_arg(),
                tensor_arg(&out),
                first_pair as u32,
                format,
                [dtype.into(), scales_dtype, dense_dtype],
            )
        };
    }
    out
}

/// Rows `ids` `[tokens]` (on the device) of `table` as a `[tokens, cols]` tensor of `dtype`: one
/// launch per chunk, each writing the rows it holds.
pub fn embed_ids(ids: CubeT, table: &DeviceWeight, dtype: DType) -> CubeT {
    let tokens = ids.meta.shape()[0];
    let out =
        empty_device_contiguous_dtype(ids.client.clone(), ids.device.clone(), Shape::new([tokens, table.cols]), dtype);
    let format = table.packing.block_format().unwrap_or(BlockFormat::DENSE);
    for (i, chunk) in table.chunks.iter().enumerate() {
        let [scales_dtype, dense_dtype] = chunk.dtypes(&out);
        let span = ChunkSpanLaunch::new((i * table.rows_per_chunk) as u32, chunk.rows as u32);
        count_launch();
        // SAFETY: a thread reads `ids[CUBE_POS_X]` for one of `tokens` cubes, and a row only when this
        // chunk holds it; columns stop at the row width, and a block-format row is whole blocks of 32.
        unsafe {
            embed_ids_kernel::launch_unchecked::<WgpuRuntime>(
                &ids.client,
                CubeCount::Static(tokens as u32, 1, 1),
                CubeDim::new_1d(64),
                tensor_arg(&ids),
                chunk.packed_arg(),
                tensor_arg(&out),
                span,
                format,
                [dtype.into(), scales_dtype, dense_dtype, ids.dtype.into()],
            )
        };
    }
    out
}
