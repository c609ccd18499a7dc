//! tinygrad-only against llama.cpp's reference, on bad input, in benchmark and chat mode (the
//! shared checks in llama-testkit), and wgpu's kernels against naive loops.

llama_testkit::binary_conformance_tests!("tinygrad-only");

#[test]
fn composed_kernels_match_naive_loops_on_wgpu() {
    type B = burn_wgpu::Wgpu<f32, i32, u32>;
    llama_testkit::kernel_checks::check_all::<B, _>(&llama_core::kernels::Composed, &burn_wgpu::WgpuDevice::default());
}

/// Both thread layouts run here on the software driver, so the GPU one is checked too.
#[test]
fn cubecl_kernels_match_naive_loops_on_wgpu() {
    let device = burn_wgpu::WgpuDevice::default();
    llama_testkit::kernel_checks::check_all(&tinygrad_only::WgpuKernels::cpu_driver(), &device);
    llama_testkit::kernel_checks::check_all(&tinygrad_only::WgpuKernels::gpu(), &device);
}

/// `--quantize`: an f32 weight stored as int8, nf4 or f16 multiplies exactly like the host's
/// unpacking of the same packed bytes says it should (the packing itself is unit-tested).
#[test]
fn weights_quantized_at_load_match_their_host_unpacking() {
    use burn::tensor::{Tensor, TensorData};
    use llama_core::dequant::GgmlType;
    use llama_core::kernels::{Kernels, RawWeight};
    use tinygrad_only::kernels::Quantize;
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

/// Greedy decoding one step ahead (on this software driver too) and one step at a time both give
/// llama.cpp's ids.
#[test]
fn pipelined_greedy_gives_llama_cpp_ids_as_unpipelined_does() {
    llama_testkit::conformance::check_pipelined_greedy(BIN, true);
}

/// `--compile` is pytorch-only's (a static step for CUDA graph capture): refused here by name.
#[test]
fn compile_is_refused_by_name() {
    let model = llama_testkit::conformance::default_model();
    llama_testkit::conformance::expect_error(
        BIN,
        &["--model", model.to_str().expect("utf-8 path"), "--compile", "--prompt", "hi"],
        "--compile is not supported by tinygrad-only",
    );
}

/// `--device noop` (wgpu's backend that runs no shader) benchmarks the 1B shape for a few tokens,
/// and its JSON carries the host-work figures per decoded token. A check of the output's shape,
/// not of speed.
#[test]
fn noop_device_benchmark_reports_host_work() {
    let args = ["--device", "noop", "--benchmark", "--size", "1B", "--dtype", "f16", "--json"];
    let out = llama_testkit::conformance::run(
        BIN,
        &[&args[..], &["--iterations", "2", "--prompt-tokens", "4", "--gen-tokens", "3"]].concat(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "--device noop --benchmark failed: {stderr}");
    assert!(stderr.contains("the generated tokens are meaningless"), "no warning on stderr: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert!(report["device"].as_str().is_some_and(|d| d.contains("noop")), "device in {report}");
    // Averages per decoded token.
    let count = |key: &str| report["host_work_per_token"][key].as_f64().unwrap_or_else(|| panic!("{key} in {report}"));
    let ours = report["our_kernel_launches_per_token"].as_f64().expect("our launches");
    // Every kernel of ours is a launch the device API saw; the token's readback is at least one
    // submit and one read.
    assert!(ours > 0.0 && count("kernel_launches") >= ours, "{report}");
    assert!(count("queue_submits") >= 1.0 && count("device_reads") >= 1.0, "{report}");
    for key in ["staging_writes", "buffers_created"] {
        count(key);
    }
    assert_eq!(report["kernel_launches_per_token"].as_f64(), Some(count("kernel_launches")), "{report}");
    assert!(report["host_ms_per_token"].as_f64().is_some_and(|ms| ms > 0.0), "host_ms_per_token in {report}");
}

/// noop's outputs are zeros: a reply or a chat on it would be garbage, so both are refused.
#[test]
fn noop_device_refuses_prompt_and_chat() {
    let expected = "--device noop runs no shaders";
    llama_testkit::conformance::expect_error(BIN, &["--device", "noop", "--prompt", "hi"], expected);
    llama_testkit::conformance::expect_error(BIN, &["--device", "noop"], expected);
}

/// `--quantize` on a Hugging Face BF16 checkpoint: int8 and f16 storage still count on (the
/// counting prompt's greedy margins are wide).
#[test]
fn quantize_works_on_a_bf16_hugging_face_folder() {
    let bf16 = llama_testkit::conformance::hf::hf_dir("smollm2-bf16");
    let reference = llama_testkit::conformance::reference();
    let counting = reference.cases.iter().find(|c| c.prompt == "1, 2, 3, 4,").expect("counting case");
    for quantize in ["int8", "float16"] {
        let args = ["--quantize", quantize, "--top-logits", "0"];
        let out = llama_testkit::conformance::greedy_json(BIN, &bf16, &counting.prompt, 6, &args);
        assert_eq!(out.generated_tokens, counting.generated_tokens[..6], "--quantize {quantize}: {:?}", out.text);
    }
}
