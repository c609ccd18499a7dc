//! The fast-path operations at Llama 3.2 1B shapes on both frameworks through `Composed`, and
//! on burn-wgpu through tinygrad-only's own CubeCL kernels.
//! Names read `<framework>/<op>/<shape>`, so criterion's report is a side-by-side comparison.
//! Each iteration includes reading the result back to the host (the honest per-token cost).

use burn::tensor::backend::Backend;
use criterion::{Criterion, criterion_group, criterion_main};
use llama_benches::{DIM, HEAD_DIM, HEADS, KV_HEADS, WEIGHT_SHAPES, bench_warmed, random, read_back};
use llama_core::kernels::{Composed, Kernels, Placement, Projections, QkvIntoCache, RmsNorm, Span};
use llama_core::kv_cache::CachedKv;

fn bench_backend<B: Backend, K: Kernels<B>>(c: &mut Criterion, framework: &str, k: K, device: &B::Device) {
    let mut group = c.benchmark_group(framework);
    group.sample_size(10);

    let x = random::<B, 2>([1, DIM], device);
    let norm = RmsNorm { weight: random::<B, 1>([DIM], device), eps: 1e-5 };
    let inv_freq = llama_core::rope::inverse_frequencies(HEAD_DIM, 500_000.0, None);
    let tables = llama_core::rope::RopeTables::<B>::new(&inv_freq, 4096, device);
    let qkv = Projections::Stacked(k.random_weight((HEADS + 2 * KV_HEADS) * HEAD_DIM, DIM, 1.0, device));
    let one_token_at = |position: usize| {
        let span = Span { slot: 0, start: position, rows: 1 };
        k.rows(Placement::from_spans(vec![span], &tables, [HEADS, KV_HEADS], device))
    };
    let rows = one_token_at(1000);
    let cache = random::<B, 3>([KV_HEADS, 4096, HEAD_DIM], device);
    bench_warmed(&mut group, "qkv_into_cache/1x2048", || {
        let cache = CachedKv { keys: cache.clone(), values: cache.clone() };
        let args = QkvIntoCache { input: norm.of(x.clone()), weight: &qkv, rows: &rows, cache };
        read_back(k.qkv_into_cache(args).0)
    });

    let q = random::<B, 3>([1, HEADS, HEAD_DIM], device);

    for keys in [128, 1024, 4096] {
        let keys_t = random::<B, 3>([KV_HEADS, keys, HEAD_DIM], device);
        let values = random::<B, 3>([KV_HEADS, keys, HEAD_DIM], device);
        let rows = one_token_at(keys - 1);
        bench_warmed(&mut group, format!("attention_decode/1query_{keys}keys"), || {
            read_back(k.attention(q.clone(), CachedKv { keys: keys_t.clone(), values: values.clone() }, &rows))
        });
    }

    for &(name, input, output) in WEIGHT_SHAPES {
        let weight = k.random_weight(output, input, 1.0, device);
        for tokens in [1, 128] {
            let x = random::<B, 2>([tokens, input], device);
            bench_warmed(&mut group, format!("linear_{name}/M{tokens}_{input}x{output}"), || {
                read_back(k.linear(x.clone(), &weight))
            });
        }
    }
    group.finish();
}

fn kernels(c: &mut Criterion) {
    let wgpu = burn_wgpu::WgpuDevice::default();
    bench_backend::<burn_wgpu::Wgpu<f32, i32, u32>, _>(c, "tinygrad-only(burn-wgpu)", Composed, &wgpu);
    // The lavapipe thread layout: these benches run on the CPU machine (on a GPU, use gpu()).
    bench_backend(c, "tinygrad-only(cubecl-kernels)", tinygrad_only::WgpuKernels::cpu_driver(), &wgpu);
    bench_backend::<burn_tch::LibTorch<f32>, _>(c, "pytorch-only(burn-tch)", Composed, &burn_tch::LibTorchDevice::Cpu);
}

criterion_group!(benches, kernels);
criterion_main!(benches);
