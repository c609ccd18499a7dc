//! Unit tests for `dequant`: bit-exact agreement with gguf-py's reference on the fixtures in
//! tests/fixtures/dequant (made by scripts/make_dequant_fixtures.py), error cases, sizes and
//! the quantizers.

use super::*;

/// One fixture file from tests/fixtures/dequant (made by scripts/make_dequant_fixtures.py).
macro_rules! fixture {
    ($file:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dequant/", $file))
    };
}

/// (type, raw blocks, reference f32 output from gguf-py's `dequantize`).
const FIXTURES: &[(GgmlType, &[u8], &[u8])] = &[
    (GgmlType::F32, fixture!("F32.bin"), fixture!("F32.f32")),
    (GgmlType::F16, fixture!("F16.bin"), fixture!("F16.f32")),
    (GgmlType::BF16, fixture!("BF16.bin"), fixture!("BF16.f32")),
    (GgmlType::Q4_0, fixture!("Q4_0.bin"), fixture!("Q4_0.f32")),
    (GgmlType::Q4_1, fixture!("Q4_1.bin"), fixture!("Q4_1.f32")),
    (GgmlType::Q5_0, fixture!("Q5_0.bin"), fixture!("Q5_0.f32")),
    (GgmlType::Q5_1, fixture!("Q5_1.bin"), fixture!("Q5_1.f32")),
    (GgmlType::Q8_0, fixture!("Q8_0.bin"), fixture!("Q8_0.f32")),
    (GgmlType::Q2K, fixture!("Q2_K.bin"), fixture!("Q2_K.f32")),
    (GgmlType::Q3K, fixture!("Q3_K.bin"), fixture!("Q3_K.f32")),
    (GgmlType::Q4K, fixture!("Q4_K.bin"), fixture!("Q4_K.f32")),
    (GgmlType::Q5K, fixture!("Q5_K.bin"), fixture!("Q5_K.f32")),
    (GgmlType::Q6K, fixture!("Q6_K.bin"), fixture!("Q6_K.f32")),
];

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Bitwise equality, except that any NaN matches any NaN (f16 -> f32 may quiet a NaN).
fn assert_bit_identical(ty: GgmlType, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{ty}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
        assert!(same, "{ty}: element {i}: got {g:e} ({:#010x}), reference {w:e} ({:#010x})", g.to_bits(), w.to_bits());
    }
}

fn fixture_for(ty: GgmlType) -> (&'static [u8], Vec<f32>) {
    let &(_, bytes, reference) = FIXTURES.iter().find(|f| f.0 == ty).expect("fixture exists");
    (bytes, f32s(reference))
}

fn check_against_reference(ty: GgmlType) {
    let (bytes, want) = fixture_for(ty);
    let got = dequantize(ty, bytes, want.len()).unwrap();
    assert_bit_identical(ty, &got, &want);
}

/// One `#[test]` per type, so a failure names the format.
macro_rules! reference_tests {
    ($($test:ident: $ty:ident,)*) => {
        $(
            #[test]
            fn $test() {
                check_against_reference(GgmlType::$ty)
            }
        )*
    };
}

reference_tests! {
    f32_matches_reference: F32,
    f16_matches_reference: F16,
    bf16_matches_reference: BF16,
    q4_0_matches_reference: Q4_0,
    q4_1_matches_reference: Q4_1,
    q5_0_matches_reference: Q5_0,
    q5_1_matches_reference: Q5_1,
    q8_0_matches_reference: Q8_0,
    q2_k_matches_reference: Q2K,
    q3_k_matches_reference: Q3K,
    q4_k_matches_reference: Q4K,
    q5_k_matches_reference: Q5K,
    q6_k_matches_reference: Q6K,
}

