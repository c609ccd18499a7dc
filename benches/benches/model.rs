//! One full decode step and one 128-token prefill of a random-weight model on both frameworks.
//! The shape is SmolLM2-135M's (a Llama) by default, so it runs on a CPU; set
//! `LLAMA_BENCH_SIZE=1B|3B|8B|70B` for a published Llama 3.x shape.

use burn::tensor::backend::Backend;
use criterion::{Criterion, criterion_group, criterion_main};
use llama_benches::bench_warmed;
use llama_core::batch::Batch;
use llama_core::config::{LlamaConfig, ModelSize};
use llama_core::kernels::{Composed, Kernels};
use llama_core::model::Llama;

const PREFILL: usize = 128;

fn shape() -> (String, LlamaConfig, bool) {
    match std::env::var("LLAMA_BENCH_SIZE").ok().as_deref() {
        None | Some("") => {
            let smollm2_135m = LlamaConfig {
                vocab_size: 49152,
                dim: 576,
                n_layers: 30,
                n_heads: 9,
                n_kv_heads: 3,
                ffn_dim: 1536,
                rope_theta: 100_000.0,
                norm_eps: 1e-5,
                context_length: 8192,
            };
            ("smollm2-135m-shape".into(), smollm2_135m, true)
        }
        Some(name) => {
            let size: ModelSize = name.parse().unwrap_or_else(|e| panic!("LLAMA_BENCH_SIZE={name}: {e}"));
            (format!("llama-{size}-shape"), size.config(), size.tied_embeddings())
        }
    }
}

fn bench_backend<B: Backend, K: Kernels<B>>(c: &mut Criterion, framework: &str, kernels: K, device: &B::Device) {
    let (name, config, tied) = shape();
    let model = Llama::<B, K>::random(config.clone(), tied, kernels, PREFILL + 2, device);
    let prompt: Vec<u32> = (0..PREFILL as u32).map(|i| (i * 7919) % config.vocab_size as u32).collect();
    let mut group = c.benchmark_group(framework);
    group.sample_size(10);
    let mut cache = model.new_cache(PREFILL + 2, 1);
    let step = |cache: &mut llama_core::kv_cache::KvCache<B>, tokens: &[u32]| {
        let mut batch = Batch::new(cache);
        batch.push(0, tokens).expect("room");
        model.step(&mut batch).expect("a step")
    };
    bench_warmed(&mut group, format!("prefill_{PREFILL}/{name}"), || {
        cache.truncate(0, 0);
        let _ = step(&mut cache, &prompt).into_data();
    });
    cache.truncate(0, 0);
    step(&mut cache, &prompt);
    // Each call decodes position 128 again over the same 128 cached tokens.
    bench_warmed(&mut group, format!("decode_step_after_{PREFILL}/{name}"), || {
        cache.truncate(0, PREFILL);
        let _ = step(&mut cache, &[1]).into_data();
    });
    group.finish();
}

fn model(c: &mut Criterion) {
    let wgpu = burn_wgpu::WgpuDevice::default();
    bench_backend::<burn_wgpu::Wgpu<f32, i32, u32>, _>(c, "tinygrad-only(burn-wgpu)", Composed, &wgpu);
    // The lavapipe thread layout: these benches run on the CPU machine (on a GPU, use gpu()).
    bench_backend(c, "tinygrad-only(cubecl-kernels)", tinygrad_only::WgpuKernels::cpu_driver(), &wgpu);
    bench_backend::<burn_tch::LibTorch<f32>, _>(c, "pytorch-only(burn-tch)", Composed, &burn_tch::LibTorchDevice::Cpu);
}

criterion_group!(benches, model);
criterion_main!(benches);
