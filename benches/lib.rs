//! Shared set-up for the criterion benches: Llama 3.2 1B shapes and random inputs per backend.

use burn::tensor::{Distribution, Tensor, backend::Backend};
use criterion::BenchmarkGroup;
use criterion::measurement::Measurement;

/// Llama 3.2 1B: dim 2048, 32 heads of 64, 8 KV heads, FFN 8192, vocab 128256.
pub const DIM: usize = 2048;
pub const HEADS: usize = 32;
pub const KV_HEADS: usize = 8;
pub const HEAD_DIM: usize = 64;
pub const FFN: usize = 8192;
pub const VOCAB: usize = 128_256;

/// The `[in, out]` matmul weights of one 1B layer, plus the output head, by name.
pub const WEIGHT_SHAPES: &[(&str, usize, usize)] = &[
    ("wq", DIM, DIM),
    ("wk", DIM, KV_HEADS * HEAD_DIM),
    ("wo", DIM, DIM),
    ("w_gate", DIM, FFN),
    ("w_down", FFN, DIM),
    ("lm_head", DIM, VOCAB),
];

pub fn random<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Blocks until the tensor's value is on the host: what a decode step pays.
pub fn read_back<B: Backend, const D: usize>(t: Tensor<B, D>) {
    let _ = t.into_data();
}

/// Calls made before timing starts. burn-wgpu compiles and autotunes a kernel on its first calls
/// for a shape, which takes seconds on a software device; criterion's own time-based warm-up is
/// too short for that under `--quick` and would count it as the operation's cost.
pub const WARM_CALLS: usize = 3;

/// Benchmarks `f` as `name` in `group` after [`WARM_CALLS`] untimed calls.
pub fn bench_warmed<M: Measurement>(group: &mut BenchmarkGroup<'_, M>, name: impl Into<String>, mut f: impl FnMut()) {
    for _ in 0..WARM_CALLS {
        f();
    }
    group.bench_function(name.into(), |b| b.iter(&mut f));
}
