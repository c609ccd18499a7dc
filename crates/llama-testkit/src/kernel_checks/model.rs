//! Whole-model checks on a tiny random model: incremental decode, the static-shape step, and the
//! device argmax.

use burn::tensor::backend::Backend;
use llama_core::config::LlamaConfig;
use llama_core::kernels::Kernels;
use llama_core::model::{DecodeStep, Llama};

use super::{assert_close, download, random, upload};

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

fn as_f64(values: Vec<f32>) -> Vec<f64> {
    values.into_iter().map(f64::from).collect()
}

/// Decoding token by token through the KV cache gives the logits of one full prefill.
pub fn check_incremental_decode<B: Backend, K: Kernels<B> + Clone>(k: &K, device: &B::Device) {
    B::seed(device, 1);
    let model = Llama::random(tiny_config(), true, k.clone(), 16, device);
    let tokens = [3u32, 17, 42, 5, 60, 8];
    let mut full = model.new_cache(16);
    let expected = as_f64(download(model.forward(&tokens, &mut full).expect("prefill")));
    let mut stepwise = model.new_cache(16);
    model.forward(&tokens[..3], &mut stepwise).expect("prefill");
    let mut last = None;
    for &t in &tokens[3..] {
        last = Some(model.forward(&[t], &mut stepwise).expect("decode"));
    }
    assert_close("incremental decode vs prefill", &download(last.expect("decoded")), &expected, 1e-4, 1e-4);
}

/// The static-shape decode step (device position, whole-cache masked attention), run op by op
/// and through the provider's capture (`--compile`), gives every step's logits as the dynamic
/// step does, after a prefill.
pub fn check_static_decode<B: Backend, K: Kernels<B> + Clone>(k: &K, device: &B::Device) {
    B::seed(device, 2);
    let model = Llama::random(tiny_config(), true, k.clone(), 16, device);
    let tokens = [9u32, 33, 1, 50, 27, 4, 61];
    for how in [DecodeStep::Static, DecodeStep::Captured] {
        let (mut dynamic, mut fixed) = (model.new_cache(16), model.new_cache(12));
        model.forward(&tokens[..2], &mut dynamic).expect("prefill");
        model.forward(&tokens[..2], &mut fixed).expect("prefill");
        for (step, &t) in tokens[2..].iter().enumerate() {
            let expected = as_f64(download(model.decode(t, &mut dynamic, DecodeStep::Dynamic).expect("dynamic step")));
            let got = download(model.decode(t, &mut fixed, how).expect("static step"));
            assert_close(&format!("{how:?} decode step {step}"), &got, &expected, 1e-4, 1e-4);
        }
        assert_eq!(fixed.len(), tokens.len(), "the {how:?} step advances the cache");
    }
}

/// `generation::argmax_on_device` (greedy decoding on a GPU) picks what the host's
/// `sampling::argmax` picks, ties included: the lowest id.
pub fn check_argmax_on_device<B: Backend>(device: &B::Device) {
    let vocab = 1000;
    let mut logits = random(vocab, 9);
    for (case, ids) in [[613usize, 77, 905], [4, 999, 500]].into_iter().enumerate() {
        for &id in &ids {
            logits[id] = 10.0 + case as f32;
        }
        let expected = llama_core::sampling::argmax(&logits);
        assert_eq!(expected as usize, *ids.iter().min().expect("ids"), "host argmax keeps the lowest tied id");
        let got = llama_core::generation::argmax_on_device(upload::<B, 2>(&logits, [1, vocab], device));
        assert_eq!(got, expected, "argmax on the device, ties at {ids:?}");
    }
}

/// A batched pass (a server's slots) gives each sequence the logits it gets alone: sequences at
/// different positions, one decoding a token, one prefilling a chunk, one starting afresh.
pub fn check_batched_forward<B: Backend, K: Kernels<B> + Clone>(k: &K, device: &B::Device) {
    B::seed(device, 3);
    let model = Llama::random(tiny_config(), true, k.clone(), 16, device);
    let histories: [&[u32]; 3] = [&[7, 21, 40, 2, 11], &[30, 5], &[]];
    let new_tokens: [&[u32]; 3] = [&[13], &[44, 9, 63], &[1, 2]];
    let mut alone = Vec::new();
    let mut caches = Vec::new();
    for (history, new) in histories.iter().zip(new_tokens) {
        let mut cache = model.new_cache(16);
        if !history.is_empty() {
            model.forward(history, &mut cache).expect("history");
        }
        let mut own = model.new_cache(16);
        let whole: Vec<u32> = history.iter().chain(new).copied().collect();
        alone.extend(as_f64(download(model.forward(&whole, &mut own).expect("alone"))));
        caches.push(cache);
    }
    let entries = caches
        .iter_mut()
        .zip(new_tokens)
        .map(|(cache, tokens)| llama_core::batch::BatchEntry { tokens, cache })
        .collect();
    let batched = download(model.forward_batch(entries).expect("batched pass"));
    assert_close("batched pass vs each sequence alone", &batched, &alone, 1e-4, 1e-4);
    for ((cache, history), new) in caches.iter().zip(histories).zip(new_tokens) {
        assert_eq!(cache.len(), history.len() + new.len(), "the batched pass advances every cache");
    }
}
