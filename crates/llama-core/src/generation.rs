//! The generation loop: one batched prefill of the prompt, then one token per step.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use burn::tensor::backend::{Backend, ExecutionError};
use burn::tensor::{Int, Tensor, TensorData};
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
    /// Plain greedy decoding may run one step ahead of the host where the provider says so
    /// ([`crate::kernels::Capabilities::pipelines_greedy`]); false reads each id before queuing the next step.
    pub pipeline: bool,
}

impl GenerationParams {
    pub fn new(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            ignore_eos: false,
            record_top_logits: 0,
            interrupt: None,
            decode: DecodeStep::Dynamic,
            pipeline: true,
        }
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
    /// Whether greedy decoding ran one step ahead of the host ([`crate::kernels::Capabilities::pipelines_greedy`]).
    pub pipelined: bool,
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
/// argmax, so on a GPU (`Capabilities::greedy_on_device`) the device picks it and one id crosses to
/// the host, not the vocabulary's 128k logits (a 256 KB copy, a conversion and a scan per
/// token). Both backends' argmax keeps the lowest id on ties, as `sampling::argmax` does.
fn read_step<B: Backend>(logits: Tensor<B, 2>, on_device: bool) -> StepOutput {
    if on_device { StepOutput::Token(argmax_on_device(logits)) } else { StepOutput::Logits(logits_to_host(logits)) }
}

/// The largest of `[1, vocab]` logits, picked on their device (lowest id on ties), read back.
pub fn argmax_on_device<B: Backend>(logits: Tensor<B, 2>) -> u32 {
    first_id(logits.argmax(1).try_into_data())
}

/// What the loop does after a token is chosen.
enum Next {
    /// Decode the token just accepted.
    Continue,
    Stop(StopReason),
}

/// Everything a generation keeps per token, whichever loop feeds it: the tokens, the streamed
/// text, the recorded logits, the clocks, and the stop conditions checked after each token.
struct Run<'a, F: FnMut(&str)> {
    params: &'a GenerationParams,
    tokenizer: Option<&'a Tokenizer>,
    decoder: Option<StreamDecoder<'a>>,
    on_text: F,
    generated: Vec<u32>,
    top_logits: Vec<Vec<(u32, f32)>>,
    text: String,
    timings: Timings,
    /// When the prompt was submitted.
    start: Instant,
}

impl<'a, F: FnMut(&str)> Run<'a, F> {
    fn new(params: &'a GenerationParams, tokenizer: Option<&'a Tokenizer>, on_text: F) -> Self {
        Self {
            params,
            tokenizer,
            decoder: tokenizer.map(StreamDecoder::new),
            on_text,
            generated: Vec::new(),
            top_logits: Vec::new(),
            text: String::new(),
            timings: Timings::default(),
            start: Instant::now(),
        }
    }

    fn emit(&mut self, piece: Option<String>) {
        if let Some(piece) = piece.filter(|p| !p.is_empty()) {
            (self.on_text)(&piece);
            self.text.push_str(&piece);
        }
    }

    /// Takes the token `next`, which arrived on the host `step_start` after the previous one;
    /// says whether another token should be decoded (`room`: the cache has a row for it).
    fn accept(&mut self, next: u32, step_start: Instant, sampler: &mut Sampler, room: bool) -> Next {
        if self.generated.is_empty() {
            self.timings.time_to_first_token_s = self.start.elapsed().as_secs_f64();
        } else {
            self.timings.decode_step_s.push(step_start.elapsed().as_secs_f64());
        }
        if !self.params.ignore_eos && self.tokenizer.is_some_and(|t| t.is_end_of_generation(next)) {
            return Next::Stop(StopReason::EndOfGeneration);
        }
        self.generated.push(next);
        sampler.accept(next);
        let piece = self.decoder.as_mut().map(|d| d.push(next));
        self.emit(piece);
        if self.generated.len() == self.params.max_tokens {
            Next::Stop(StopReason::MaxTokens)
        } else if self.params.interrupted() {
            Next::Stop(StopReason::Interrupted)
        } else if !room {
            Next::Stop(StopReason::ContextFull)
        } else {
            Next::Continue
        }
    }

    fn finish(mut self, stop_reason: StopReason, pipelined: bool) -> Generation {
        let piece = self.decoder.as_mut().map(|d| d.finish());
        self.emit(piece);
        self.timings.decode_s = self.timings.decode_step_s.iter().sum::<f64>();
        Generation {
            generated_tokens: self.generated,
            text: self.text,
            top_logits: self.top_logits,
            stop_reason,
            timings: self.timings,
            pipelined,
        }
    }
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
    on_text: impl FnMut(&str),
) -> Result<Generation, ModelError> {
    for &id in prompt {
        sampler.accept(id);
    }
    let plain_greedy = sampler.is_plain_greedy() && params.record_top_logits == 0;
    let can = model.kernels().capabilities(model.device());
    let mut run = Run::new(params, tokenizer, on_text);
    // With no token wanted the prompt is still prefilled (a chat keeps it in the cache), and
    // nothing is queued past it.
    let pipelined = params.max_tokens > 0 && plain_greedy && params.pipeline && can.pipelines_greedy;
    let stop_reason = if pipelined {
        pipelined_greedy(model, cache, prompt, &mut run, sampler)?
    } else {
        one_step_at_a_time(model, cache, prompt, &mut run, sampler, plain_greedy && can.greedy_on_device)?
    };
    Ok(run.finish(stop_reason, pipelined))
}

