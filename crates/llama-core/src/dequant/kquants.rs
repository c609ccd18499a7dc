//! The K-quant formats (Q2_K .. Q6_K): 256-element super-blocks made of 16- or 32-element
//! sub-blocks, each with its own small integer scale (and, for some, min) that multiplies one
//! or two f16 super-block factors.
//!
//! Each function mirrors `dequantize_row_q*_K` in ggml-quants.c operation for operation, so
//! the f32 results are bit-identical: the sub-block factor is computed first
//! (`d * scale`, `dmin * min`) and then applied as `factor * q - offset`, never fused or
//! reassociated. Within each super-block ggml walks the output in 128-element halves; the
//! loops below keep that shape so the bit-plane indexing reads like the C.

use super::blocks::{QK_K, f16_at, whole_blocks};

/// `block_q2_K`: scales[16] | qs[64] | d: f16 | dmin: f16  (84 bytes).
///
/// Each scales byte is one 16-element sub-block: low nibble scales `d`, high nibble scales
/// `dmin`. qs holds 2-bit values; byte `l` of a 32-byte group carries four elements, one per
/// 2-bit plane, and plane `j` of the group fills output elements `32*j .. 32*j + 32`.
pub(super) fn dequantize_row_q2_k(bytes: &[u8], out: &mut [f32]) {
    const BLOCK_BYTES: usize = 84;
    for (block, y) in whole_blocks::<BLOCK_BYTES, QK_K>(bytes, out) {
        let scales = &block[0..16];
        let qs = &block[16..80];
        let d = f16_at(block, 80);
        let dmin = f16_at(block, 82);

        for half in 0..2 {
            let q = &qs[32 * half..32 * half + 32];
            for plane in 0..4 {
                let shift = 2 * plane;
                for sub in 0..2 {
                    let sc = scales[8 * half + 2 * plane + sub];
                    let dl = d * (sc & 0x0F) as f32;
                    let ml = dmin * (sc >> 4) as f32;
                    let y = &mut y[128 * half + 32 * plane + 16 * sub..][..16];
                    let q = &q[16 * sub..16 * sub + 16];
                    for (y, &q) in y.iter_mut().zip(q) {
                        *y = dl * ((q >> shift) & 3) as f32 - ml;
                    }
                }
            }
        }
    }
}

/// Unpack Q3_K's sixteen 6-bit sub-block scales from 12 bytes. Bytes 0..8 hold the low
/// nibbles (scale j < 8 in the low nibble of byte j, scale j >= 8 in the high nibble of byte
/// j - 8); bytes 8..12 hold the top two bits, scale j in bits `2*(j/4)..` of byte `8 + j%4`.
/// The stored value is biased by 32, so the result is in -32..=31.
fn unpack_q3_k_scales(packed: &[u8]) -> [i32; 16] {
    let mut scales = [0i32; 16];
    for (j, scale) in scales.iter_mut().enumerate() {
        let low = if j < 8 { packed[j] & 0x0F } else { packed[j - 8] >> 4 };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *scale = (low | (high << 4)) as i32 - 32;
    }
    scales
}

/// `block_q3_K`: hmask[32] | qs[64] | scales[12] | d: f16  (110 bytes).
///
/// Elements are 3-bit: two low bits in qs (same plane layout as Q2_K) and a high bit in
/// hmask, where bit `b` of hmask byte `l` belongs to element `32*b + l`. A *clear* high bit
/// means "subtract 4", so values are -4..=3. Sub-blocks are 16 elements with signed scales.
pub(super) fn dequantize_row_q3_k(bytes: &[u8], out: &mut [f32]) {
    const BLOCK_BYTES: usize = 110;
    for (block, y) in whole_blocks::<BLOCK_BYTES, QK_K>(bytes, out) {
        let hmask = &block[0..32];
        let qs = &block[32..96];
        let scales = unpack_q3_k_scales(&block[96..108]);
        let d_all = f16_at(block, 108);

        for half in 0..2 {
            let q = &qs[32 * half..32 * half + 32];
            for plane in 0..4 {
                let shift = 2 * plane;
                let high_bit = 1u8 << (4 * half + plane);
                for sub in 0..2 {
                    let dl = d_all * scales[8 * half + 2 * plane + sub] as f32;
                    let y = &mut y[128 * half + 32 * plane + 16 * sub..][..16];
                    let q = &q[16 * sub..16 * sub + 16];
                    let hm = &hmask[16 * sub..16 * sub + 16];
                    for ((y, &q), &hm) in y.iter_mut().zip(q).zip(hm) {
                        let low = ((q >> shift) & 3) as i32;
                        let offset = if hm & high_bit != 0 { 0 } else { 4 };
                        *y = dl * (low - offset) as f32;
                    }
                }
            }
        }
    }
}

/// ggml's `get_scale_min_k4`: Q4_K/Q5_K pack eight 6-bit (scale, min) pairs into 12 bytes.
/// Pairs 0..4 sit in the low 6 bits of bytes 0..4 (scale) and 4..8 (min). Pairs 4..8 take
/// their low 4 bits from byte `j + 4` (scale: low nibble, min: high nibble) and their top 2
/// bits from the spare top bits of bytes `j - 4` (scale) and `j` (min).
fn scale_min_k4(j: usize, packed: &[u8]) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        let scale = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
        let min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
        (scale, min)
    }
}

