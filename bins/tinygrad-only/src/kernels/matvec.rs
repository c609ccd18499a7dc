//! One token times dense (f16/f32) weights, the decode step's matrix-vector product, read in
//! vectors: the lanes of a row read neighbouring vectors of it, so one load instruction of a warp
//! covers one contiguous span of the row (256 bytes of f16 at 4 values per vector). The block
//! kernel in `linear.rs` gives each lane a whole block of 32 scalars instead, which suits
//! quantized blocks (one scale per block) but, for dense rows, costs a load per value and
//! streamed f16 at about 450 GB/s on an H200 (docs/benchmarks/2026-11-27-gpu-h200.md).

use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::fused::{CubeT, count_launch};
use super::linear::{Layout, reduce_and_store};
use super::weights::DeviceWeight;

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

/// `out[0, first_row + r] = Σ_c x[c] · w[r, c]` over one chunk of rows (or, `gated`,
/// `silu(x · w_r) · (x · up_r)`), `x`, `weights` and `up` read as vectors of `N` values.
#[cube(launch)]
fn matvec_kernel<F: Float, W: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    weights: &Tensor<Vector<W, N>>,
    up: &Tensor<Vector<W, N>>,
    out: &mut Tensor<F>,
    first_row: u32,
    chunk_rows: u32,
    #[comptime] gated: bool,
    #[comptime] lanes: u32,
    #[comptime] rows: u32,
    #[define(F, W)] _dtypes: [StorageType; 2],
) {
    let per_row = x.shape(1) / N::value();
    let local_row = (CUBE_POS_X * rows + UNIT_POS_Y) as usize;
    // Rows past the chunk's end still take part in the barriers: they read its last row and
    // write nothing.
    let start = min(local_row, chunk_rows as usize - 1) * per_row;
    let step = comptime!(lanes as usize);
    let mut sum = Vector::<f32, N>::new(f32::new(0.0));
    let mut sum_up = Vector::<f32, N>::new(f32::new(0.0));
    let mut c = UNIT_POS_X as usize;
    // Four vectors per pass, loaded before they are multiplied: each lane keeps four reads in
    // flight rather than waiting out one load's latency per vector.
    while c + 3 * step < per_row {
        let x0 = Vector::<f32, N>::cast_from(x[c]);
        let x1 = Vector::<f32, N>::cast_from(x[c + step]);
        let x2 = Vector::<f32, N>::cast_from(x[c + 2 * step]);
        let x3 = Vector::<f32, N>::cast_from(x[c + 3 * step]);
        sum += four_products::<W, N>(weights, start + c, step, x0, x1, x2, x3);
        if comptime!(gated) {
            sum_up += four_products::<W, N>(up, start + c, step, x0, x1, x2, x3);
        }
        c += 4 * step;
    }
    while c < per_row {
        let xc = Vector::<f32, N>::cast_from(x[c]);
        sum += Vector::<f32, N>::cast_from(weights[start + c]) * xc;
        if comptime!(gated) {
            sum_up += Vector::<f32, N>::cast_from(up[start + c]) * xc;
        }
        c += step;
    }
    let mut acc = Array::<f32>::new(1usize);
    let mut acc_up = Array::<f32>::new(1usize);
    acc[0] = f32::new(0.0);
    acc_up[0] = f32::new(0.0);
    #[unroll]
    for k in 0..N::value() {
        acc[0] += sum[k];
        acc_up[0] += sum_up[k];
    }
    let valid = local_row < chunk_rows as usize;
    reduce_and_store::<F>(&acc, &acc_up, out, first_row as usize + local_row, valid, 0usize, gated, 1u32, lanes, rows);
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

/// `x · Wᵀ` for one token `x` `[1, cols]` (contiguous) against dense weights; with `up`,
/// `silu(x · Wᵀ) · (x · Upᵀ)`.
pub fn matvec(x: CubeT, weight: &DeviceWeight, up: Option<&DeviceWeight>, layout: Layout) -> CubeT {
    let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([1, weight.rows]), x.dtype);
    let Layout { lanes, rows } = layout;
    for (i, chunk) in weight.chunks.iter().enumerate() {
        let up_data = up.map_or(&chunk.data, |up| &up.chunks[i].data);
        let size = vector_size(&x, &chunk.data, weight.cols);
        count_launch();
        matvec_kernel::launch::<burn_wgpu::WgpuRuntime>(
            &x.client,
            CubeCount::Static(chunk.rows.div_ceil(rows as usize) as u32, 1, 1),
            CubeDim::new_2d(lanes, rows),
            size,
            x.clone().into_tensor_arg(),
            chunk.data.clone().into_tensor_arg(),
            up_data.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            (i * weight.rows_per_chunk) as u32,
            chunk.rows as u32,
            up.is_some(),
            lanes,
            rows,
            [x.dtype.into(), chunk.data.dtype.into()],
        );
    }
    out
}
