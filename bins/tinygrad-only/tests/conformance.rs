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
