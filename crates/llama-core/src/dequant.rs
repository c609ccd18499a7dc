//! Dequantization of ggml's tensor encodings (the block formats stored in GGUF files) to f32.
//!
//! Every routine reproduces ggml's reference C code (`dequantize_row_*` in ggml-quants.c) bit
//! for bit: the same f32 operations in the same order, with no fused multiply-add (Rust never
//! contracts `a * b + c` on its own). The unit tests check this against fixtures produced by
//! llama.cpp's Python reference, the `gguf` package (see `scripts/make_dequant_fixtures.py`).
//!
//! All multi-byte fields are little-endian, as in GGUF. Quantized formats are sequences of
//! fixed-size blocks; a tensor's element count must be a whole number of blocks.

use half::f16;
use half::slice::HalfFloatSliceExt;

mod blocks;
mod kquants;
mod legacy;

use blocks::QK_K;

pub use legacy::{quantize_q4_0, quantize_q8_0};

/// Tensors at least this large are split over threads; below it spawning costs more than it saves.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 20;

/// Declares [`GgmlType`] and its per-type facts from one table, so ids, names and block sizes
/// cannot drift apart.
macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $name:literal, $block_elements:expr, $block_bytes:expr;)*) => {
        /// Every ggml tensor type id that can appear in a GGUF file (`enum ggml_type` in ggml.h).
        /// Ids 4, 5, 31-33 and 36-38 belonged to formats ggml has removed and are not listed.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum GgmlType {
            $($variant,)*
        }

        impl GgmlType {
            /// All known types, in id order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant,)*];

            /// The type for a GGUF tensor-info type id, or `None` for an unknown id.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $($id => Some(GgmlType::$variant),)*
                    _ => None,
                }
            }

            /// The numeric id used in GGUF files.
            pub fn id(self) -> u32 {
                match self {
                    $(GgmlType::$variant => $id,)*
                }
            }

            /// ggml's name for the type, as gguf-py spells it ("F32", "Q4_K", "IQ2_XXS", ...).
            pub fn name(self) -> &'static str {
                match self {
                    $(GgmlType::$variant => $name,)*
                }
            }

            /// Elements per block: 1 for plain scalar types, 32 / 64 / 128 / 256 for block formats.
            pub fn block_elements(self) -> usize {
                match self {
                    $(GgmlType::$variant => $block_elements,)*
                }
            }

            /// Bytes per block, known for every type so a GGUF reader can size any tensor.
            pub fn block_bytes(self) -> usize {
                match self {
                    $(GgmlType::$variant => $block_bytes,)*
                }
            }
        }
    };
}

// Sizes as in ggml's type_traits (ggml.c) and gguf-py's GGML_QUANT_SIZES.
ggml_types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 2 + 16;
    Q4_1 = 3, "Q4_1", 32, 2 + 2 + 16;
    Q5_0 = 6, "Q5_0", 32, 2 + 4 + 16;
    Q5_1 = 7, "Q5_1", 32, 2 + 2 + 4 + 16;
    Q8_0 = 8, "Q8_0", 32, 2 + 32;
    Q8_1 = 9, "Q8_1", 32, 4 + 4 + 32;
    Q2K = 10, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4;
    Q3K = 11, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12;
    Q4K = 12, "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12;
    Q5K = 13, "Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12;
    Q6K = 14, "Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16;
    Q8K = 15, "Q8_K", QK_K, 4 + QK_K + QK_K / 8;
    IQ2_XXS = 16, "IQ2_XXS", QK_K, 2 + QK_K / 4;
    IQ2_XS = 17, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32;
    IQ3_XXS = 18, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8;
    IQ1_S = 19, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16;
    IQ4_NL = 20, "IQ4_NL", 32, 2 + 16;
    IQ3_S = 21, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4;
    IQ2_S = 22, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16;
    IQ4_XS = 23, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", QK_K, 2 + 4 * 13;
    TQ2_0 = 35, "TQ2_0", QK_K, 2 + 64;
    MXFP4 = 39, "MXFP4", 32, 1 + 16;
    NVFP4 = 40, "NVFP4", 64, 4 + 32;
    Q1_0 = 41, "Q1_0", 128, 2 + 16;
}

impl GgmlType {
    /// Whether [`dequantize_into`] handles this type.
    pub fn can_dequantize(self) -> bool {
        row_dequantizer(self).is_some()
    }

