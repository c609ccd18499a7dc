//! Embedding lookup from a packed table: the rows a prompt needs, dequantized as they are read.
//!
//! The table is split in chunks like every weight (see `weights.rs`), so the host groups the
//! wanted rows by chunk ([`embed_picks`]) and the device runs one launch per chunk used.

use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::fused::{CubeT, count_launch};
use super::weights::{DeviceWeight, dequantize_block};

/// Rows of one chunk of a block-quantized table, dequantized: for each pair `(token, row)` in
/// `picks`, `out[token, c] = W[row, c]`, a thread per block of 32 weights.
#[cube(launch_unchecked)]
fn embed_quant_kernel<F: Float, S: Float>(
    picks: &Tensor<u32>,
    quants: &Tensor<u32>,
    scales: &Tensor<S>,
    mins: &Tensor<S>,
    out: &mut Tensor<F>,
    first_pair: u32,
    #[comptime] bits: u32,
    #[comptime] mode: u32,
    #[define(F, S)] _dtypes: [StorageType; 2],
) {
    let pair = (first_pair + CUBE_POS_X) as usize;
    copy_quant_row::<F, S>(
        quants,
        scales,
        mins,
        out,
        picks[2 * pair] as usize,
        picks[2 * pair + 1] as usize,
        bits,
        mode,
    );
}

/// The same for one chunk of a dense table.
#[cube(launch_unchecked)]
fn embed_dense_kernel<F: Float, W: Float>(
    picks: &Tensor<u32>,
    w: &Tensor<W>,
    out: &mut Tensor<F>,
    first_pair: u32,
    #[define(F, W)] _dtypes: [StorageType; 2],
) {
    let pair = (first_pair + CUBE_POS_X) as usize;
    copy_dense_row::<F, W>(w, out, picks[2 * pair] as usize, picks[2 * pair + 1] as usize);
}

/// Rows of one chunk of a block-quantized table for token ids on the device: token
/// `t = CUBE_POS_X` takes row `ids[t] - first_row` if this chunk, `first_row .. first_row +
/// rows`, holds it (another launch writes it otherwise).
#[cube(launch_unchecked)]
fn embed_ids_quant_kernel<F: Float, S: Float, I: Int>(
    ids: &Tensor<I>,
    quants: &Tensor<u32>,
    scales: &Tensor<S>,
    mins: &Tensor<S>,
    out: &mut Tensor<F>,
    first_row: u32,
    rows: u32,
    #[comptime] bits: u32,
    #[comptime] mode: u32,
    #[define(F, S, I)] _dtypes: [StorageType; 3],
) {
    let t = CUBE_POS_X as usize;
    let id = u32::cast_from(ids[t]);
    if id >= first_row && id < first_row + rows {
        copy_quant_row::<F, S>(quants, scales, mins, out, t, (id - first_row) as usize, bits, mode);
    }
}

/// The same for one chunk of a dense table.
#[cube(launch_unchecked)]
fn embed_ids_dense_kernel<F: Float, W: Float, I: Int>(
    ids: &Tensor<I>,
    w: &Tensor<W>,
    out: &mut Tensor<F>,
    first_row: u32,
    rows: u32,
    #[define(F, W, I)] _dtypes: [StorageType; 3],
) {
    let t = CUBE_POS_X as usize;
    let id = u32::cast_from(ids[t]);
    if id >= first_row && id < first_row + rows {
        copy_dense_row::<F, W>(w, out, t, (id - first_row) as usize);
    }
}

/// `out[t, ..] = W[row, ..]` dequantized, the cube's threads striding over the row's blocks.
#[cube]
fn copy_quant_row<F: Float, S: Float>(
    quants: &Tensor<u32>,
    scales: &Tensor<S>,
    mins: &Tensor<S>,
    out: &mut Tensor<F>,
    t: usize,
    row: usize,
    #[comptime] bits: u32,
    #[comptime] mode: u32,
) {
    let k = out.shape(1);
    let blocks = k / 32;
    let mut w = Array::<f32>::new(32usize);
    let mut b = UNIT_POS_X as usize;
    while b < blocks {
        dequantize_block::<S>(quants, scales, mins, row * blocks + b, &mut w, bits, mode);
        #[unroll]
        for j in 0..32usize {
            out[t * k + b * 32 + j] = F::cast_from(w[j]);
        }
        b += CUBE_DIM_X as usize;
    }
}

