//! What a server step costs on libtorch: one sequence's decode, eight sequences' decodes in one
//! step (each in its own cache slot), and one sequence's eight-token pass (the same rows through
//! one slot), in ms per call on the F32 default model; then every product of a step alone at 1
//! and 8 rows, the floor of a batched step.
//!
//! `cargo run --release -p pytorch-only --example batch_timing -- target/serve-bench/SmolLM2-135M-Instruct.F32.gguf`
use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use llama_core::batch::Batch;
use llama_core::config::LlamaConfig;
use llama_core::gguf::GgufFile;
use llama_core::kernels::{Kernels, Product};
use llama_core::kv_cache::KvCache;
use llama_core::model::Llama;
use pytorch_only::{Tch, TchKernels};

fn time(name: &str, runs: usize, mut f: impl FnMut() -> Tensor<Tch, 2>) {
    for _ in 0..3 {
        let _ = f().into_data();
    }
    let t = Instant::now();
    for _ in 0..runs {
        let _ = f().into_data();
    }
    println!("| {name} | {:.2} |", t.elapsed().as_secs_f64() * 1e3 / runs as f64);
}

fn main() -> anyhow::Result<()> {
    pytorch_only::enter_inference_mode();
    let path = std::env::args().nth(1).expect("a GGUF path");
    let sequences: usize = std::env::args().nth(2).map_or(8, |s| s.parse().expect("a count"));
    let gguf = GgufFile::open(std::path::Path::new(&path))?;
    let config = LlamaConfig::from_gguf(&gguf)?;
    let device = burn_tch::LibTorchDevice::Cpu;
    let model = Llama::<Tch, _>::from_tensors(&gguf, config, TchKernels, 512, &device)?;
    let prompt: Vec<u32> = (0..60).map(|i| 100 + i).collect();
    let mut cache = model.new_cache(512, sequences);
    // Each of `slots` gets `tokens`, after the prompt that every slot holds.
    let step = |cache: &mut KvCache<Tch>, slots: usize, tokens: &[u32]| {
        let mut batch = Batch::new(cache);
        for slot in 0..slots {
            batch.push(slot, tokens).expect("room");
        }
        model.step(&mut batch).expect("a step")
    };
    for slot in 0..sequences {
        let mut batch = Batch::new(&mut cache);
        batch.push(slot, &prompt)?;
        model.step(&mut batch)?;
    }
    let rewind = |cache: &mut KvCache<Tch>| (0..sequences).for_each(|slot| cache.truncate(slot, 60));
    println!("| step | ms |\n|---|---:|");
    time("1 sequence, 1 token", 20, || {
        rewind(&mut cache);
        step(&mut cache, 1, &[5])
    });
    time(&format!("{sequences} sequences, 1 token each"), 20, || {
        rewind(&mut cache);
        step(&mut cache, sequences, &[5])
    });
    let tokens = vec![5u32; sequences];
    time(&format!("1 sequence, {sequences} tokens"), 20, || {
        rewind(&mut cache);
        step(&mut cache, 1, &tokens)
    });
    // Every product of one step (30 layers' Q/K/V, output, gate+up and down, then the head) at
    // 1 and at `sequences` rows, weights as the model holds them (540 MB: not cache-resident).
    let k = TchKernels;
    let layer_shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)];
    let weights: Vec<_> = (0..model.config.n_layers)
        .flat_map(|_| layer_shapes)
        .chain([(49152, 576)])
        .map(|(rows, cols)| (k.random_weight(rows, cols, 0.02, &device), cols))
        .collect();
    for m in [1, sequences] {
        let inputs = [576, 1536].map(|cols| Tensor::<Tch, 2>::random([m, cols], Distribution::Default, &device));
        time(&format!("every product of a step, {m} rows"), 10, || {
            let outs =
                weights.iter().map(|(w, cols)| k.product(Product::new(inputs[(*cols == 1536) as usize].clone(), w)));
            outs.reduce(|_, last| last).expect("a product")
        });
    }
    Ok(())
}
