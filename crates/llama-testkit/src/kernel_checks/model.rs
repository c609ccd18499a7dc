//! Whole-model checks on a tiny random model: incremental decode, the static-shape step, steps of
//! several sequences, the scheduler, and the device argmax.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use llama_core::batch::Batch;
use llama_core::config::LlamaConfig;
use llama_core::kernels::Kernels;
use llama_core::model::Llama;
use llama_core::sampling::Sampler;
use llama_core::scheduler::{Eager, Scheduler, SchedulerOptions};
use llama_core::sequence::Request;

use super::support::{assert_close, download, random, upload};

/// A two-layer grouped-query model small enough for whole-model checks.
fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 64,
        dim: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_dim: 48,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        context_length: 16,
    }
}

fn tiny_model<B: Backend, K: Kernels<B> + Clone>(k: &K, seed: u64, device: &B::Device) -> Llama<B, K> {
    B::seed(device, seed);
    Llama::random(tiny_config(), true, k.clone(), 16, device)
}

fn as_f64(values: Vec<f32>) -> Vec<f64> {
    values.into_iter().map(f64::from).collect()
}

/// The logits of one step of `tokens` in slot `slot` of `cache`.
fn step<B: Backend, K: Kernels<B>>(
    model: &Llama<B, K>,
    cache: &mut llama_core::kv_cache::KvCache<B>,
    slot: usize,
    tokens: &[u32],
) -> Vec<f32> {
    let mut batch = Batch::new(cache);
    batch.push(slot, tokens).expect("room for the tokens");
    download(model.step(&mut batch).expect("a step"))
}

/// Decoding token by token through the KV cache gives the logits of one full prefill.
pub fn check_incremental_decode<B: Backend, K: Kernels<B> + Clone>(k: &K, device: &B::Device) {
    let model = tiny_model(k, 1, device);
    let tokens = [3u32, 17, 42, 5, 60, 8];
    let expected = as_f64(step(&model, &mut model.new_cache(16, 1), 0, &tokens));
    let mut stepwise = model.new_cache(16, 1);
    step(&model, &mut stepwise, 0, &tokens[..3]);
    let last = tokens[3..].iter().map(|&t| step(&model, &mut stepwise, 0, &[t])).last().expect("decoded");
    assert_close("incremental decode vs prefill", &last, &expected, 1e-4, 1e-4);
    assert_eq!(stepwise.len(0), tokens.len(), "every step advances the cache");
}

/// The static-shape step (id and position on the device, whole-cache masked attention) gives
/// every step's logits as the step whose shapes follow the cache does, after a prefill, in a
/// slot other than the first.
pub fn check_static_decode<B: Backend, K: Kernels<B> + Clone>(k: &K, device: &B::Device) {
    let model = tiny_model(k, 2, device);
    let tokens = [9u32, 33, 1, 50, 27, 4, 61];
    let (mut dynamic, mut fixed) = (model.new_cache(16, 1), model.new_cache(12, 2));
    step(&model, &mut dynamic, 0, &tokens[..2]);
    step(&model, &mut fixed, 1, &tokens[..2]);
    let on_device = |v: usize| Tensor::<B, 1, Int>::from_data(TensorData::new(vec![v as i64], [1]), device);
    for (i, &t) in tokens[2..].iter().enumerate() {
        let expected = as_f64(step(&model, &mut dynamic, 0, &[t]));
        let position = on_device(fixed.len(1));
        let mut batch = Batch::fixed_shape(&mut fixed, 1, on_device(t as usize), position).expect("room");
        let got = download(model.step(&mut batch).expect("static step"));
        assert_close(&format!("static decode step {i}"), &got, &expected, 1e-4, 1e-4);
    }
    assert_eq!((fixed.len(1), fixed.len(0)), (tokens.len(), 0), "the static step advances its slot alone");
}