/// `block_q4_K`: d: f16 | dmin: f16 | scales[12] | qs[128]  (144 bytes).
///
/// Eight 32-element sub-blocks, value = d*scale * q - dmin*min with q in 0..=15. Each
/// 32-byte run of qs covers 64 elements: low nibbles first, then high nibbles.
pub(super) fn dequantize_row_q4_k(bytes: &[u8], out: &mut [f32]) {
    const BLOCK_BYTES: usize = 144;
    for (block, y) in whole_blocks::<BLOCK_BYTES, QK_K>(bytes, out) {
        let d = f16_at(block, 0);
        let dmin = f16_at(block, 2);
        let scales = &block[4..16];
        let qs = &block[16..144];

        for chunk in 0..4 {
            let (sc_lo, m_lo) = scale_min_k4(2 * chunk, scales);
            let (sc_hi, m_hi) = scale_min_k4(2 * chunk + 1, scales);
            let (d_lo, min_lo) = (d * sc_lo as f32, dmin * m_lo as f32);
            let (d_hi, min_hi) = (d * sc_hi as f32, dmin * m_hi as f32);
            let q = &qs[32 * chunk..32 * chunk + 32];
            let (y_lo, y_hi) = y[64 * chunk..64 * chunk + 64].split_at_mut(32);
            for ((y_lo, y_hi), &q) in y_lo.iter_mut().zip(y_hi).zip(q) {
                *y_lo = d_lo * (q & 0x0F) as f32 - min_lo;
                *y_hi = d_hi * (q >> 4) as f32 - min_hi;
            }
        }
    }
}

/// `block_q5_K`: d: f16 | dmin: f16 | scales[12] | qh[32] | qs[128]  (176 bytes).
///
/// Q4_K plus a fifth bit: bit `b` of qh byte `l` is the high bit (worth 16) of element
/// `32*b + l`, so 64-element chunk `c` uses bits `2c` (low nibbles) and `2c + 1` (high).
pub(super) fn dequantize_row_q5_k(bytes: &[u8], out: &mut [f32]) {
    const BLOCK_BYTES: usize = 176;
    for (block, y) in whole_blocks::<BLOCK_BYTES, QK_K>(bytes, out) {
        let d = f16_at(block, 0);
        let dmin = f16_at(block, 2);
        let scales = &block[4..16];
        let qh = &block[16..48];
        let qs = &block[48..176];

        for chunk in 0..4 {
            let (sc_lo, m_lo) = scale_min_k4(2 * chunk, scales);
            let (sc_hi, m_hi) = scale_min_k4(2 * chunk + 1, scales);
            let (d_lo, min_lo) = (d * sc_lo as f32, dmin * m_lo as f32);
            let (d_hi, min_hi) = (d * sc_hi as f32, dmin * m_hi as f32);
            let bit_lo = 1u8 << (2 * chunk);
            let bit_hi = 2u8 << (2 * chunk);
            let q = &qs[32 * chunk..32 * chunk + 32];
            let (y_lo, y_hi) = y[64 * chunk..64 * chunk + 64].split_at_mut(32);
            for (((y_lo, y_hi), &q), &h) in y_lo.iter_mut().zip(y_hi).zip(q).zip(qh) {
                let q_lo = (q & 0x0F) + if h & bit_lo != 0 { 16 } else { 0 };
                let q_hi = (q >> 4) + if h & bit_hi != 0 { 16 } else { 0 };
                *y_lo = d_lo * q_lo as f32 - min_lo;
                *y_hi = d_hi * q_hi as f32 - min_hi;
            }
        }
    }
}

/// `block_q6_K`: ql[128] | qh[64] | scales[16]: i8 | d: f16  (210 bytes).
///
/// 6-bit values biased by 32, in 16-element sub-blocks with signed 8-bit scales. Per
/// 128-element half: ql bytes `l` and `l + 32` give the low nibbles of elements `l`,
/// `l + 32` (low nibble) and `l + 64`, `l + 96` (high nibble); qh byte `l` gives the top two
/// bits of those four elements in bits 0-1, 2-3, 4-5 and 6-7.
pub(super) fn dequantize_row_q6_k(bytes: &[u8], out: &mut [f32]) {
    const BLOCK_BYTES: usize = 210;
    for (block, y) in whole_blocks::<BLOCK_BYTES, QK_K>(bytes, out) {
        let d = f16_at(block, 208);
        for half in 0..2 {
            let ql = &block[64 * half..64 * half + 64];
            let qh = &block[128 + 32 * half..128 + 32 * half + 32];
            let sc = &block[192 + 8 * half..192 + 8 * half + 8];
            let y = &mut y[128 * half..128 * half + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                // ggml computes `d * sc[is] * q`, i.e. (d * scale) * q, left to right.
                y[l] = d * sc[is] as i8 as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
            }
        }
    }
}
