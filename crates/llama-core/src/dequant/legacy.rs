//! The legacy 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): dequantization, and the
//! Q8_0 and Q4_0 quantizers (random-weight models, test weights).
//!
//! Blocks hold one f16 scale `d` (and a min `m` for the _1 kinds). The 16 `qs` bytes hold element
//! j in the low nibble of byte j and element j + 16 in the high nibble. The 5-bit kinds keep the
//! fifth bits in a little-endian u32 `qh`, bit j for element j.

use half::f16;

use super::blocks::{QK_LEGACY, f16_at, whole_blocks};

/// Bytes of a Q8_0 block (an f16 scale, 32 quants) and of a Q4_0 block (an f16 scale, 16 bytes of nibbles).
const Q8_0_BLOCK_BYTES: usize = 34;
const Q4_0_BLOCK_BYTES: usize = 18;

/// `block_q4_0`: d: f16 | qs[16]. value = (q - 8) * d.
pub(super) fn dequantize_row_q4_0(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in whole_blocks::<18, QK_LEGACY>(bytes, out) {
        let d = f16_at(block, 0);
        let (y_lo, y_hi) = y.split_at_mut(16);
        for ((y_lo, y_hi), &q) in y_lo.iter_mut().zip(y_hi).zip(&block[2..18]) {
            *y_lo = ((q & 0x0F) as i32 - 8) as f32 * d;
            *y_hi = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// `block_q4_1`: d: f16 | m: f16 | qs[16]. value = q * d + m.
pub(super) fn dequantize_row_q4_1(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in whole_blocks::<20, QK_LEGACY>(bytes, out) {
        let d = f16_at(block, 0);
        let m = f16_at(block, 2);
        let (y_lo, y_hi) = y.split_at_mut(16);
        for ((y_lo, y_hi), &q) in y_lo.iter_mut().zip(y_hi).zip(&block[4..20]) {
            *y_lo = (q & 0x0F) as f32 * d + m;
            *y_hi = (q >> 4) as f32 * d + m;
        }
    }
}

/// Fifth bits for elements `j` and `j + 16`, each already shifted to bit 4 (worth 16).
#[inline(always)]
fn q5_high_bits(qh: u32, j: usize) -> (u8, u8) {
    ((((qh >> j) << 4) & 0x10) as u8, ((qh >> (j + 12)) & 0x10) as u8)
}

/// `block_q5_0`: d: f16 | qh: u32 | qs[16]. value = (q - 16) * d.
pub(super) fn dequantize_row_q5_0(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in whole_blocks::<22, QK_LEGACY>(bytes, out) {
        let d = f16_at(block, 0);
        let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let (y_lo, y_hi) = y.split_at_mut(16);
        for (j, ((y_lo, y_hi), &q)) in y_lo.iter_mut().zip(y_hi).zip(&block[6..22]).enumerate() {
            let (high_lo, high_hi) = q5_high_bits(qh, j);
            *y_lo = (((q & 0x0F) | high_lo) as i32 - 16) as f32 * d;
            *y_hi = (((q >> 4) | high_hi) as i32 - 16) as f32 * d;
        }
    }
}

/// `block_q5_1`: d: f16 | m: f16 | qh: u32 | qs[16]. value = q * d + m.
pub(super) fn dequantize_row_q5_1(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in whole_blocks::<24, QK_LEGACY>(bytes, out) {
        let d = f16_at(block, 0);
        let m = f16_at(block, 2);
        let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
        let (y_lo, y_hi) = y.split_at_mut(16);
        for (j, ((y_lo, y_hi), &q)) in y_lo.iter_mut().zip(y_hi).zip(&block[8..24]).enumerate() {
            let (high_lo, high_hi) = q5_high_bits(qh, j);
            *y_lo = ((q & 0x0F) | high_lo) as f32 * d + m;
            *y_hi = ((q >> 4) | high_hi) as f32 * d + m;
        }
    }
}

/// `block_q8_0`: d: f16 | qs[32]: i8. value = q * d.
pub(super) fn dequantize_row_q8_0(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in whole_blocks::<34, QK_LEGACY>(bytes, out) {
        let d = f16_at(block, 0);
        for (y, &q) in y.iter_mut().zip(&block[2..34]) {
            *y = (q as i8) as f32 * d;
        }
    }
}

/// ggml's `MAX(a, b)` macro (`a > b ? a : b`), kept rather than `f32::max` so a NaN input
/// behaves as in the reference.
#[inline(always)]
fn c_max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// Quantize to Q8_0 exactly as ggml's `quantize_row_q8_0_ref`: per 32 elements,
/// d = max|x| / 127 and q = round-half-away-from-zero(x / d).
///
/// # Panics
/// If `src.len()` is not a multiple of 32.
pub fn quantize_q8_0(src: &[f32]) -> Vec<u8> {
    assert!(src.len().is_multiple_of(QK_LEGACY), "Q8_0 needs a multiple of 32 elements, got {}", src.len());
    let mut out = Vec::with_capacity(src.len() / QK_LEGACY * Q8_0_BLOCK_BYTES);
    for x in src.chunks_exact(QK_LEGACY) {
        let amax = x.iter().fold(0.0f32, |amax, &v| c_max(amax, v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        // `f32::round` rounds half away from zero, like C's roundf.
        out.extend(x.iter().map(|&v| ((v * id).round() as i8) as u8));
    }
    out
}

/// Quantize to Q4_0 exactly as ggml's `quantize_row_q4_0_ref`: per 32 elements, d is the
/// signed value of largest magnitude (first one on ties) divided by -8, and
/// q = min(15, trunc(x / d + 8.5)).
///
/// # Panics
/// If `src.len()` is not a multiple of 32.
pub fn quantize_q4_0(src: &[f32]) -> Vec<u8> {
    assert!(src.len().is_multiple_of(QK_LEGACY), "Q4_0 needs a multiple of 32 elements, got {}", src.len());
    let mut out = Vec::with_capacity(src.len() / QK_LEGACY * Q4_0_BLOCK_BYTES);
    for x in src.chunks_exact(QK_LEGACY) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        // C converts through int8_t (truncation), then clamps to 15.
        let quantize = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        let (lo, hi) = x.split_at(QK_LEGACY / 2);
        out.extend(lo.iter().zip(hi).map(|(&a, &b)| quantize(a) | (quantize(b) << 4)));
    }
    out
}

// Tests live in dequant/tests.rs to keep this file readable.
