//! GGUF bytes → the device layout the kernels read ([`super::weights`]), on the host, once at load.
//!
//! A Q8_0/Q4_0/Q4_1 block is a 2-byte f16 scale (Q4_1: and a 2-byte minimum) followed by its
//! quants, so in the file the quants of consecutive blocks sit at 2-byte-aligned offsets; WGSL
//! reads 4-byte words. We split each block into planes: the quants as whole u32 words (bytes in
//! file order, so Q4's nibble layout is GGUF's), and the scales (and minimums) as f16 arrays.
//! Same bits per weight as the file (8.5 for Q8_0, 4.5 for Q4_0, 5 for Q4_1), nothing expanded.
//! A K-quant super-block (Q4_K 144 bytes, Q6_K 210) likewise becomes its packed scales and
//! quants as words, in file order, and its f16 `d` (and Q4_K's `dmin`) as planes: 4.5 and 6.5625
//! bits per weight, as in the file. Formats the kernels do not read yet (Q5_x, Q2_K, Q3_K, BF16)
//! are dequantized to dense f32.
//!
//! `--quantize` turns an f32/f16/bf16 file's weights into one of tinygrad's formats in the same
//! planes: int8 (one scale per row, repeated per block of 32 so the Q8_0 kernel reads it), nf4
//! (QLoRA's 16 NormalFloat levels, one scale per 64 weights, repeated per 32), or f16.

use half::f16;
use llama_core::dequant::{self, DequantError, GgmlType};

use super::weights::{NF4_LEVELS, Packing, Q4K_WORDS, Q6K_WORDS, Values};

fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// How float weights (f32, f16, bf16) are stored on the device (`--quantize`); quantized files
/// keep their own format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantize {
    /// 8-bit integers with one scale per weight row.
    Int8,
    /// 4-bit NormalFloat levels in blocks of 64 with an f16 scale each.
    Nf4,
    /// f16 (the dense kernels' half path).
    Float16,
}

/// The kernels' packing for a GGUF type, under `--quantize` (which applies to float weights only).
pub fn packing_for(ty: GgmlType, quantize: Option<Quantize>) -> Packing {
    match (is_float(ty), quantize) {
        (true, Some(Quantize::Int8)) => Packing::Bits8,
        (true, Some(Quantize::Nf4)) => Packing::Bits4(Values::Nf4),
        (true, Some(Quantize::Float16)) => Packing::Dense,
        _ => match ty {
            GgmlType::Q8_0 => Packing::Bits8,
            GgmlType::Q4_0 => Packing::Bits4(Values::Offset),
            GgmlType::Q4_1 => Packing::Bits4(Values::Min),
            GgmlType::Q4K => Packing::Q4K,
            GgmlType::Q6K => Packing::Q6K,
            _ => Packing::Dense,
        },
    }
}

/// One chunk of whole rows, laid out for the device.
pub enum HostChunk {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Blocks { quants: Vec<u32>, scales: Vec<f16>, mins: Option<Vec<f16>> },
}

