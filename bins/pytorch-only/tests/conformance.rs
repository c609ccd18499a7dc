//! pytorch-only against llama.cpp's reference, on bad input, in benchmark and chat mode (the
//! shared checks in llama-testkit), and libtorch's kernels against naive loops.

llama_testkit::binary_conformance_tests!("pytorch-only");

/// burn-tch reads each id before the next step is queued (its reads are synchronous);
/// `--no-pipeline` is accepted and the ids are llama.cpp's either way.
#[test]
fn greedy_ids_are_llama_cpp_s_with_and_without_pipelining() {
    llama_testkit::conformance::check_pipelined_greedy(BIN, false);
}

#[test]
fn composed_kernels_match_naive_loops_on_libtorch() {
    type B = burn_tch::LibTorch<f32>;
    llama_testkit::kernel_checks::check_all::<B, _>(&llama_core::kernels::Composed, &burn_tch::LibTorchDevice::Cpu);
}

/// In InferenceMode, as the binary runs them.
#[test]
fn fused_libtorch_kernels_match_naive_loops() {
    pytorch_only::enter_inference_mode();
    llama_testkit::kernel_checks::check_all::<pytorch_only::Tch, _>(
        &pytorch_only::TchKernels,
        &burn_tch::LibTorchDevice::Cpu,
    );
}

/// `--compile` on a CPU device: the static-shape step gives eager's greedy ids, and says that
/// graph capture needs CUDA.
#[test]
fn compile_gives_the_eager_greedy_ids_on_cpu() {
    let model = llama_testkit::conformance::default_model();
    let run = |extra: &[&str]| {
        let mut args = vec!["--model", model.to_str().expect("utf-8 path"), "--device", "cpu", "--raw"];
        args.extend(["--temperature", "0", "--max-tokens", "24", "--ignore-eos", "--json"]);
        args.extend(["--prompt", "The capital of France is"]);
        args.extend(extra);
        let out = llama_testkit::conformance::run(BIN, &args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{BIN} {extra:?} failed: {stderr}");
        let report: llama_testkit::conformance::RunOutput = serde_json::from_slice(&out.stdout).expect("--json output");
        (report.generated_tokens, stderr)
    };
    let (eager, _) = run(&[]);
    let (compiled, note) = run(&["--compile"]);
    assert_eq!(compiled, eager, "--compile changed the greedy ids");
    assert!(note.contains("CUDA graph capture needs a CUDA device"), "no note on stderr: {note}");
}
