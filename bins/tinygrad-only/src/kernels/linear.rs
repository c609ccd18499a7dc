//! Matrix-vector (decode) and matrix-matrix (prefill) products against weights kept in their
//! GGUF block format, dequantized in registers; the fused gate/up SwiGLU; embedding lookup.
//!
//! One workgroup owns `rows` weight rows; the `lanes` threads of a row each take every
//! `lanes`-th block of 32 weights, dequantize it in registers and multiply it into the running
//! sums of up to [`MAX_TILE`] tokens, so prefill reads each weight once per tile of tokens, not
//! once per token. A shared-memory tree then adds the lanes' sums. [`Layout::for_device`] picks
//! `lanes`: 32 on a GPU (a warp per row, neighbouring threads read neighbouring blocks), 8 on a
//! CPU Vulkan driver (lavapipe's SIMD width), which measured twice as fast there.
//!
//! Block formats all become `w = d·q + m` with an unsigned `q`: Q4_1 stores `m`; Q4_0's is `-8d`
//! and Q8_0's (its signed bytes re-biased by +128 at load) is `-128d`. A lane dequantizes a block
//! into 32 registers once and multiplies it into every token of its tile.

use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::fused::{CubeT, count_launch};

/// How threads are laid out over the weight rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Threads sharing one weight row (a power of two).
    pub lanes: u32,
    /// Weight rows per workgroup.
    pub rows: u32,
}

impl Layout {
    /// GPUs: 32 lanes per row, 4 rows per workgroup. CPU drivers (lavapipe): 8 lanes, its SIMD
    /// width, and 16 rows (measured on the default model's 49152 × 576 Q8_0 output head, in ms:
    /// 32×4 62, 1×64 87, 4×16 42, 8×8 35, 8×16 33, 8×32 32).
    pub fn for_device(is_cpu: bool) -> Self {
        if is_cpu { Layout { lanes: 8, rows: 16 } } else { Layout { lanes: 32, rows: 4 } }
    }
}
/// Most tokens one workgroup multiplies per pass over its rows (prefill).
pub const MAX_TILE: u32 = 8;

/// How a [`super::PackedWeight`]'s bytes are laid out on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// `[rows, cols]` floats (f32 or f16).
    Dense,
    /// 4-bit quants, 4 words per block of 32 (GGUF's nibble order).
    Bits4(Values),
    /// 8-bit quants biased to unsigned, 8 words per block.
    Bits8,
}

/// How a block's quants become weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// `w = d·(q - offset)`, offset 8 (4-bit) or 128 (8-bit): Q4_0, Q8_0, int8.
    Offset,
    /// `w = d·q + m` with a stored minimum per block: Q4_1.
    Min,
    /// `w = d·NF4[q]`, QLoRA's 4-bit NormalFloat levels: `--quantize nf4`.
    Nf4,
}

impl Values {
    /// The kernels' comptime form.
    pub fn mode(self) -> u32 {
        match self {
            Values::Offset => MODE_OFFSET,
            Values::Min => MODE_MIN,
            Values::Nf4 => MODE_NF4,
        }
    }
}

pub const MODE_OFFSET: u32 = 0;
pub const MODE_MIN: u32 = 1;
pub const MODE_NF4: u32 = 2;

/// QLoRA's NormalFloat-4 levels (quantiles of N(0, 1), scaled to [-1, 1]).
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// `NF4_LEVELS[q]` as a chain of selects (no lookup-table binding needed).
#[cube]
fn nf4_level(q: u32) -> f32 {
    let mut level = f32::new(comptime!(NF4_LEVELS[0]));
    #[unroll]
    for i in 1..16u32 {
        level = select(q == i, f32::new(comptime!(NF4_LEVELS[i as usize])), level);
    }
    level
}

/// The minimum `m` of block `block`: stored, or `-offset·d`.
#[cube]
pub fn block_min<S: Float>(
    mins: &Tensor<S>,
    block: usize,
    d: f32,
    #[comptime] bits: u32,
    #[comptime] mode: u32,
) -> f32 {
    let mut m = d * f32::new(comptime!(if bits == 8 { -128.0f32 } else { -8.0f32 }));
    if comptime!(mode == MODE_MIN) {
        m = f32::cast_from(mins[block]);
    }
    m
}

/// The weight quant `q` stands for in a block of scale `d` and minimum `m`.
#[cube]
pub fn weight_value(q: u32, d: f32, m: f32, #[comptime] mode: u32) -> f32 {
    if comptime!(mode == MODE_NF4) { d * nf4_level(q) } else { d * f32::cast_from(q) + m }
}