fn f16_at(bytes: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// Lays out `bytes` (whole rows of `cols`, in `ty`) for the device, quantized as `quantize` says.
pub fn pack(ty: GgmlType, quantize: Option<Quantize>, bytes: &[u8], cols: usize) -> Result<HostChunk, DequantError> {
    let elements = bytes.len() / ty.bytes_for(cols)? * cols;
    let blocks = elements / 32;
    if let (true, Some(q)) = (is_float(ty), quantize) {
        let values = dequant::dequantize(ty, bytes, elements)?;
        return Ok(match q {
            Quantize::Float16 => HostChunk::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
            Quantize::Int8 => int8_rows(&values, cols),
            Quantize::Nf4 => nf4_blocks(&values),
        });
    }
    Ok(match ty {
        GgmlType::F16 => HostChunk::F16((0..elements).map(|i| f16_at(bytes, 2 * i)).collect()),
        GgmlType::Q8_0 => {
            let mut quants = Vec::with_capacity(blocks * 8);
            let mut scales = Vec::with_capacity(blocks);
            for block in bytes.chunks_exact(34) {
                scales.push(f16_at(block, 0));
                // Signed bytes + 128 = unsigned, so the kernel's w = d·q + m holds with m = -128·d.
                let biased: Vec<u8> = block[2..].iter().map(|b| b ^ 0x80).collect();
                quants.extend(words(&biased));
            }
            HostChunk::Blocks { quants, scales, mins: None }
        }
        GgmlType::Q4_0 => {
            let mut quants = Vec::with_capacity(blocks * 4);
            let mut scales = Vec::with_capacity(blocks);
            for block in bytes.chunks_exact(18) {
                scales.push(f16_at(block, 0));
                quants.extend(words(&block[2..]));
            }
            HostChunk::Blocks { quants, scales, mins: None }
        }
        GgmlType::Q4_1 => {
            let mut quants = Vec::with_capacity(blocks * 4);
            let mut scales = Vec::with_capacity(blocks);
            let mut mins = Vec::with_capacity(blocks);
            for block in bytes.chunks_exact(20) {
                scales.push(f16_at(block, 0));
                mins.push(f16_at(block, 2));
                quants.extend(words(&block[4..]));
            }
            HostChunk::Blocks { quants, scales, mins: Some(mins) }
        }
        GgmlType::Q4K => {
            let super_blocks = elements / 256;
            let mut quants = Vec::with_capacity(super_blocks * Q4K_WORDS);
            let mut scales = Vec::with_capacity(super_blocks);
            let mut mins = Vec::with_capacity(super_blocks);
            for block in bytes.chunks_exact(144) {
                scales.push(f16_at(block, 0));
                mins.push(f16_at(block, 2));
                quants.extend(words(&block[4..]));
            }
            HostChunk::Blocks { quants, scales, mins: Some(mins) }
        }
        GgmlType::Q6K => {
            let super_blocks = elements / 256;
            let mut quants = Vec::with_capacity(super_blocks * Q6K_WORDS);
            let mut scales = Vec::with_capacity(super_blocks);
            for block in bytes.chunks_exact(210) {
                // The int8 sub-block scales + 128 = unsigned, as Q8_0's quants.
                let mut planes = block[..208].to_vec();
                planes[192..].iter_mut().for_each(|b| *b ^= 0x80);
                quants.extend(words(&planes));
                scales.push(f16_at(block, 208));
            }
            HostChunk::Blocks { quants, scales, mins: None }
        }
        other => HostChunk::F32(dequant::dequantize(other, bytes, elements)?),
    })
}

/// Symmetric int8, one scale per row of `cols` (`d = max|w| / 127`), biased to unsigned bytes.
fn int8_rows(values: &[f32], cols: usize) -> HostChunk {
    let mut quants = Vec::with_capacity(values.len() / 4);
    let mut scales = Vec::with_capacity(values.len() / 32);
    for row in values.chunks_exact(cols) {
        let d = f16::from_f32(row.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0);
        let inverse = if d.to_f32() > 0.0 { 1.0 / d.to_f32() } else { 0.0 };
        let biased: Vec<u8> =
            row.iter().map(|&v| ((v * inverse).round().clamp(-127.0, 127.0) as i32 + 128) as u8).collect();
        quants.extend(words(&biased));
        scales.extend(std::iter::repeat_n(d, cols / 32));
    }
    HostChunk::Blocks { quants, scales, mins: None }
}

/// NF4: per 64 weights `d = max|w|` and each weight's nearest level of `w / d`; nibbles in GGUF's
/// Q4 order within each half of 32.
fn nf4_blocks(values: &[f32]) -> HostChunk {
    let mut quants = Vec::with_capacity(values.len() / 8);
    let mut scales = Vec::with_capacity(values.len() / 32);
    for block in values.chunks(64) {
        let d = f16::from_f32(block.iter().fold(0.0f32, |a, v| a.max(v.abs())));
        let inverse = if d.to_f32() > 0.0 { 1.0 / d.to_f32() } else { 0.0 };
        let nearest = |v: f32| {
            let x = v * inverse;
            (0..16).min_by(|&a, &b| (NF4_LEVELS[a] - x).abs().total_cmp(&(NF4_LEVELS[b] - x).abs())).unwrap_or(7) as u8
        };
        for half in block.chunks(32) {
            let (low, high) = half.split_at(16);
            let bytes: Vec<u8> = low.iter().zip(high).map(|(&a, &b)| nearest(a) | (nearest(b) << 4)).collect();
            quants.extend(words(&bytes));
            scales.push(d);
        }
    }
    HostChunk::Blocks { quants, scales, mins: None }
}

/// The weights a packed chunk stands for, on the host: what the kernels compute with.
pub fn unpack(chunk: &HostChunk, packing: Packing) -> Vec<f32> {
    match chunk {
        HostChunk::F32(values) => values.clone(),
        HostChunk::F16(values) => values.iter().map(|v| v.to_f32()).collect(),
        HostChunk::Blocks { quants, scales, mins } if matches!(packing, Packing::Q4K | Packing::Q6K) => {
            unpack_k_quant(quants, scales, mins.as_deref(), packing)
        }
        HostChunk::Blocks { quants, scales, mins } => {
            let bytes: Vec<u8> = quants.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut out = Vec::with_capacity(scales.len() * 32);
            for (b, d) in scales.iter().map(|d| d.to_f32()).enumerate() {
                let m = mins.as_ref().map(|m| m[b].to_f32());
                let value = |q: u8| match packing {
                    Packing::Bits4(Values::Nf4) => d * NF4_LEVELS[q as usize],
                    Packing::Bits8 => d * q as f32 - 128.0 * d,
                    _ => d * q as f32 + m.unwrap_or(-8.0 * d),
                };
                match packing {
                    Packing::Bits8 => out.extend(bytes[b * 32..(b + 1) * 32].iter().map(|&q| value(q))),
                    _ => {
                        let block = &bytes[b * 16..(b + 1) * 16];
                        out.extend(block.iter().map(|&q| value(q & 0xF)));
                        out.extend(block.iter().map(|&q| value(q >> 4)));
                    }
                }
            }
            out
        }
    }
}

/// K-quant planes put back into the file's super-blocks and dequantized as llama-core does.
fn unpack_k_quant(quants: &[u32], scales: &[f16], mins: Option<&[f16]>, packing: Packing) -> Vec<f32> {
    let bytes: Vec<u8> = quants.iter().flat_map(|w| w.to_le_bytes()).collect();
    let (ty, words) = if packing == Packing::Q4K { (GgmlType::Q4K, Q4K_WORDS) } else { (GgmlType::Q6K, Q6K_WORDS) };
    let mut file = Vec::with_capacity(scales.len() * ty.block_bytes());
    for (i, planes) in bytes.chunks_exact(words * 4).enumerate() {
        if ty == GgmlType::Q4K {
            file.extend(scales[i].to_le_bytes());
            file.extend(mins.expect("Q4_K has dmin")[i].to_le_bytes());
            file.extend(planes);
        } else {
            file.extend(&planes[..192]);
            file.extend(planes[192..].iter().map(|b| b ^ 0x80));
            file.extend(scales[i].to_le_bytes());
        }
    }
    dequant::dequantize(ty, &file, scales.len() * 256).expect("whole super-blocks")
}

/// Device bytes per weight row, to size chunks.
pub fn device_row_bytes(packing: Packing, ty: GgmlType, quantize: Option<Quantize>, cols: usize) -> usize {
    match packing {
        Packing::Dense if ty == GgmlType::F16 || quantize == Some(Quantize::Float16) => 2 * cols,
        Packing::Dense => 4 * cols,
        // The largest plane is the quants: one byte per weight (8-bit), half a byte (4-bit).
        Packing::Bits8 => cols,
        Packing::Bits4(_) => cols / 2,
        Packing::Q4K => cols / 256 * Q4K_WORDS * 4,
        Packing::Q6K => cols / 256 * Q6K_WORDS * 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i / 64) as f32)).collect()
    }

    #[test]
    fn int8_rows_are_within_half_a_step() {
        let (values, cols) = (sample(4 * 96), 96);
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let chunk = pack(GgmlType::F32, Some(Quantize::Int8), &bytes, cols).unwrap();
        let unpacked = unpack(&chunk, Packing::Bits8);
        for (row, (got, want)) in unpacked.chunks(cols).zip(values.chunks(cols)).enumerate() {
            let step = want.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= step * 0.51, "row {row}: {g} vs {w} (step {step})");
            }
        }
    }

    #[test]
    fn nf4_picks_the_nearest_level() {
        let values = sample(128);
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let chunk = pack(GgmlType::F32, Some(Quantize::Nf4), &bytes, 128).unwrap();
        let unpacked = unpack(&chunk, Packing::Bits4(Values::Nf4));
        for (block, (got, want)) in unpacked.chunks(64).zip(values.chunks(64)).enumerate() {
            let d = f16::from_f32(want.iter().fold(0.0f32, |a, v| a.max(v.abs()))).to_f32();
            for (g, w) in got.iter().zip(want) {
                let best = NF4_LEVELS.iter().map(|l| (l * d - w).abs()).fold(f32::INFINITY, f32::min);
                assert!(((g - w).abs() - best).abs() < 1e-6, "block {block}: {g} for {w}");
            }
        }
    }

    #[test]
    fn q8_0_blocks_split_into_biased_words_and_scales() {
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 7.0).collect();
        let bytes = dequant::quantize_q8_0(&values);
        let HostChunk::Blocks { quants, scales, mins } = pack(GgmlType::Q8_0, None, &bytes, 64).unwrap() else {
            panic!("Q8_0 packs into blocks")
        };
        assert_eq!((quants.len(), scales.len(), mins.is_none()), (16, 2, true));
        let dense = dequant::dequantize(GgmlType::Q8_0, &bytes, 64).unwrap();
        for (i, &expected) in dense.iter().enumerate() {
            let q = (quants[i / 4] >> ((i % 4) * 8)) & 0xFF;
            let d = scales[i / 32].to_f32();
            assert_eq!(d * q as f32 - 128.0 * d, expected, "weight {i}");
        }
    }

    #[test]
    fn q4_1_keeps_gguf_nibble_order() {
        // Block: d = 0.5, m = -1, byte j = weight j (low nibble) | weight j + 16 (high nibble).
        let mut block = vec![];
        block.extend(f16::from_f32(0.5).to_le_bytes());
        block.extend(f16::from_f32(-1.0).to_le_bytes());
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let HostChunk::Blocks { quants, scales, mins } = pack(GgmlType::Q4_1, None, &block, 32).unwrap() else {
            panic!("Q4_1 packs into blocks")
        };
        let dense = dequant::dequantize(GgmlType::Q4_1, &block, 32).unwrap();
        let (d, m) = (scales[0].to_f32(), mins.unwrap()[0].to_f32());
        for (j, &expected) in dense.iter().enumerate() {
            let within = j % 16;
            let q = (quants[within / 4] >> ((within % 4) * 8 + (j / 16) * 4)) & 0xF;
            assert_eq!(d * q as f32 + m, expected, "weight {j}");
        }
    }

    /// Every byte pattern of a super-block (random bytes, small scales) round-trips, and the
    /// planes hold the file's bytes at the file's size.
    #[test]
    fn k_quant_super_blocks_keep_their_bytes() {
        for (ty, packing, words) in [(GgmlType::Q4K, Packing::Q4K, Q4K_WORDS), (GgmlType::Q6K, Packing::Q6K, Q6K_WORDS)]
        {
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut bytes: Vec<u8> = (0..3 * ty.block_bytes())
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            for block in bytes.chunks_exact_mut(ty.block_bytes()) {
                let at = if ty == GgmlType::Q4K { 0 } else { 208 };
                block[at..at + 2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
            }
            let chunk = pack(ty, None, &bytes, 256).unwrap();
            let HostChunk::Blocks { quants, scales, .. } = &chunk else { panic!("{ty:?} packs into blocks") };
            assert_eq!((quants.len(), scales.len()), (3 * words, 3));
            assert_eq!(quants.len() * 4 + scales.len() * 2 * (1 + (ty == GgmlType::Q4K) as usize), bytes.len());
            assert_eq!(unpack(&chunk, packing), dequant::dequantize(ty, &bytes, 3 * 256).unwrap(), "{ty:?}");
        }
    }
}
