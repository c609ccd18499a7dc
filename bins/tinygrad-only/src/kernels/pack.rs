//! GGUF bytes → the device layout [`super::linear`] reads, on the host, once at load.
//!
//! A Q8_0/Q4_0/Q4_1 block is a 2-byte f16 scale (Q4_1: and a 2-byte minimum) followed by its
//! quants, so in the file the quants of consecutive blocks sit at 2-byte-aligned offsets; WGSL
//! reads 4-byte words. We split each block into planes: the quants as whole u32 words (bytes in
//! file order, so Q4's nibble layout is GGUF's), and the scales (and minimums) as f16 arrays.
//! Same bits per weight as the file (8.5 for Q8_0, 4.5 for Q4_0, 5 for Q4_1), nothing expanded.
//! Formats the kernels do not read yet (the K-quants, Q5_x, BF16) are dequantized to dense f32.

use half::f16;
use llama_core::dequant::{self, DequantError, GgmlType};

use super::linear::Packing;

/// The kernels' packing for a GGUF type.
pub fn packing_for(ty: GgmlType) -> Packing {
    match ty {
        GgmlType::Q8_0 => Packing::Bits8,
        GgmlType::Q4_0 => Packing::Bits4 { has_min: false },
        GgmlType::Q4_1 => Packing::Bits4 { has_min: true },
        _ => Packing::Dense,
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

/// Lays out `bytes` (whole rows, `elements` weights, in `ty`) for the device.
pub fn pack(ty: GgmlType, bytes: &[u8], elements: usize) -> Result<HostChunk, DequantError> {
    let blocks = elements / 32;
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
        other => HostChunk::F32(dequant::dequantize(other, bytes, elements)?),
    })
}

/// Device bytes per weight row, to size chunks.
pub fn device_row_bytes(ty: GgmlType, cols: usize) -> usize {
    match packing_for(ty) {
        Packing::Dense if ty == GgmlType::F16 => 2 * cols,
        Packing::Dense => 4 * cols,
        // The largest plane is the quants: one byte per weight (Q8), half a byte (Q4).
        Packing::Bits8 => cols,
        Packing::Bits4 { .. } => cols / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_blocks_split_into_biased_words_and_scales() {
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 7.0).collect();
        let bytes = dequant::quantize_q8_0(&values);
        let HostChunk::Blocks { quants, scales, mins } = pack(GgmlType::Q8_0, &bytes, 64).unwrap() else {
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
        let HostChunk::Blocks { quants, scales, mins } = pack(GgmlType::Q4_1, &block, 32).unwrap() else {
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
}