/// Dequantizes block `block` (32 weights) into the registers `w`: `w = d·q + m`.
#[cube]
pub fn dequantize_block<S: Float>(
    quants: &Tensor<u32>,
    scales: &Tensor<S>,
    mins: &Tensor<S>,
    block: usize,
    w: &mut Array<f32>,
    #[comptime] bits: u32,
    #[comptime] mode: u32,
) {
    let d = f32::cast_from(scales[block]);
    let m = block_min::<S>(mins, block, d, bits, mode);
    let words = comptime!(bits as usize);
    #[unroll]
    for i in 0..words {
        let word = quants[block * words + i];
        #[unroll]
        for byte in 0..4u32 {
            let j = i * 4 + byte as usize;
            if comptime!(bits == 8) {
                w[j] = weight_value((word >> (byte * 8)) & 0xFF, d, m, mode);
            } else {
                // Byte j of a Q4 block holds weight j in its low nibble and weight j + 16 in its high one.
                w[j] = weight_value((word >> (byte * 8)) & 0xF, d, m, mode);
                w[j + 16] = weight_value((word >> (byte * 8 + 4)) & 0xF, d, m, mode);
            }
        }
    }
}

/// Loads 32 dense weights from `w_at` into the registers `w`.
#[cube]
pub fn load_dense_block<W: Float>(weights: &Tensor<W>, w_at: usize, w: &mut Array<f32>) {
    #[unroll]
    for j in 0..32usize {
        w[j] = f32::cast_from(weights[w_at + j]);
    }
}

/// Σ w·x of a block held in registers against `x[x_at .. x_at + 32]`.
#[cube]
fn block_dot<F: Float>(x: &Tensor<F>, x_at: usize, w: &Array<f32>) -> f32 {
    let mut sum = f32::new(0.0);
    #[unroll]
    for j in 0..32usize {
        sum += w[j] * f32::cast_from(x[x_at + j]);
    }
    sum
}

/// Adds the lanes' partial sums of each row and writes `out[token, row]` (or, `gated`,
/// `silu(gate) · up`, the gate sums in `acc` and the up sums in `acc_up`).
#[cube]
fn reduce_and_store<F: Float>(
    acc: &Array<f32>,
    acc_up: &Array<f32>,
    out: &mut Tensor<F>,
    row: usize,
    valid: bool,
    first_token: usize,
    #[comptime] gated: bool,
    #[comptime] tile: u32,
    #[comptime] lanes: u32,
    #[comptime] rows: u32,
) {
    let tokens = out.shape(0);
    let n = out.shape(1);
    let lane = UNIT_POS_X as usize;
    let width = comptime!((lanes * rows) as usize);
    let slot = UNIT_POS_Y as usize * comptime!(lanes as usize) + lane;
    let sums = comptime!(if gated { 2 * tile } else { tile });
    let mut partial = SharedMemory::<f32>::new(comptime!((lanes * rows * MAX_TILE * 2) as usize));
    #[unroll]
    for t in 0..tile {
        partial[t as usize * width + slot] = acc[t as usize];
        if comptime!(gated) {
            partial[(tile + t) as usize * width + slot] = acc_up[t as usize];
        }
    }
    if comptime!(lanes > 1) {
        sync_cube();
        #[unroll]
        for step in 1..comptime!(lanes.trailing_zeros() + 1) {
            let stride = comptime!((lanes >> step) as usize);
            if lane < stride {
                #[unroll]
                for s in 0..sums {
                    let at = s as usize * width + slot;
                    partial[at] += partial[at + stride];
                }
            }
            sync_cube();
        }
    }
    if lane == 0 && valid {
        #[unroll]
        for t in 0..tile {
            let token = first_token + t as usize;
            if token < tokens {
                let mut value = partial[t as usize * width + slot];
                if comptime!(gated) {
                    let up = partial[(tile + t) as usize * width + slot];
                    value = value / (f32::new(1.0) + f32::exp(-value)) * up;
                }
                out[token * n + row] = F::cast_from(value);
            }
        }
    }
}

