//! tinygrad-only against llama.cpp's reference, on bad input, in benchmark and chat mode (the
//! shared checks in llama-core), and wgpu's kernels against naive loops.

llama_core::binary_conformance_tests!("tinygrad-only");

#[test]
fn composed_kernels_match_naive_loops_on_wgpu() {
    type B = burn_wgpu::Wgpu<f32, i32, u32>;
    llama_core::kernel_checks::check_all::<B, _>(&llama_core::kernels::Composed, &burn_wgpu::WgpuDevice::default());
}

/// Both thread layouts run here on the software driver, so the GPU one is checked too.
#[test]
fn cubecl_kernels_match_naive_loops_on_wgpu() {
    let device = burn_wgpu::WgpuDevice::default();
    llama_core::kernel_checks::check_all(&tinygrad_only::WgpuKernels::cpu_driver(), &device);
    llama_core::kernel_checks::check_all(&tinygrad_only::WgpuKernels::gpu(), &device);
}

/// `--quantize`: an f32 weight stored as int8, nf4 or f16 multiplies exactly like the host's
/// unpacking of the same packed bytes says it should (the packing itself is unit-tested).
#[test]
fn weights_quantized_at_load_match_their_host_unpacking() {
    use burn::tensor::{Tensor, TensorData};
    use llama_core::cli::Quantize;
    use llama_core::dequant::GgmlType;
    use llama_core::kernels::{Kernels, RawWeight};
    use tinygrad_only::kernels::pack;

    let device = burn_wgpu::WgpuDevice::default();
    let (rows, cols) = (24, 128);
    let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 997) as f32 / 498.5 - 1.0) * 0.3).collect();
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    for quantize in [Quantize::Int8, Quantize::Nf4, Quantize::Float16] {
        let kernels = tinygrad_only::WgpuKernels::cpu_driver().with_quantize(Some(quantize));
        let raw = RawWeight { name: "w", ggml_type: GgmlType::F32, bytes: &bytes, rows, cols };
        let weight = kernels.load_weight(raw, &device).expect("load");
        let packing = pack::packing_for(GgmlType::F32, Some(quantize));
        let stored = pack::unpack(&pack::pack(GgmlType::F32, Some(quantize), &bytes, cols).expect("pack"), packing);
        // Decode, and prefill long enough to take the dequantize-then-matmul path.
        for tokens in [2, 17] {
            let x: Vec<f32> = (0..tokens * cols).map(|i| (i * 104_729 % 991) as f32 / 495.5 - 1.0).collect();
            let input =
                Tensor::<tinygrad_only::Wgpu, 2>::from_data(TensorData::new(x.clone(), [tokens, cols]), &device);
            let got = kernels.linear(input, &weight).into_data().to_vec::<f32>().expect("f32");
            for t in 0..tokens {
                for r in 0..rows {
                    let want: f64 = (0..cols).map(|c| x[t * cols + c] as f64 * stored[r * cols + c] as f64).sum();
                    let g = got[t * rows + r] as f64;
                    assert!((g - want).abs() <= 1e-3 + 1e-4 * want.abs(), "{quantize:?} [{t}, {r}]: {g} vs {want}");
                }
            }
        }
        // And the stored weights are close to the originals (a wrong level table would not be).
        let worst = stored.iter().zip(&w).map(|(s, o)| (s - o).abs()).fold(0.0f32, f32::max);
        assert!(worst < 0.1, "{quantize:?}: worst |stored - original| {worst}");
    }
}

/// `--compile` is pytorch-only's (a static step for CUDA graph capture): refused here by name.
#[test]
fn compile_is_refused_by_name() {
    let model = llama_core::conformance::default_model();
    llama_core::conformance::expect_error(
        BIN,
        &["--model", model.to_str().expect("utf-8 path"), "--compile", "--prompt", "hi"],
        "--compile is not supported by tinygrad-only",
    );
}