#[test]
fn every_dequantizable_type_has_a_fixture() {
    for ty in GgmlType::ALL.iter().filter(|ty| ty.can_dequantize()) {
        assert!(FIXTURES.iter().any(|f| f.0 == *ty), "{ty} has no fixture");
    }
    assert_eq!(FIXTURES.len(), 13);
}

#[test]
fn threaded_splits_match_reference() {
    for &(ty, bytes, reference) in FIXTURES {
        let want = f32s(reference);
        for threads in [2, 3, 7, 1000] {
            let mut got = vec![0.0; want.len()];
            dequantize_into_with_threads(ty, bytes, &mut got, threads).unwrap();
            assert_bit_identical(ty, &got, &want);
        }
    }
}

#[test]
fn large_tensor_takes_the_parallel_path() {
    let (bytes, want) = fixture_for(GgmlType::Q4K);
    let copies = PARALLEL_MIN_ELEMENTS / want.len() + 3;
    let got = dequantize(GgmlType::Q4K, &bytes.repeat(copies), want.len() * copies).unwrap();
    assert_bit_identical(GgmlType::Q4K, &got, &want.repeat(copies));
}

#[test]
fn unsupported_type_is_named_with_the_supported_list() {
    let err = dequantize(GgmlType::IQ2_XXS, &[0; 66], 256).unwrap_err();
    assert!(matches!(err, DequantError::UnsupportedType { ty: GgmlType::IQ2_XXS }));
    let message = err.to_string();
    assert!(message.contains("IQ2_XXS"), "{message}");
    assert!(
        message.contains("F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, BF16"),
        "{message}"
    );
    for ty in [GgmlType::Q8_1, GgmlType::Q8K, GgmlType::I32, GgmlType::F64, GgmlType::MXFP4] {
        assert!(!ty.can_dequantize());
        assert!(matches!(dequantize_into(ty, &[], &mut []), Err(DequantError::UnsupportedType { .. })));
    }
}

#[test]
fn wrong_byte_length_is_rejected() {
    let mut out = vec![0.0; 64];
    let err = dequantize_into(GgmlType::Q4_0, &[0; 35], &mut out).unwrap_err();
    assert!(matches!(err, DequantError::ByteLengthMismatch { expected: 36, got: 35, .. }), "{err}");
    assert!(err.to_string().contains("36") && err.to_string().contains("35"), "{err}");
    assert!(dequantize(GgmlType::Q6K, &[0; 211], 256).is_err());
    assert!(dequantize(GgmlType::F32, &[0; 8], 3).is_err());
}

#[test]
fn partial_block_is_rejected() {
    let err = dequantize(GgmlType::Q4_0, &[0; 18], 100).unwrap_err();
    assert!(matches!(err, DequantError::PartialBlock { n_elements: 100, block_elements: 32, .. }), "{err}");
    assert!(err.to_string().contains("Q4_0"), "{err}");
    assert!(dequantize(GgmlType::Q4K, &[0; 144], 128).is_err());
}

#[test]
fn empty_input_is_fine() {
    assert_eq!(dequantize(GgmlType::Q6K, &[], 0).unwrap(), Vec::<f32>::new());
}

#[test]
fn bytes_for_sizes_tensors() {
    assert_eq!(GgmlType::F32.bytes_for(3).unwrap(), 12);
    assert_eq!(GgmlType::BF16.bytes_for(5).unwrap(), 10);
    assert_eq!(GgmlType::Q4_0.bytes_for(64).unwrap(), 36);
    assert_eq!(GgmlType::Q8_0.bytes_for(4096).unwrap(), 128 * 34);
    assert_eq!(GgmlType::Q4K.bytes_for(512).unwrap(), 288);
    assert_eq!(GgmlType::Q6K.bytes_for(256).unwrap(), 210);
    assert_eq!(GgmlType::IQ2_XXS.bytes_for(256).unwrap(), 66);
    assert_eq!(GgmlType::MXFP4.bytes_for(64).unwrap(), 34);
    assert!(matches!(GgmlType::Q4K.bytes_for(100), Err(DequantError::PartialBlock { .. })));
    assert!(matches!(GgmlType::F64.bytes_for(usize::MAX), Err(DequantError::TooLarge { .. })));
}