/// `out = x · Wᵀ` (or `silu(x · Gateᵀ) · (x · Upᵀ)` when `gated`) for one chunk of rows, the
/// weights block-quantized (`bits` 4 or 8: `quants`, `scales`, `mins`) or dense (`bits` 0:
/// `dense`, f32 or f16, `[rows, cols]`); the arguments of the other kind are placeholders.
#[cube(launch)]
fn linear_kernel<F: Float, S: Float, W: Float>(
    x: &Tensor<F>,
    quants: &Tensor<u32>,
    scales: &Tensor<S>,
    mins: &Tensor<S>,
    dense: &Tensor<W>,
    up_quants: &Tensor<u32>,
    up_scales: &Tensor<S>,
    up_mins: &Tensor<S>,
    up_dense: &Tensor<W>,
    out: &mut Tensor<F>,
    first_row: u32,
    chunk_rows: u32,
    #[comptime] bits: u32,
    #[comptime] mode: u32,
    #[comptime] gated: bool,
    #[comptime] tile: u32,
    #[comptime] lanes: u32,
    #[comptime] rows: u32,
    #[define(F, S, W)] _dtypes: [StorageType; 3],
) {
    let tokens = x.shape(0);
    let k = x.shape(1);
    let local_row = (CUBE_POS_X * rows + UNIT_POS_Y) as usize;
    // Rows past the chunk's end still take part in the barriers: they read its last row and
    // write nothing.
    let row_read = min(local_row, chunk_rows as usize - 1);
    let first_token = (CUBE_POS_Y * tile) as usize;
    let blocks = k / 32;
    let mut acc = Array::<f32>::new(comptime!(tile as usize));
    let mut acc_up = Array::<f32>::new(comptime!(tile as usize));
    #[unroll]
    for t in 0..tile {
        acc[t as usize] = f32::new(0.0);
        acc_up[t as usize] = f32::new(0.0);
    }
    // Each block is dequantized into registers once and used for every token of the tile.
    let mut w = Array::<f32>::new(32usize);
    let mut w_up = Array::<f32>::new(32usize);
    let mut b = UNIT_POS_X as usize;
    while b < blocks {
        if comptime!(bits == 0) {
            load_dense_block::<W>(dense, row_read * k + b * 32, &mut w);
            if comptime!(gated) {
                load_dense_block::<W>(up_dense, row_read * k + b * 32, &mut w_up);
            }
        } else {
            let block = row_read * blocks + b;
            dequantize_block::<S>(quants, scales, mins, block, &mut w, bits, mode);
            if comptime!(gated) {
                dequantize_block::<S>(up_quants, up_scales, up_mins, block, &mut w_up, bits, mode);
            }
        }
        #[unroll]
        for t in 0..tile {
            let x_at = min(first_token + t as usize, tokens - 1) * k + b * 32;
            acc[t as usize] += block_dot::<F>(x, x_at, &w);
            if comptime!(gated) {
                acc_up[t as usize] += block_dot::<F>(x, x_at, &w_up);
            }
        }
        b += comptime!(lanes as usize);
    }
    if comptime!(bits == 0) {
        // Inputs past the last whole block of 32 (dense weights may have any width).
        let mut c = blocks * 32 + UNIT_POS_X as usize;
        while c < k {
            #[unroll]
            for t in 0..tile {
                let x_c = f32::cast_from(x[min(first_token + t as usize, tokens - 1) * k + c]);
                acc[t as usize] += f32::cast_from(dense[row_read * k + c]) * x_c;
                if comptime!(gated) {
                    acc_up[t as usize] += f32::cast_from(up_dense[row_read * k + c]) * x_c;
                }
            }
            c += comptime!(lanes as usize);
        }
    }
    let row = first_row as usize + local_row;
    let valid = local_row < chunk_rows as usize;
    reduce_and_store::<F>(&acc, &acc_up, out, row, valid, first_token, gated, tile, lanes, rows);
}

/// Rows of one chunk of a block-quantized table, dequantized: for each pair `(token, row)` in
/// `picks`, `out[token, c] = W[row, c]`.
#[cube(launch)]
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
    let t = picks[2 * pair] as usize;
    let row = picks[2 * pair + 1] as usize;
    let k = out.shape(1);
    let words = comptime!(bits as usize);
    let mut c = UNIT_POS_X as usize;
    while c < k {
        let block = row * (k / 32) + c / 32;
        let j = c % 32;
        let q = if comptime!(bits == 8) {
            (quants[block * words + j / 4] >> (((j % 4) * 8) as u32)) & 0xFF
        } else {
            let within = j % 16;
            let shift = ((within % 4) * 8 + (j / 16) * 4) as u32;
            (quants[block * words + within / 4] >> shift) & 0xF
        };
        let d = f32::cast_from(scales[block]);
        let m = block_min::<S>(mins, block, d, bits, mode);
        out[t * k + c] = F::cast_from(weight_value(q, d, m, mode));
        c += CUBE_DIM_X as usize;
    }
}

/// The same for one chunk of a dense table.
#[cube(launch)]
fn embed_dense_kernel<F: Float, W: Float>(
    picks: &Tensor<u32>,
    w: &Tensor<W>,
    out: &mut Tensor<F>,
    first_pair: u32,
    #[define(F, W)] _dtypes: [StorageType; 2],
) {
    let pair = (first_pair + CUBE_POS_X) as usize;
    let t = picks[2 * pair] as usize;
    let row = picks[2 * pair + 1] as usize;
    let k = out.shape(1);
    let mut c = UNIT_POS_X as usize;
    while c < k {
        out[t * k + c] = F::cast_from(w[row * k + c]);
        c += CUBE_DIM_X as usize;
    }
}