    /// Byte size of `n_elements` elements, or an error if that is not a whole number of blocks.
    pub fn bytes_for(self, n_elements: usize) -> Result<usize, DequantError> {
        let block_elements = self.block_elements();
        if !n_elements.is_multiple_of(block_elements) {
            return Err(DequantError::PartialBlock { ty: self, n_elements, block_elements });
        }
        (n_elements / block_elements)
            .checked_mul(self.block_bytes())
            .ok_or(DequantError::TooLarge { ty: self, n_elements })
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DequantError {
    #[error("cannot dequantize ggml type {ty} (id {}); supported types: {}", ty.id(), supported_type_names())]
    UnsupportedType { ty: GgmlType },
    #[error("{n_elements} elements is not a whole number of {ty} blocks ({block_elements} elements each)")]
    PartialBlock { ty: GgmlType, n_elements: usize, block_elements: usize },
    #[error("{n_elements} elements of {ty} need {expected} bytes, but {got} bytes were given")]
    ByteLengthMismatch { ty: GgmlType, n_elements: usize, expected: usize, got: usize },
    #[error("{n_elements} elements of {ty} do not fit in memory")]
    TooLarge { ty: GgmlType, n_elements: usize },
}

/// "F32, F16, Q4_0, ...": the types [`dequantize_into`] accepts, for error messages.
fn supported_type_names() -> String {
    let names: Vec<&str> = GgmlType::ALL.iter().filter(|ty| ty.can_dequantize()).map(|ty| ty.name()).collect();
    names.join(", ")
}

/// Dequantize `out.len()` elements stored as `ty` in `bytes` (little-endian, ggml block layout).
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    let threads = if out.len() >= PARALLEL_MIN_ELEMENTS {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    dequantize_into_with_threads(ty, bytes, out, threads)
}

/// Dequantize `n_elements` elements stored as `ty` in `bytes` into a new vector.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>, DequantError> {
    // Validate before allocating, so a bogus element count cannot trigger a huge allocation.
    validate(ty, bytes.len(), n_elements)?;
    let mut out = vec![0.0f32; n_elements];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// Dequantizes a run of whole blocks: `bytes.len() / block_bytes == out.len() / block_elements`.
type RowDequantizer = fn(&[u8], &mut [f32]);

fn row_dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    Some(match ty {
        GgmlType::F32 => dequantize_row_f32,
        GgmlType::F16 => dequantize_row_f16,
        GgmlType::BF16 => dequantize_row_bf16,
        GgmlType::Q4_0 => legacy::dequantize_row_q4_0,
        GgmlType::Q4_1 => legacy::dequantize_row_q4_1,
        GgmlType::Q5_0 => legacy::dequantize_row_q5_0,
        GgmlType::Q5_1 => legacy::dequantize_row_q5_1,
        GgmlType::Q8_0 => legacy::dequantize_row_q8_0,
        GgmlType::Q2K => kquants::dequantize_row_q2_k,
        GgmlType::Q3K => kquants::dequantize_row_q3_k,
        GgmlType::Q4K => kquants::dequantize_row_q4_k,
        GgmlType::Q5K => kquants::dequantize_row_q5_k,
        GgmlType::Q6K => kquants::dequantize_row_q6_k,
        _ => return None,
    })
}

fn validate(ty: GgmlType, n_bytes: usize, n_elements: usize) -> Result<RowDequantizer, DequantError> {
    let row = row_dequantizer(ty).ok_or(DequantError::UnsupportedType { ty })?;
    let expected = ty.bytes_for(n_elements)?;
    if n_bytes != expected {
        return Err(DequantError::ByteLengthMismatch { ty, n_elements, expected, got: n_bytes });
    }
    Ok(row)
}

/// [`dequantize_into`] with an explicit thread count (split on block boundaries), so the
/// tests can exercise uneven splits on small inputs.
fn dequantize_into_with_threads(
    ty: GgmlType,
    bytes: &[u8],
    out: &mut [f32],
    threads: usize,
) -> Result<(), DequantError> {
    let row = validate(ty, bytes.len(), out.len())?;
    let n_blocks = out.len() / ty.block_elements();
    let threads = threads.clamp(1, n_blocks.max(1));
    if threads == 1 {
        row(bytes, out);
        return Ok(());
    }
    let blocks_per_thread = n_blocks.div_ceil(threads);
    let byte_chunks = bytes.chunks(blocks_per_thread * ty.block_bytes());
    let out_chunks = out.chunks_mut(blocks_per_thread * ty.block_elements());
    std::thread::scope(|scope| {
        for (bytes, out) in byte_chunks.zip(out_chunks) {
            scope.spawn(move || row(bytes, out));
        }
    });
    Ok(())
}

fn dequantize_row_f32(bytes: &[u8], out: &mut [f32]) {
    for (x, y) in bytes.chunks_exact(4).zip(out) {
        *y = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
    }
}

/// Converts in runs through half's slice conversion, which uses F16C/NEON vector instructions
/// where available: several times the per-element `to_f32` rate.
fn dequantize_row_f16(bytes: &[u8], out: &mut [f32]) {
    const RUN: usize = 512;
    let mut halves = [f16::ZERO; RUN];
    for (x, y) in bytes.chunks(2 * RUN).zip(out.chunks_mut(RUN)) {
        let halves = &mut halves[..y.len()];
        for (h, b) in halves.iter_mut().zip(x.chunks_exact(2)) {
            *h = f16::from_bits(u16::from_le_bytes([b[0], b[1]]));
        }
        halves.convert_to_f32_slice(y);
    }
}

/// bf16 is the top half of an f32, so widening is a shift (bit-exact, NaN payloads included).
fn dequantize_row_bf16(bytes: &[u8], out: &mut [f32]) {
    for (x, y) in bytes.chunks_exact(2).zip(out) {
        *y = f32::from_bits((u16::from_le_bytes([x[0], x[1]]) as u32) << 16);
    }
}

#[cfg(test)]
mod tests;