/// Each token's id (or logits) reaches the host before the next step is queued.
fn one_step_at_a_time<B: Backend, K: Kernels<B>, F: FnMut(&str)>(
    model: &Llama<B, K>,
    cache: &mut KvCache<B>,
    prompt: &[u32],
    run: &mut Run<'_, F>,
    sampler: &mut Sampler,
    on_device: bool,
) -> Result<StopReason, ModelError> {
    let mut output = read_step(model.forward(prompt, cache)?, on_device);
    run.timings.prefill_s = run.start.elapsed().as_secs_f64();
    if run.params.max_tokens == 0 {
        return Ok(StopReason::MaxTokens);
    }
    let mut step_start = run.start;
    loop {
        let next = match &output {
            StepOutput::Token(id) => *id,
            StepOutput::Logits(logits) => {
                if run.params.record_top_logits > 0 {
                    run.top_logits.push(sampling::top_k(logits, run.params.record_top_logits));
                }
                sampler.sample(logits)
            }
        };
        if let Next::Stop(reason) = run.accept(next, step_start, sampler, cache.check_room(1).is_ok()) {
            return Ok(reason);
        }
        step_start = Instant::now();
        output = read_step(model.decode(next, cache, run.params.decode)?, on_device);
    }
}

/// Greedy decoding one step ahead of the host: while the host waits for token N's id, token
/// N + 1's step, looked up from N's argmax on the device, is already queued. A step queued past
/// the end (the id turned out to end the reply) is dropped, and its cache row with it. The first
/// token is waited for before any step is queued, so the time to it stays the prefill's.
fn pipelined_greedy<B: Backend, K: Kernels<B>, F: FnMut(&str)>(
    model: &Llama<B, K>,
    cache: &mut KvCache<B>,
    prompt: &[u32],
    run: &mut Run<'_, F>,
    sampler: &mut Sampler,
) -> Result<StopReason, ModelError> {
    let (max_tokens, decode) = (run.params.max_tokens, run.params.decode);
    let mut id = argmax_ids(model.forward(prompt, cache)?);
    let mut step_start = run.start;
    loop {
        let reading = PendingId::request(id.clone());
        let first = run.generated.is_empty();
        let wanted = !first && run.generated.len() + 1 < max_tokens && !run.params.interrupted();
        let ahead = if wanted && cache.check_room(1).is_ok() {
            Some(argmax_ids(model.decode_device_id(id.clone(), cache, decode)?))
        } else {
            None
        };
        let next = reading.wait();
        if first {
            run.timings.prefill_s = run.start.elapsed().as_secs_f64();
        }
        // As the unpipelined loop would see the cache: without the row of the step queued ahead.
        let room = ahead.is_some() || cache.check_room(1).is_ok();
        let verdict = run.accept(next, step_start, sampler, room);
        // The next token's time runs from this one's arrival, as in the unpipelined loop.
        step_start = Instant::now();
        match (verdict, ahead) {
            (Next::Continue, Some(ahead)) => id = ahead,
            (Next::Continue, None) => id = argmax_ids(model.decode_device_id(id, cache, decode)?),
            (Next::Stop(reason), ahead) => {
                if ahead.is_some() {
                    cache.truncate(cache.len() - 1);
                }
                return Ok(reason);
            }
        }
    }
}

/// `[1, vocab]` logits' argmax, `[1]`, left on the device (lowest id on ties).
fn argmax_ids<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1, Int> {
    logits.argmax(1).reshape([1])
}

/// A token id on its way to the host. Requesting the read makes the device work through all
/// that is queued before it; the host waits only in [`Self::wait`], after queuing more.
enum PendingId {
    Arrived(u32),
    Reading(Pin<Box<dyn Future<Output = Result<TensorData, ExecutionError>>>>),
}

impl PendingId {
    fn request<B: Backend>(id: Tensor<B, 1, Int>) -> Self {
        let mut read = Box::pin(id.into_data_async());
        // One poll submits the read (a lazy backend flushes its queue here) without blocking.
        match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(data) => Self::Arrived(first_id(data)),
            Poll::Pending => Self::Reading(read),
        }
    }

    fn wait(self) -> u32 {
        match self {
            Self::Arrived(id) => id,
            Self::Reading(read) => {
                first_id(burn::tensor::try_read_sync(read).expect("a blocking read on this platform"))
            }
        }
    }
}

fn first_id(data: Result<TensorData, ExecutionError>) -> u32 {
    let data = data.unwrap_or_else(|err| panic!("reading a token id back from the device failed: {err:?}"));
    data.iter::<i64>().next().expect("one id") as u32
}

/// Tokens per second for `n` tokens in `seconds` (0 when nothing was timed).
pub fn rate(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 { n as f64 / seconds } else { 0.0 }
}
