//! How a matmul weight lives on the device, and how kernels read it back into registers.
//!
//! Block formats all become `w = d·q + m` with an unsigned `q`: Q4_1 stores `m`; Q4_0's is `-8d`
//! and Q8_0's (its signed bytes re-biased by +128 at load) is `-128d`; NF4 looks `q` up in its
//! 16 levels. `pack.rs` lays the file's bytes out this way on the host.
//!
//! The K-quants keep their 256-weight super-blocks whole, as the file has them: Q4_K's 6-bit
//! sub-block scales and minimums, Q6_K's split low/high bits and int8 scales are decoded here, in
//! registers, for the one block of 32 a thread is reading.

use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::fused::CubeT;

/// How a [`DeviceWeight`]'s bytes are laid out on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// `[rows, cols]` floats (f32 or f16).
    Dense,
    /// 4-bit quants, 4 words per block of 32 (GGUF's nibble order).
    Bits4(Values),
    /// 8-bit quants biased to unsigned, 8 words per block.
    Bits8,
    /// GGUF's Q4_K super-block: 35 words (12 bytes of packed 6-bit scales and minimums, then 128
    /// bytes of nibbles); `d` and `dmin` per super-block in the scales and mins planes.
    Q4K,
    /// GGUF's Q6_K super-block: 52 words (128 bytes of low nibbles, 64 of high bit pairs, 16
    /// int8 scales biased to unsigned); `d` per super-block in the scales plane.
    Q6K,
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
/// The K-quants, whose format alone says how to decode them (`bits` 4 and 6).
pub const MODE_Q4K: u32 = 3;
pub const MODE_Q6K: u32 = 4;

/// Words per 256-weight super-block on the device.
pub const Q4K_WORDS: usize = 35;
pub const Q6K_WORDS: usize = 52;

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
pub(super) fn nf4_level(q: u32) -> f32 {
    let mut level = f32::new(comptime!(NF4_LEVELS[0]));
    #[unroll]
    for i in 1..16u32 {
        level = select(q == i, f32::new(comptime!(NF4_LEVELS[i as usize])), level);
    }
    level
}