/// One run of whole rows of a weight, small enough for one storage binding.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Dense: the values. Blocks: the quants as u32 words.
    pub data: CubeT,
    /// One scale `d` per block of 32 (block formats).
    pub scales: Option<CubeT>,
    /// One minimum `m` per block of 32 (Q4_1).
    pub mins: Option<CubeT>,
    pub rows: usize,
}

/// A `[rows, cols]` weight on the device, as the kernels above read it: split by rows into
/// chunks, because wgpu binds a tensor as one storage buffer and drivers cap those (lavapipe:
/// 128 MiB; Llama 3's embedding is 263 MB even in Q8_0).
#[derive(Debug, Clone)]
pub struct DeviceWeight {
    pub packing: Packing,
    pub chunks: Vec<Chunk>,
    /// Rows in every chunk but the last.
    pub rows_per_chunk: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Packing {
    /// `(bits, mode)` of a block format.
    pub fn block_format(self) -> Option<(u32, u32)> {
        match self {
            Packing::Dense => None,
            Packing::Bits4(values) => Some((4, values.mode())),
            Packing::Bits8 => Some((8, MODE_OFFSET)),
        }
    }
}

/// A one-element stand-in for an argument a kernel variant never reads (wgpu needs every binding).
fn placeholder(like: &CubeT) -> CubeT {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), Shape::new([1]), like.dtype)
}

impl Chunk {
    fn scales(&self) -> CubeT {
        self.scales.clone().expect("block formats have scales")
    }

    fn mins(&self) -> CubeT {
        self.mins.clone().unwrap_or_else(|| placeholder(&self.scales()))
    }
}

/// The four tensors a chunk gives the kernel: quants, scales, mins, dense values (placeholders
/// for the kind it is not).
pub fn kernel_args(chunk: &Chunk, like: &CubeT) -> [CubeT; 4] {
    match &chunk.scales {
        Some(scales) => [
            chunk.data.clone(),
            scales.clone(),
            chunk.mins.clone().unwrap_or_else(|| placeholder(scales)),
            placeholder(like),
        ],
        None => [placeholder(&chunk.data), placeholder(like), placeholder(like), chunk.data.clone()],
    }
}

/// `x · Wᵀ` for `x` `[tokens, cols]` contiguous; with `up`, `silu(x · Wᵀ) · (x · Upᵀ)`.
pub fn linear(x: CubeT, weight: &DeviceWeight, up: Option<&DeviceWeight>, layout: Layout) -> CubeT {
    let tokens = x.meta.shape()[0];
    if tokens >= super::prefill::MIN_TOKENS && weight.cols % 32 == 0 {
        return super::prefill::linear(x, weight, up);
    }
    let out =
        empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([tokens, weight.rows]), x.dtype);
    let tile = if tokens == 1 { 1 } else { MAX_TILE };
    let Layout { lanes, rows } = layout;
    let (bits, mode) = weight.packing.block_format().unwrap_or((0, MODE_OFFSET));
    for (i, chunk) in weight.chunks.iter().enumerate() {
        let [quants, scales, mins, dense] = kernel_args(chunk, &x);
        let [up_quants, up_scales, up_mins, up_dense] = match up {
            Some(up) => kernel_args(&up.chunks[i], &x),
            None => [&quants, &scales, &mins, &dense].map(placeholder),
        };
        let dtypes = [x.dtype.into(), scales.dtype.into(), dense.dtype.into()];
        let count =
            CubeCount::Static(chunk.rows.div_ceil(rows as usize) as u32, tokens.div_ceil(tile as usize) as u32, 1);
        count_launch();
        linear_kernel::launch::<burn_wgpu::WgpuRuntime>(
            &x.client,
            count,
            CubeDim::new_2d(lanes, rows),
            x.clone().into_tensor_arg(),
            quants.into_tensor_arg(),
            scales.into_tensor_arg(),
            mins.into_tensor_arg(),
            dense.into_tensor_arg(),
            up_quants.into_tensor_arg(),
            up_scales.into_tensor_arg(),
            up_mins.into_tensor_arg(),
            up_dense.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            (i * weight.rows_per_chunk) as u32,
            chunk.rows as u32,
            bits,
            mode,
            up.is_some(),
            tile,
            lanes,
            rows,
            dtypes,
        );
    }
    out
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
            None => embed_dense_kernel::launch::<burn_wgpu::WgpuRuntime>(
                &client,
                count,
                dim,
                picks.clone().into_tensor_arg(),
                chunk.data.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                first_pair,
                [dtype.into(), chunk.data.dtype.into()],
            ),
            Some((bits, mode)) => embed_quant_kernel::launch::<burn_wgpu::WgpuRuntime>(
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
            ),
        }
    }
    out
}
