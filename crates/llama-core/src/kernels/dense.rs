//! [`Composed`]: the reference provider, dense f32 weights and every operation its plain
//! composition.

use burn::tensor::{Distribution, Int, Tensor, TensorData, backend::Backend};

use super::composed;
use super::seam::{
    Capabilities, Kernels, Normed, Placement, Product, Projections, QkvIntoCache, RawWeight, Rows, TokenIds,
};
use crate::dequant::{self, DequantError};
use crate::kv_cache::CachedKv;

/// The reference provider: plain compositions of Burn tensor ops, dense weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct Composed;

/// Largest block of a dense weight: wgpu binds each tensor as one storage buffer, and drivers
/// cap those (lavapipe: 128 MiB); Llama 3's 128256 × 2048 embedding is 1 GiB in f32.
const MAX_BLOCK_BYTES: usize = 64 << 20;

/// A dense weight laid out `[in, out]`, split along `out` into column blocks of at most
/// [`MAX_BLOCK_BYTES`] (counted in f32), so `linear` is `x · W` block by block.
///
/// Why `[in, out]` and not GGUF's `[out, in]` with a transposed view: burn-wgpu 0.21 with fusion
/// computes wrong decode (M = 1) results in that layout inside the full model (found by the test
/// kit's incremental-decode check; syncing around the matmul, or a contiguous right-hand side,
/// both fix it). The transpose happens once, on the host, at load.
#[derive(Debug, Clone)]
pub struct DenseWeight<B: Backend> {
    /// `[in, out_i]` each; the `out_i` add up to `out`.
    blocks: Vec<Tensor<B, 2>>,
    /// Output features per block (the last may have fewer).
    block_out: usize,
}

/// Output rows per block for a weight with `cols` inputs.
fn rows_per_block(rows: usize, cols: usize) -> usize {
    (MAX_BLOCK_BYTES / 4 / cols.max(1)).clamp(1, rows.max(1))
}

impl<B: Backend> Kernels<B> for Composed {
    type Weight = DenseWeight<B>;

    fn capabilities(&self, _device: &B::Device) -> Capabilities {
        Capabilities::plain("composed burn ops")
    }

    fn load_weight(&self, raw: RawWeight<'_>, device: &B::Device) -> Result<DenseWeight<B>, DequantError> {
        let block_out = rows_per_block(raw.rows, raw.cols);
        let row_bytes = raw.ggml_type.bytes_for(raw.cols)?;
        let mut blocks = Vec::new();
        for first in (0..raw.rows).step_by(block_out) {
            let rows = block_out.min(raw.rows - first);
            let bytes = &raw.bytes[first * row_bytes..(first + rows) * row_bytes];
            let values = dequant::dequantize(raw.ggml_type, bytes, rows * raw.cols)?;
            let transposed = composed::transpose(&values, rows, raw.cols);
            blocks.push(Tensor::from_data(TensorData::new(transposed, [raw.cols, rows]), device));
        }
        Ok(DenseWeight { blocks, block_out })
    }

    fn random_weight(&self, rows: usize, cols: usize, std: f64, device: &B::Device) -> DenseWeight<B> {
        let block_out = rows_per_block(rows, cols);
        let blocks = (0..rows)
            .step_by(block_out)
            .map(|first| Tensor::random([cols, block_out.min(rows - first)], Distribution::Normal(0.0, std), device))
            .collect();
        DenseWeight { blocks, block_out }
    }

    fn weight_bytes(&self, weight: &DenseWeight<B>) -> usize {
        weight.blocks.iter().map(|b| b.shape().num_elements() * b.dtype().size()).sum()
    }

    fn embed(&self, table: &DenseWeight<B>, ids: TokenIds<'_, B>) -> Tensor<B, 2> {
        match ids {
            TokenIds::Host(ids, _) => embed_host(table, ids),
            TokenIds::Device(ids) => embed_device(table, ids),
        }
    }

    fn linear(&self, x: Tensor<B, 2>, weight: &DenseWeight<B>) -> Tensor<B, 2> {
        match weight.blocks.as_slice() {
            [single] => x.matmul(single.clone()),
            blocks => Tensor::cat(blocks.iter().map(|b| x.clone().matmul(b.clone())).collect(), 1),
        }
    }

    fn attention(&self, q: Tensor<B, 3>, kv: CachedKv<B>, rows: &Rows<B>) -> Tensor<B, 2> {
        composed::attention(q, kv, rows)
    }

    fn product(&self, p: Product<'_, B, DenseWeight<B>>) -> Tensor<B, 2> {
        composed::product(self, p)
    }

    fn qkv_into_cache(&self, args: QkvIntoCache<'_, B, DenseWeight<B>>) -> (Tensor<B, 3>, CachedKv<B>) {
        composed::qkv_into_cache(self, args)
    }

    fn swiglu_product(&self, input: Normed<'_, B>, gate_up: &Projections<DenseWeight<B>>) -> Tensor<B, 2> {
        composed::swiglu_product(self, input, gate_up)
    }

    fn rows(&self, placement: Placement<'_, B>) -> Rows<B> {
        composed::rows(placement)
    }
}

/// The table is stored `[dim, vocab]` in column blocks: a token's embedding is a column.
fn embed_host<B: Backend>(table: &DenseWeight<B>, ids: &[u32]) -> Tensor<B, 2> {
    let columns = ids
        .iter()
        .map(|&id| {
            let (block, col) = (id as usize / table.block_out, id as usize % table.block_out);
            let b = &table.blocks[block];
            b.clone().slice([0..b.dims()[0], col..col + 1])
        })
        .collect();
    Tensor::cat(columns, 1).transpose()
}

/// Each column block gathers the ids inside it and zeroes the others' rows; the blocks' parts add
/// up to the rows (adding zeros is exact).
fn embed_device<B: Backend>(table: &DenseWeight<B>, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    let mut rows: Option<Tensor<B, 2>> = None;
    for (i, block) in table.blocks.iter().enumerate() {
        let width = block.dims()[1] as i64;
        let local = ids.clone().sub_scalar((i * table.block_out) as i64);
        let inside = local.clone().greater_equal_elem(0).bool_and(local.clone().lower_elem(width));
        let part = block.clone().select(1, local.clamp(0, width - 1)).transpose(); // [tokens, dim]
        let dtype = part.dtype();
        let part = part * inside.float().cast(dtype).unsqueeze_dim::<2>(1);
        rows = Some(match rows {
            None => part,
            Some(sum) => sum + part,
        });
    }
    rows.expect("an embedding table has at least one block")
}
