//! How a matmul weight lives on the device, and how kernels read it back into registers.
//!
//! Block formats all become `w = d·q + m` with an unsigned `q`: Q4_1 stores `m`; Q4_0's is `-8d`
//! and Q8_0's (its signed bytes re-biased by +128 at load) is `-128d`; NF4 looks `q` up in its
//! 16 levels. `pack.rs` lays the file's bytes out this way on the host.
//!
//! The K-quants keep their 256-weight super-blocks whole, as the file has them: Q4_K's 6-bit
//! sub-block scales and minimums, Q6_K's split low/high bits and int8 scales are decoded here, in
//! registers, for the one block of 32 a thread is reading.

use burn_wgpu::WgpuRuntime;
use cubecl::prelude::*;

use super::stream::CubeT;

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

/// A block format as the kernels' comptime argument: `bits` per quant (4, 6 or 8) and `mode`,
/// how quants become weights (`MODE_*`). Dense weights are `bits` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockFormat {
    pub bits: u32,
    pub mode: u32,
}

impl BlockFormat {
    /// What a dense weight passes: its kernels never read it.
    pub const DENSE: BlockFormat = BlockFormat { bits: 0, mode: MODE_OFFSET };
}

/// A chunk of a block format as one kernel argument: quant words, a scale per block (K-quants:
/// per super-block), and a minimum where the format stores one (Q4_1, Q4_K), else unbound.
#[derive(CubeLaunch, CubeType)]
pub struct Blocks<S: Float> {
    pub quants: Tensor<u32>,
    pub scales: Tensor<S>,
    pub mins: ComptimeOption<Tensor<S>>,
}

/// A chunk of any packing as one kernel argument: its blocks or its dense values `[rows, cols]`
/// (f32 or f16); the kind it is not is unbound.
#[derive(CubeLaunch, CubeType)]
pub struct Packed<S: Float, W: Float> {
    pub blocks: ComptimeOption<Blocks<S>>,
    pub dense: ComptimeOption<Tensor<W>>,
}

/// The minimum `m` of block `block`: stored, or for the formats without one, `-offset·d`.
#[cube]
pub(super) fn block_min<S: Float>(
    mins: &ComptimeOption<Tensor<S>>,
    block: usize,
    d: f32,
    #[comptime] bits: u32,
) -> f32 {
    let mut m = d * f32::new(comptime!(if bits == 8 { -128.0f32 } else { -8.0f32 }));
    #[comptime]
    if let ComptimeOption::Some(mins) = mins {
        m = f32::cast_from(mins[block]);
    }
    m
}

/// The weight quant `q` stands for in a block of scale `d` and minimum `m`.
#[cube]
fn weight_value(q: u32, d: f32, m: f32, #[comptime] mode: u32) -> f32 {
    if comptime!(mode == MODE_NF4) { d * nf4_level(q) } else { d * f32::cast_from(q) + m }
}

/// Loads block `b` of 32 weights of chunk row `row` (of `cols`) into the registers `w`:
/// dequantized (`w = d·q + m`), or read from the dense values.
#[cube]
pub fn load_block<S: Float, W: Float>(
    weights: &Packed<S, W>,
    row: usize,
    b: usize,
    cols: usize,
    w: &mut Array<f32>,
    #[comptime] format: BlockFormat,
) {
    #[comptime]
    if let ComptimeOption::Some(dense) = &weights.dense {
        let at = row * cols + b * 32;
        #[unroll]
        for j in 0..32usize {
            w[j] = f32::cast_from(dense[at + j]);
        }
    }
    #[comptime]
    if let ComptimeOption::Some(blocks) = &weights.blocks {
        dequantize_block::<S>(blocks, row * (cols / 32) + b, w, format);
    }
}

/// Dequantizes block `block` (32 weights) into the registers `w`: `w = d·q + m`.
#[cube]
pub fn dequantize_block<S: Float>(
    blocks: &Blocks<S>,
    block: usize,
    w: &mut Array<f32>,
    #[comptime] format: BlockFormat,
) {
    if comptime!(format.mode == MODE_Q4K) {
        dequantize_q4k_block::<S>(blocks, block, w);
    } else if comptime!(format.mode == MODE_Q6K) {
        dequantize_q6k_block::<S>(&blocks.quants, &blocks.scales, block, w);
    } else {
        dequantize_legacy_block::<S>(blocks, block, w, format);
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
fn dequantize_q4k_block<S: Float>(blocks: &Blocks<S>, block: usize, w: &mut Array<f32>) {
    let quants = &blocks.quants;
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
    let scale = f32::cast_from(blocks.scales[super_block]) * f32::cast_from(sc);
    // Q4_K always stores its `dmin` (`pack.rs`).
    let mut dmin = f32::new(0.0);
    #[comptime]
    if let ComptimeOption::Some(mins) = &blocks.mins {
        dmin = f32::cast_from(mins[super_block]);
    }
    let min = dmin * f32::cast_from(m);
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
    blocks: &Blocks<S>,
    block: usize,
    w: &mut Array<f32>,
    #[comptime] format: BlockFormat,
) {
    let (bits, mode) = comptime!((format.bits, format.mode));
    let d = f32::cast_from(blocks.scales[block]);
    let m = block_min::<S>(&blocks.mins, block, d, bits);
    let words = comptime!(bits as usize);
    #[unroll]
    for i in 0..words {
        let word = blocks.quants[block * words + i];
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
    /// The comptime format of a block packing; `None` for dense weights.
    pub fn block_format(self) -> Option<BlockFormat> {
        let (bits, mode) = match self {
            Packing::Dense => return None,
            Packing::Bits4(values) => (4, values.mode()),
            Packing::Bits8 => (8, MODE_OFFSET),
            Packing::Q4K => (4, MODE_Q4K),
            Packing::Q6K => (6, MODE_Q6K),
        };
        Some(BlockFormat { bits, mode })
    }
}

/// `t` as a kernel argument (the launch holds its own handle).
pub fn tensor_arg(t: &CubeT) -> TensorArg<WgpuRuntime> {
    t.clone().into_tensor_arg()
}

impl Chunk {
    /// The dtypes of a [`Packed`] argument, `[S, W]`: the scales' and the dense values'. The kind
    /// the chunk is not takes `like`'s, as nothing of it is bound.
    pub fn dtypes(&self, like: &CubeT) -> [StorageType; 2] {
        match &self.scales {
            Some(scales) => [scales.dtype.into(), like.dtype.into()],
            None => [like.dtype.into(), self.data.dtype.into()],
        }
    }

    /// The chunk's blocks as one kernel argument; `None` for a dense chunk.
    pub fn blocks_arg<S: Float>(&self) -> Option<BlocksLaunch<S, WgpuRuntime>> {
        let scales = self.scales.as_ref()?;
        Some(BlocksLaunch::new(tensor_arg(&self.data), tensor_arg(scales), self.mins.as_ref().map(tensor_arg).into()))
    }

    /// The chunk, blocks or dense values, as one kernel argument.
    pub fn packed_arg<S: Float, W: Float>(&self) -> PackedLaunch<S, W, WgpuRuntime> {
        let dense = if self.scales.is_none() { Some(tensor_arg(&self.data)) } else { None };
        PackedLaunch::new(self.blocks_arg().into(), dense.into())
    }
}