/// A step of several sequences (a server's slots) gives each sequence the logits it gets alone:
/// sequences at different positions in their own slots, one decoding a token, one prefilling a
/// chunk, one starting afresh.
pub fn check_batched_step<B: Backend, K: Kernels<B> + Clone>(k: &K, device: &B::Device) {
    let model = tiny_model(k, 3, device);
    let histories: [&[u32]; 3] = [&[7, 21, 40, 2, 11], &[30, 5], &[]];
    let new_tokens: [&[u32]; 3] = [&[13], &[44, 9, 63], &[1, 2]];
    // Slots in another order than the rows: row order is the batch's, not the cache's.
    let slots = [2, 0, 1];
    let mut cache = model.new_cache(16, 3);
    let mut alone = Vec::new();
    for ((history, new), &slot) in histories.iter().zip(new_tokens).zip(&slots) {
        if !history.is_empty() {
            step(&model, &mut cache, slot, history);
        }
        let whole: Vec<u32> = history.iter().chain(new).copied().collect();
        alone.extend(as_f64(step(&model, &mut model.new_cache(16, 1), 0, &whole)));
    }
    let mut batch = Batch::new(&mut cache);
    for (new, &slot) in new_tokens.iter().zip(&slots) {
        batch.push(slot, new).expect("room");
    }
    let batched = download(model.step(&mut batch).expect("batched step"));
    assert_close("batched step vs each sequence alone", &batched, &alone, 1e-4, 1e-4);
    for ((history, new), &slot) in histories.iter().zip(new_tokens).zip(&slots) {
        assert_eq!(cache.len(slot), history.len() + new.len(), "the batched step advances every slot");
    }
}

/// Requests run together by a scheduler of several slots (decoding side by side, prompts
/// prefilled in chunks between their steps) get the greedy tokens each gets alone.
pub fn check_scheduler<B: Backend, K: Kernels<B> + Clone>(k: &K, device: &B::Device) {
    let model = tiny_model(k, 4, device);
    let prompts: [&[u32]; 3] = [&[5, 9, 2, 40, 33, 8, 1], &[17], &[60, 3, 3]];
    let request = |prompt: &[u32]| Request { ignore_eos: true, ..Request::new(prompt.to_vec(), 6, Sampler::greedy()) };
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut one = Scheduler::new(&model, None, Box::new(Eager), SchedulerOptions::single(16));
            one.generate(request(p), |_| {}, &|| false).expect("alone").tokens
        })
        .collect();
    let options = SchedulerOptions { slots: 3, prefill_chunk: 3, ..SchedulerOptions::single(16) };
    let mut together = Scheduler::new(&model, None, Box::new(Eager), options);
    let mut tokens: Vec<Option<Vec<u32>>> = vec![None; prompts.len()];
    for (id, prompt) in prompts.iter().enumerate() {
        together.admit(id as u64, request(prompt)).expect("a free slot");
    }
    while tokens.iter().any(Option::is_none) {
        for (id, event) in together.step().expect("a step").events {
            if let llama_core::sequence::Event::Finished(finished) = event {
                tokens[id as usize] = Some(finished.tokens);
            }
        }
    }
    let together: Vec<Vec<u32>> = tokens.into_iter().flatten().collect();
    assert_eq!(together, alone, "greedy tokens of requests run together vs alone");
}

/// `readback::argmax_on_device` (greedy decoding on a GPU) picks what the host's
/// `sampling::argmax` picks, ties included (the lowest id), for every row.
pub fn check_argmax_on_device<B: Backend>(device: &B::Device) {
    let vocab = 1000;
    let mut logits = random(2 * vocab, 9);
    for (row, ids) in [[613usize, 77, 905], [4, 999, 500]].into_iter().enumerate() {
        for &id in &ids {
            logits[row * vocab + id] = 10.0 + row as f32;
        }
    }
    let expected: Vec<u32> = logits.chunks(vocab).map(llama_core::sampling::argmax).collect();
    assert_eq!(expected, [77, 4], "host argmax keeps the lowest tied id");
    let got = llama_core::readback::argmax_on_device(upload::<B, 2>(&logits, [2, vocab], device));
    assert_eq!(got, expected, "argmax on the device");
}