/// The minimum `m` of block `block`: stored, or `-offset·d`.
#[cube]
pub(super) fn block_min<S: Float>(
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
fn weight_value(q: u32, d: f32, m: f32, #[comptime] mode: u32) -> f32 {
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
    if comptime!(mode == MODE_Q4K) {
        dequantize_q4k_block::<S>(quants, scales, mins, block, w);
    } else if comptime!(mode == MODE_Q6K) {
        dequantize_q6k_block::<S>(quants, scales, block, w);
    } else {
        dequantize_legacy_block::<S>(quants, scales, mins, block, w, bits, mode);
    }
}

/// Byte `i` of the words starting at `word_at`.
#[cube]
fn byte_at(quants: &Tensor<u32>, word_at: usize, i: usize) -> u32 {
    (quants[word_at + i / 4] >> (((i % 4) * 8) as u32)) & 0xFF
}

/// Block `block` of 32 from Q4_K super-blocks: sub-block `j` of super-block `block / 8` has
/// scale `d·sc_j` and minimum `-dmin·m_j`, its 6-bit `sc_j` and `m_j` packed as ggml's
/// `get_scale_min_k4` reads them, and its nibbles in the low (even `j`) or high (odd `j`) half
/// of the 32 bytes that sub-blocks `j & !1` and `j | 1` share.
#[cube]
fn dequantize_q4k_block<S: Float>(
    quants: &Tensor<u32>,
    scales: &Tensor<S>,
    mins: &Tensor<S>,
    block: usize,
    w: &mut Array<f32>,
) {
    let super_block = block / 8;
    let j = block % 8;
    let at = super_block * Q4K_WORDS;
    // Bytes j and j + 4 hold pair j < 4; pair j ≥ 4 takes its low bits from byte j + 4 and its
    // top two from bytes j - 4 (scale) and j (min). All three reads are in range for any j < 8.
    let byte_j = byte_at(quants, at, j);
    let byte_j4 = byte_at(quants, at, j + 4);
    let byte_low = byte_at(quants, at, j % 4);
    let low = j < 4;
    let sc = select(low, byte_j & 63, (byte_j4 & 0xF) | ((byte_low >> 6) << 4));
    let m = select(low, byte_j4 & 63, (byte_j4 >> 4) | ((byte_j >> 6) << 4));
    let scale = f32::cast_from(scales[super_block]) * f32::cast_from(sc);
    let min = f32::cast_from(mins[super_block]) * f32::cast_from(m);
    let nibbles_at = at + 3 + (j / 2) * 8;
    let shift = ((j % 2) * 4) as u32;
    #[unroll]
    for i in 0..8usize {
        let word = quants[nibbles_at + i] >> shift;
        #[unroll]
        for byte in 0..4u32 {
            w[i * 4 + byte as usize] = scale * f32::cast_from((word >> (byte * 8)) & 0xF) - min;
        }
    }
}

/// Block `block` of 32 from Q6_K super-blocks: `w = d·sc·(q - 32)`, the 6-bit `q` made of a
/// nibble from the low-bits plane and two bits from the high-bits plane, one int8 scale `sc` per
/// 16 weights. Sub-block `j` is quarter `j % 4` of half `j / 4` in ggml's `dequantize_row_q6_K`.
#[cube]
fn dequantize_q6k_block<S: Float>(quants: &Tensor<u32>, scales: &Tensor<S>, block: usize, w: &mut Array<f32>) {
    let super_block = block / 8;
    let j = block % 8;
    let half = j / 4;
    let quarter = j % 4;
    let at = super_block * Q6K_WORDS;
    let low_at = at + half * 16 + (quarter % 2) * 8;
    let low_shift = ((quarter / 2) * 4) as u32;
    let high_at = at + 32 + half * 8;
    let high_shift = (quarter * 2) as u32;
    let scale_index = half * 8 + quarter * 2;
    let d = f32::cast_from(scales[super_block]);
    let scale_first = d * (f32::cast_from(byte_at(quants, at + 48, scale_index)) - f32::new(128.0));
    let scale_second = d * (f32::cast_from(byte_at(quants, at + 48, scale_index + 1)) - f32::new(128.0));
    #[unroll]
    for i in 0..8usize {
        let low = quants[low_at + i] >> low_shift;
        let high = quants[high_at + i] >> high_shift;
        let scale = if comptime!(i < 4) { scale_first } else { scale_second };
        #[unroll]
        for byte in 0..4u32 {
            let q = ((low >> (byte * 8)) & 0xF) | (((high >> (byte * 8)) & 3) << 4);
            w[i * 4 + byte as usize] = scale * (f32::cast_from(q) - f32::new(32.0));
        }
    }
}

/// The 32-weight formats: Q8_0, Q4_0, Q4_1, int8, nf4.
#[cube]
fn dequantize_legacy_block<S: Float>(
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

/// One run of whole rows of a weight, small enough for one storage binding.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Dense: the values. Blocks: the quants as u32 words.
    pub data: CubeT,
    /// One scale `d` per block of 32 (block formats; K-quants: per super-block).
    pub scales: Option<CubeT>,
    /// One minimum `m` per block of 32 (Q4_1; Q4_K: `dmin` per super-block).
    pub mins: Option<CubeT>,
    pub rows: usize,
}

/// A `[rows, cols]` weight on the device, as the kernels read it: split by rows into
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
            Packing::Q4K => Some((4, MODE_Q4K)),
            Packing::Q6K => Some((6, MODE_Q6K)),
        }
    }
}

/// A one-element stand-in for an argument a kernel variant never reads (wgpu needs every binding).
pub fn placeholder(like: &CubeT) -> CubeT {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), Shape::new([1]), like.dtype)
}

impl Chunk {
    pub fn scales(&self) -> CubeT {
        self.scales.clone().expect("block formats have scales")
    }

    pub fn mins(&self) -> CubeT {
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
