//! The generation loop: one batched prefill of the prompt, then one token per step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::{Tensor, backend::Backend};
use serde::Serialize;

use crate::kernels::Kernels;
use crate::kv_cache::KvCache;
use crate::model::{DecodeStep, Llama, ModelError};
use crate::sampling::{self, Sampler};
use crate::tokenizer::{StreamDecoder, Tokenizer};

#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub max_tokens: usize,
    /// Keep going past end-of-generation tokens (for fixed-length measurements).
    pub ignore_eos: bool,
    /// How many of the largest logits to record at each step (0: none).
    pub record_top_logits: usize,
    /// Set from elsewhere (a Ctrl-C handler) to stop after the current token.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// How each token after the prompt runs ([`Llama::decode_step`]).
    pub decode: DecodeStep,
}

impl GenerationParams {
    pub fn new(max_tokens: usize) -> Self {
        Self { max_tokens, ignore_eos: false, record_top_logits: 0, interrupt: None, decode: DecodeStep::Dynamic }
    }

    fn interrupted(&self) -> bool {
        self.interrupt.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    MaxTokens,
    EndOfGeneration,
    ContextFull,
    Interrupted,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Prompt submitted → first generated token on the host (prefill + first sample).
    pub time_to_first_token_s: f64,
    pub prefill_s: f64,
    /// Every decode step after the first token, each ending with its token on the host.
    pub decode_s: f64,
    pub decode_step_s: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub generated_tokens: Vec<u32>,
    pub text: String,
    /// Per generated token, the largest logits at the position that produced it.
    pub top_logits: Vec<Vec<(u32, f32)>>,
    pub stop_reason: StopReason,
    pub timings: Timings,
}

/// Brings `[1, vocab]` logits to the host as f32. This read is also the step's synchronisation
/// point: the clock cannot stop before the device has finished.
pub fn logits_to_host<B: Backend>(logits: Tensor<B, 2>) -> Vec<f32> {
    logits.into_data().convert::<f32>().to_vec::<f32>().expect("f32 after convert")
}

/// What one step hands the sampler: the logits, or only the token when the device chose it.
enum StepOutput {
    Logits(Vec<f32>),
    Token(u32),
}

/// Reads a step's result back. Plain greedy sampling with no logits to record needs only the
/// argmax, so on a GPU (`Kernels::greedy_on_device`) the device picks it and one id crosses to
/// the host, not the vocabulary's 128k logits (a 256 KB copy, a conversion and a scan per
/// token). Both backends' argmax keeps the lowest id on ties, as `sampling::argmax` does.
fn read_step<B: Backend>(logits: Tensor<B, 2>, on_device: bool) -> StepOutput {
    if on_device { StepOutput::Token(argmax_on_device(logits)) } else { StepOutput::Logits(logits_to_host(logits)) }
}

/// The largest of `[1, vocab]` logits, picked on their device (lowest id on ties), read back.
pub fn argmax_on_device<B: Backend>(logits: Tensor<B, 2>) -> u32 {
    logits.argmax(1).into_data().iter::<i64>().next().expect("one argmax per row") as u32
}

/// Prefills `prompt` after whatever `cache` holds, then samples up to `params.max_tokens` tokens,
/// calling `on_text` with each piece of complete UTF-8 as it is decoded. Without a tokenizer
/// (random-weight benchmark models) there is no text and no end-of-generation token. The sampler
/// sees every prompt and generated token (for its repetition penalty).
pub fn generate<B: Backend, K: Kernels<B>>(
    model: &Llama<B, K>,
    cache: &mut KvCache<B>,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    params: &GenerationParams,
    sampler: &mut Sampler,
    mut on_text: impl FnMut(&str),
) -> Result<Generation, ModelError> {
    let mut timings = Timings::default();
    let mut decoder = tokenizer.map(StreamDecoder::new);
    let mut generated = Vec::new();
    let mut top_logits = Vec::new();
    let mut text = String::new();
    let mut emit = |piece: Option<String>, text: &mut String| {
        if let Some(piece) = piece.filter(|p| !p.is_empty()) {
            on_text(&piece);
            text.push_str(&piece);
        }
    };

    for &id in prompt {
        sampler.accept(id);
    }
    let on_device =
        sampler.is_plain_greedy() && params.record_top_logits == 0 && model.kernels().greedy_on_device(model.device());
    let start = Instant::now();
    let mut output = read_step(model.forward(prompt, cache)?, on_device);
    timings.prefill_s = start.elapsed().as_secs_f64();
    let mut stop_reason = StopReason::MaxTokens;
    let mut step_start = start;
    while generated.len() < params.max_tokens {
        let next = match &output {
            StepOutput::Token(id) => *id,
            StepOutput::Logits(logits) => {
                if params.record_top_logits > 0 {
                    top_logits.push(sampling::top_k(logits, params.record_top_logits));
                }
                sampler.sample(logits)
            }
        };
        if generated.is_empty() {
            timings.time_to_first_token_s = start.elapsed().as_secs_f64();
        } else {
            timings.decode_step_s.push(step_start.elapsed().as_secs_f64());
        }
        if !params.ignore_eos && tokenizer.is_some_and(|t| t.is_end_of_generation(next)) {
            stop_reason = StopReason::EndOfGeneration;
            break;
        }
        generated.push(next);
        sampler.accept(next);
        emit(decoder.as_mut().map(|d| d.push(next)), &mut text);
        if generated.len() == params.max_tokens {
            break;
        }
        if params.interrupted() {
            stop_reason = StopReason::Interrupted;
            break;
        }
        if cache.check_room(1).is_err() {
            stop_reason = StopReason::ContextFull;
            break;
        }
        step_start = Instant::now();
        let step = model.decode(next, cache, params.decode);
        output = read_step(step?, on_device);
    }
    emit(decoder.as_mut().map(|d| d.finish()), &mut text);
    timings.decode_s = timings.decode_step_s.iter().sum::<f64>();
    Ok(Generation { generated_tokens: generated, text, top_logits, stop_reason, timings })
}

/// Tokens per second for `n` tokens in `seconds` (0 when nothing was timed).
pub fn rate(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 { n as f64 / seconds } else { 0.0 }
}
