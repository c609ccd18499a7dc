//! pytorch-only against llama.cpp's reference, on bad input, in benchmark and chat mode (the
//! shared checks in llama-core), and libtorch's kernels against naive loops.

llama_core::binary_conformance_tests!("pytorch-only");

#[test]
fn composed_kernels_match_naive_loops_on_libtorch() {
    type B = burn_tch::LibTorch<f32>;
    llama_core::kernel_checks::check_all::<B, _>(&llama_core::kernels::Composed, &burn_tch::LibTorchDevice::Cpu);
}
