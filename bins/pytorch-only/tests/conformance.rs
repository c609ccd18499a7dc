//! pytorch-only against llama.cpp's reference and on bad input (shared checks in llama-core).

use llama_core::conformance;

const BIN: &str = env!("CARGO_BIN_EXE_pytorch-only");

#[test]
fn greedy_output_matches_llama_cpp() {
    conformance::check_against_llamacpp(BIN, &[]);
}

#[test]
fn bad_input_is_a_clear_error() {
    conformance::check_bad_inputs(
        BIN,
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pytorch-only-bad-input"),
    );
}

#[test]
fn composed_kernels_match_naive_loops_on_libtorch() {
    type B = burn_tch::LibTorch<f32>;
    llama_core::kernel_checks::check_all::<B, _>(&llama_core::kernels::Composed, &burn_tch::LibTorchDevice::Cpu);
}

#[test]
fn benchmark_mode_reports_every_figure() {
    conformance::check_benchmark_json(BIN);
}

#[test]
fn synthetic_llama_3_model_loads_and_generates() {
    conformance::check_synthetic_model(
        BIN,
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pytorch-only-synthetic"),
    );
}

#[test]
fn half_precision_still_counts() {
    conformance::check_half_precision(BIN);
}
