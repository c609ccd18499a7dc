//! What every ggml block format's decoder shares: the block sizes, fixed-size block views and
//! the f16 reader.

use half::f16;

/// Elements per K-quant super-block (ggml's `QK_K`).
pub(super) const QK_K: usize = 256;
/// Elements per block of the legacy formats Q4_0 .. Q8_0 (ggml's `QK4_0`, `QK8_0`, ...).
pub(super) const QK_LEGACY: usize = 32;

/// Pairs each `BLOCK_BYTES`-byte block with its `BLOCK_ELEMENTS` outputs as fixed-size arrays,
/// so the per-format loops index without bounds checks.
pub(super) fn whole_blocks<'a, const BLOCK_BYTES: usize, const BLOCK_ELEMENTS: usize>(
    bytes: &'a [u8],
    out: &'a mut [f32],
) -> impl Iterator<Item = (&'a [u8; BLOCK_BYTES], &'a mut [f32; BLOCK_ELEMENTS])> {
    debug_assert_eq!(bytes.len() / BLOCK_BYTES, out.len() / BLOCK_ELEMENTS);
    bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK_ELEMENTS))
        .map(|(block, y)| (block.try_into().expect("exact chunk"), y.try_into().expect("exact chunk")))
}

/// The little-endian f16 at `offset`, widened to f32 (exact; NaNs stay NaN).
#[inline(always)]
pub(super) fn f16_at(bytes: &[u8], offset: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[offset], bytes[offset + 1]])).to_f32()
}
