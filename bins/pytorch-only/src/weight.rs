//! How pytorch-only keeps a matmul weight: transposed, split by outputs into one slice per CPU
//! thread, and the products against it.

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use burn_tch::LibTorchDevice;
use llama_core::dequant::{self, DequantError};
use llama_core::kernels::RawWeight;
use llama_core::kernels::composed::transpose;

use crate::ops::{Tch, raw, wrap};

///
/// On a CPU a single token's product is a weighted sum of the rows of that layout,
/// `Σᵢ xᵢ · Wᵀ[i, ..]`, one sum per slice: exactly `embedding_bag(mode = sum)` with `x` as the
/// per-sample weights, which runs FBGEMM's vectorised row-sum kernel, one bag per thread, at the
/// memory bound, where MKL takes its generic (non-AVX) `sgemv` on this AMD CPU (docs/pytorch.md
/// has the numbers). `bags` holds that call's fixed row indices and bag offsets.
#[derive(Debug, Clone)]
pub struct TchWeight {
    stacked: Tensor<Tch, 3>,
    bags: Option<RowBags>,
}

/// `indices` `0 .. parts · in` and `offsets` `[0, in, 2·in, ..]`: bag p sums slice p's rows.
#[derive(Debug, Clone)]
struct RowBags {
    indices: Tensor<Tch, 1, Int>,
    offsets: Tensor<Tch, 1, Int>,
}

impl TchWeight {
    fn new(stacked: Tensor<Tch, 3>) -> Self {
        let [parts, cols, _] = stacked.dims();
        let device = stacked.device();
        let bags = (device == LibTorchDevice::Cpu).then(|| RowBags {
            indices: Tensor::arange(0..(parts * cols) as i64, &device),
            offsets: Tensor::arange_step(0..(parts * cols) as i64, cols, &device),
        });
        Self { stacked, bags }
    }

    fn raw(&self) -> tch::Tensor {
        raw(self.stacked.clone())
    }

    /// `x` `[1, in]` times the weight on a CPU, as one `embedding_bag` (see the type's docs);
    /// `[parts, cols, slice]` are the weight's dims, which the caller has already read.
    fn row_sum(&self, x: tch::Tensor, bags: &RowBags, [parts, cols, slice]: [i64; 3]) -> tch::Tensor {
        let table = self.raw().view([parts * cols, slice]);
        let (indices, offsets) =
            (bags.indices.clone().into_primitive().tensor, bags.offsets.clone().into_primitive().tensor);
        let x = x.reshape([cols]);
        // One copy of x per bag (`cat` is a cheaper call than `repeat` at this size).
        let weights = if parts == 1 { x } else { tch::Tensor::cat(&vec![&x; parts as usize], 0) };
        const SUM: i64 = 0;
        let (out, ..) = tch::Tensor::embedding_bag(&table, &indices, &offsets, false, SUM, false, Some(weights), false);
        out.view([1, parts * slice])
    }
}

/// Output slices for a weight of `out` rows on `device`.
fn parts_for(out: usize, device: &LibTorchDevice) -> usize {
    let threads = match device {
        LibTorchDevice::Cpu => tch::get_num_threads().max(1) as usize,
        _ => 1,
    };
    if out.is_multiple_of(threads) { threads } else { 1 }
}

impl TchWeight {
    /// Dequantizes `raw` to f32 on the host; `Tensor::from_data` converts it to the device's float
    /// dtype (--dtype / --half).
    pub fn load(raw: RawWeight<'_>, device: &LibTorchDevice) -> Result<Self, DequantError> {
        let (out, cols) = (raw.rows, raw.cols);
        let values = dequant::dequantize(raw.ggml_type, raw.bytes, out * cols)?;
        let parts = parts_for(out, device);
        let slice = out / parts;
        let stacked: Vec<f32> = values.chunks(slice * cols).flat_map(|rows| transpose(rows, slice, cols)).collect();
        Ok(Self::new(Tensor::from_data(TensorData::new(stacked, [parts, cols, slice]), device)))
    }

    pub fn random(rows: usize, cols: usize, std: f64, device: &LibTorchDevice) -> Self {
        let parts = parts_for(rows, device);
        Self::new(Tensor::random([parts, cols, rows / parts], Distribution::Normal(0.0, std), device))
    }

    pub fn bytes(&self) -> usize {
        self.stacked.shape().num_elements() * self.stacked.dtype().size()
    }

    /// `x · Wᵀ`: `[tokens, in]` → `[tokens, out]`.
    pub fn linear(&self, x: Tensor<Tch, 2>) -> Tensor<Tch, 2> {
        let [tokens, cols] = x.dims();
        let [parts, _, slice] = self.stacked.dims();
        let x = raw(x);
        if let (1, Some(bags)) = (tokens, &self.bags) {
            return wrap(self.row_sum(x, bags, [parts, cols, slice].map(|d| d as i64)));
        }
        let w = self.raw();
        if parts == 1 {
            return wrap(x.mm(&w.select(0, 0)));
        }
        let out = x.unsqueeze(0).expand([parts as i64, tokens as i64, cols as i64], false).bmm(&w);
        // [parts, tokens, slice] → [tokens, parts · slice]: a view for one token, a copy for more.
        let out = if tokens == 1 { out } else { out.permute([1, 0, 2]) };
        wrap(out.reshape([tokens as i64, (parts * slice) as i64]))
    }

    /// Rows `ids` of the weight as an embedding table, `[tokens, in]`, copies (never aliasing the
    /// table, which Burn may later write into in place).
    pub fn rows(&self, ids: &[u32]) -> Tensor<Tch, 2> {
        let slice = self.stacked.dims()[2];
        let table = self.raw();
        // Token `id` is column `id % slice` of slice `id / slice`; `stack` copies.
        let rows: Vec<tch::Tensor> = ids
            .iter()
            .map(|&id| table.select(0, (id as usize / slice) as i64).select(1, (id as usize % slice) as i64))
            .collect();
        wrap(tch::Tensor::stack(&rows, 0))
    }

    /// [`Self::rows`] for ids on the device, `[tokens]`.
    pub fn rows_at(&self, ids: Tensor<Tch, 1, Int>) -> Tensor<Tch, 2> {
        let slice = self.stacked.dims()[2] as i64;
        let ids = ids.into_primitive().tensor;
        // Slice `id / slice`, column `id % slice`: advanced indexing on dims 0 and 2 puts the
        // ids first, [tokens, dim], as a copy.
        let (slices, columns) = (ids.floor_divide_scalar(slice), ids.remainder(slice));
        wrap(self.raw().index(&[Some(slices), None, Some(columns)]))
    }
}
