//! How a matmul weight lives on the device, and how kernels read it back into registers.
//!
//! Block formats all become `w = d·q + m` with an unsigned `q`: Q4_1 stores `m`; Q4_0's is `-8d`
//! and Q8_0's (its signed bytes re-biased by +128 at load) is `-128d`; NF4 looks `q` up in its
//! 16 levels. `pack.rs` lays the file's bytes out this way on the host.

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