/// `out[t, ..] = W[row, ..]`, the cube's threads striding over the row.
#[cube]
fn copy_dense_row<F: Float, W: Float>(w: &Tensor<W>, out: &mut Tensor<F>, t: usize, row: usize) {
    let k = out.shape(1);
    let mut c = UNIT_POS_X as usize;
    while c < k {
        out[t * k + c] = F::cast_from(w[row * k + c]);
        c += CUBE_DIM_X as usize;
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
    let client = picks.client.clone();
    for &(i, first_pair, pairs) in groups {
        let chunk = &table.chunks[i];
        let count = CubeCount::Static(pairs as u32, 1, 1);
        let dim = CubeDim::new_1d(64);
        let first_pair = first_pair as u32;
        count_launch();
        match table.packing.block_format() {
            // SAFETY: `picks` holds (token, row) pairs the host made from in-range ids and this chunk's
            // rows; columns stop at the row width.
            None => unsafe {
                embed_dense_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
                    &client,
                    count,
                    dim,
                    picks.clone().into_tensor_arg(),
                    chunk.data.clone().into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    first_pair,
                    [dtype.into(), chunk.data.dtype.into()],
                )
            },
            // SAFETY: as the dense case; a block-format row is whole blocks of 32.
            Some((bits, mode)) => unsafe {
                embed_quant_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
                    &client,
                    count,
                    dim,
                    picks.clone().into_tensor_arg(),
                    chunk.data.clone().into_tensor_arg(),
                    chunk.scales().into_tensor_arg(),
                    chunk.mins().into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    first_pair,
                    bits,
                    mode,
                    [dtype.into(), chunk.scales().dtype.into()],
                )
            },
        }
    }
    out
}

/// Rows `ids` `[tokens]` (on the device) of `table` as a `[tokens, cols]` tensor of `dtype`: one
/// launch per chunk, each writing the rows it holds.
pub fn embed_ids(ids: CubeT, table: &DeviceWeight, dtype: DType) -> CubeT {
    let tokens = ids.meta.shape()[0];
    let client = ids.client.clone();
    let out =
        empty_device_contiguous_dtype(client.clone(), ids.device.clone(), Shape::new([tokens, table.cols]), dtype);
    for (i, chunk) in table.chunks.iter().enumerate() {
        let (first_row, rows) = ((i * table.rows_per_chunk) as u32, chunk.rows as u32);
        let count = CubeCount::Static(tokens as u32, 1, 1);
        let dim = CubeDim::new_1d(64);
        count_launch();
        match table.packing.block_format() {
            // SAFETY: a thread reads `ids[CUBE_POS_X]` for one of `tokens` cubes, and a row only when
            // this chunk holds it; columns stop at the row width.
            None => unsafe {
                embed_ids_dense_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
                    &client,
                    count,
                    dim,
                    ids.clone().into_tensor_arg(),
                    chunk.data.clone().into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    first_row,
                    rows,
                    [dtype.into(), chunk.data.dtype.into(), ids.dtype.into()],
                )
            },
            // SAFETY: as the dense case; a block-format row is whole blocks of 32.
            Some((bits, mode)) => unsafe {
                embed_ids_quant_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
                    &client,
                    count,
                    dim,
                    ids.clone().into_tensor_arg(),
                    chunk.data.clone().into_tensor_arg(),
                    chunk.scales().into_tensor_arg(),
                    chunk.mins().into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    first_row,
                    rows,
                    bits,
                    mode,
                    [dtype.into(), chunk.scales().dtype.into(), ids.dtype.into()],
                )
            },
        }
    }
    out
}