#[test]
fn ids_and_names_round_trip() {
    for &ty in GgmlType::ALL {
        assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
        assert_eq!(GgmlType::ALL.iter().filter(|t| t.name() == ty.name()).count(), 1);
    }
    assert_eq!(GgmlType::ALL.len(), 34);
    assert_eq!(GgmlType::from_id(12), Some(GgmlType::Q4K));
    assert_eq!(GgmlType::Q4K.name(), "Q4_K");
    assert_eq!(GgmlType::from_id(4), None); // removed Q4_2
    assert_eq!(GgmlType::from_id(31), None); // removed Q4_0_4_4
    assert_eq!(GgmlType::from_id(42), None);
}

/// The quantizers must reproduce gguf-py's `quantize` (which matches ggml's `*_ref`) byte
/// for byte on the fixture's source data, including an all-zero block and exact ties.
fn check_quantizer(ty: GgmlType, quantize: fn(&[f32]) -> Vec<u8>, source: &[u8], blocks: &[u8]) {
    let source = f32s(source);
    let got = quantize(&source);
    let want = &blocks[..got.len()];
    assert_eq!(got.len(), source.len() / 32 * ty.block_bytes());
    for (i, (g, w)) in got.chunks(ty.block_bytes()).zip(want.chunks(ty.block_bytes())).enumerate() {
        assert_eq!(g, w, "{ty} block {i} differs from gguf-py");
    }
}

#[test]
fn quantize_q8_0_matches_reference() {
    check_quantizer(GgmlType::Q8_0, quantize_q8_0, fixture!("Q8_0.source.f32"), fixture!("Q8_0.bin"));
}

#[test]
fn quantize_q4_0_matches_reference() {
    check_quantizer(GgmlType::Q4_0, quantize_q4_0, fixture!("Q4_0.source.f32"), fixture!("Q4_0.bin"));
}

/// Round trip: each element comes back within half a quantization step (a whole step for
/// Q4_0, whose grid -8..=7 clips the side opposite the largest value), plus the f16
/// rounding of the scale; exactly representable grids come back exactly.
#[test]
fn quantizers_round_trip() {
    let src: Vec<f32> = (0..4096).map(|i| ((i * 7919 % 1000) as f32 / 250.0 - 2.0) * (1.0 + (i / 32) as f32)).collect();
    for (ty, quantize, step_divisor, steps_of_error) in [
        (GgmlType::Q8_0, quantize_q8_0 as fn(&[f32]) -> Vec<u8>, 127.0f32, 0.5f32),
        (GgmlType::Q4_0, quantize_q4_0, 8.0, 1.0),
    ] {
        let back = dequantize(ty, &quantize(&src), src.len()).unwrap();
        for (block_in, block_out) in src.chunks(32).zip(back.chunks(32)) {
            let amax = block_in.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let tolerance = amax / step_divisor * steps_of_error + amax * 2e-3;
            for (x, y) in block_in.iter().zip(block_out) {
                assert!((x - y).abs() <= tolerance, "{ty}: {x} -> {y} (tolerance {tolerance})");
            }
        }
    }
    let grid: Vec<f32> = (-127..=127).chain(0..33).map(|i| i as f32).collect::<Vec<_>>()[..256].to_vec();
    let back = dequantize(GgmlType::Q8_0, &quantize_q8_0(&grid), 256).unwrap();
    assert_eq!(&back[..32], &grid[..32]);
    let nibbles: Vec<f32> = (0..32).map(|i| (i % 16) as f32 - 8.0).collect();
    assert_eq!(dequantize(GgmlType::Q4_0, &quantize_q4_0(&nibbles), 32).unwrap(), nibbles);
}
