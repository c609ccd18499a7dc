//! Continuous batching: a fixed set of slots, each a KV cache that one request at a time
//! generates into, all advanced together by [`Slots::step`].
//!
//! Each step is one forward pass over every token due: each decoding slot's last sampled token,
//! and at most one chunk of one waiting prompt, so a long prompt is spread over several steps
//! while the other slots keep decoding. A slot keeps its last request's ids and cache, and a
//! request that shares a prefix with them (the next turn of a conversation) prefills only the
//! rest, as [`crate::chat`] does.

use burn::tensor::backend::Backend;

use crate::batch::BatchEntry;
use crate::generation::logits_to_host;
use crate::kernels::Kernels;
use crate::kv_cache::KvCache;
use crate::model::{DecodeStep, Llama, ModelError};
use crate::sampling::Sampler;
use crate::stop::StopStrings;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// What one request asks to generate.
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampler: Sampler,
    pub stop: StopStrings,
    /// Keep going past end-of-generation tokens (fixed-length measurements).
    pub ignore_eos: bool,
}

/// Why a request's generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
}

/// What a step produced for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The next piece of the reply (complete characters, stop strings held back).
    Text(String),
    Finished(Finished),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    /// Of the prompt, how many tokens were already in the slot's cache.
    pub reused_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("every slot is busy")]
    NoFreeSlot,
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {tokens} tokens, which leaves no room to generate in the {capacity}-token context")]
    TooLong { tokens: usize, capacity: usize },
}

/// What one step did, for the server's metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    /// Sequences that decoded a token.
    pub decoded: usize,
    /// Prompt tokens prefilled.
    pub prefilled: usize,
    /// Tokens added to replies (an end-of-generation token is not one).
    pub generated: usize,
}

/// A request running in a slot.
struct Job<'t> {
    id: u64,
    /// Prompt ids not yet in the cache.
    pending: Vec<u32>,
    /// The last sampled token, not yet in the cache: the next step decodes it.
    next: Option<u32>,
    generated: usize,
    prompt_tokens: usize,
    reused_tokens: usize,
    request: Request,
    decoder: StreamDecoder<'t>,
}

struct Slot<'t, B: Backend> {
    cache: KvCache<B>,
    /// The ids whose keys and values the cache holds, in order.
    cached: Vec<u32>,
    job: Option<Job<'t>>,
}

/// The slots and the model they run on.
pub struct Slots<'m, B: Backend, K: Kernels<B>> {
    model: &'m Llama<B, K>,
    tokenizer: &'m Tokenizer,
    slots: Vec<Slot<'m, B>>,
    /// How a lone decoding sequence steps (`--compile`'s captured step, the provider's static
    /// one); steps of several sequences are batched passes.
    lone_decode: DecodeStep,
    /// Most prompt tokens prefilled in one step.
    prefill_chunk: usize,
}

impl<'m, B: Backend, K: Kernels<B>> Slots<'m, B, K> {
    /// `count` slots of `context` tokens each.
    pub fn new(
        model: &'m Llama<B, K>,
        tokenizer: &'m Tokenizer,
        count: usize,
        context: usize,
        lone_decode: DecodeStep,
        prefill_chunk: usize,
    ) -> Self {
        let slots =
            (0..count).map(|_| Slot { cache: model.new_cache(context), cached: Vec::new(), job: None }).collect();
        Self { model, tokenizer, slots, lone_decode, prefill_chunk: prefill_chunk.max(1) }
    }

    pub fn context(&self) -> usize {
        self.slots.first().map_or(0, |s| s.cache.capacity())
    }

    /// Slots running a request.
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.job.is_some()).count()
    }

    pub fn has_free_slot(&self) -> bool {
        self.active() < self.slots.len()
    }

    /// Starts `request` (known to the caller as `id`) in the free slot whose cache shares the
    /// longest prefix with its prompt; returns how many prompt tokens that slot already holds.
    pub fn admit(&mut self, id: u64, mut request: Request) -> Result<usize, AdmitError> {
        let (tokens, capacity) = (request.prompt.len(), self.context());
        if tokens == 0 {
            return Err(AdmitError::EmptyPrompt);
        }
        if tokens >= capacity {
            return Err(AdmitError::TooLong { tokens, capacity });
        }
        let slot = self
            .slots
            .iter_mut()
            .filter(|s| s.job.is_none())
            .max_by_key(|s| crate::chat::common_prefix(&s.cached, &request.prompt))
            .ok_or(AdmitError::NoFreeSlot)?;
        // At least the last prompt token is run again: its logits pick the first new token.
        let reused = crate::chat::common_prefix(&slot.cached, &request.prompt).min(tokens - 1);
        slot.cache.truncate(reused);
        slot.cached.truncate(reused);
        // The penalties look at the prompt too.
        for &token in &request.prompt {
            request.sampler.accept(token);
        }
        slot.job = Some(Job {
            id,
            pending: request.prompt[reused..].to_vec(),
            next: None,
            generated: 0,
            prompt_tokens: tokens,
            reused_tokens: reused,
            decoder: StreamDecoder::new(self.tokenizer),
            request,
        });
        Ok(reused)
    }

    /// Stops request `id` (its client went away); its slot keeps what it has cached.
    pub fn cancel(&mut self, id: u64) -> bool {
        let slot = self.slots.iter_mut().find(|s| s.job.as_ref().is_some_and(|j| j.id == id));
        slot.map(|s| s.job = None).is_some()
    }

    /// One forward pass over every token due; returns each request's events, in slot order.
    /// Nothing is due when no slot runs a request.
    pub fn step(&mut self) -> Result<(Vec<(u64, Event)>, StepStats), ModelError> {
        // Every decoding slot, then the first slot still prefilling.
        let decoding: Vec<usize> =
            (0..self.slots.len()).filter(|&i| self.job(i).is_some_and(|j| j.next.is_some())).collect();
        let prefilling = (0..self.slots.len()).find(|&i| self.job(i).is_some_and(|j| !j.pending.is_empty()));
        let chunk = prefilling.map(|i| self.job(i).expect("a job").pending.len().min(self.prefill_chunk));
        let mut stats = StepStats { decoded: decoding.len(), prefilled: chunk.unwrap_or(0), generated: 0 };
        let rows: Vec<usize> = decoding.iter().copied().chain(prefilling).collect();
        if rows.is_empty() {
            return Ok((Vec::new(), stats));
        }
        let logits = self.forward(&rows, chunk)?;
        let vocab = logits.len() / rows.len();
        let mut events = Vec::new();
        for (row, &i) in rows.iter().enumerate() {
            let slot = &mut self.slots[i];
            let job = slot.job.as_mut().expect("a running slot");
            // The tokens this step put into the cache.
            let fed = match job.next.take() {
                Some(token) => vec![token],
                None => job.pending.drain(..chunk.expect("a prefill chunk")).collect(),
            };
            slot.cached.extend_from_slice(&fed);
            if !job.pending.is_empty() {
                continue;
            }
            let token = job.request.sampler.sample(&logits[row * vocab..(row + 1) * vocab]);
            let room = slot.cache.check_room(1).is_ok();
            let before = job.generated;
            let (text, finished) = Self::take_token(job, token, room, self.tokenizer);
            stats.generated += job.generated - before;
            let id = job.id;
            if !text.is_empty() {
                events.push((id, Event::Text(text)));
            }
            if let Some(finished) = finished {
                events.push((id, Event::Finished(finished)));
                slot.job = None;
            }
        }
        Ok((events, stats))
    }

    fn job(&self, slot: usize) -> Option<&Job<'m>> {
        self.slots[slot].job.as_ref()
    }

    /// Runs the step's pass over slots `rows` (decoding slots, then the one prefilling `chunk`
    /// tokens) and brings its logits to the host, `[rows · vocab]`: a lone decoding sequence
    /// through the model's decode step, anything more as one batched pass.
    fn forward(&mut self, rows: &[usize], chunk: Option<usize>) -> Result<Vec<f32>, ModelError> {
        let (model, lone_decode) = (self.model, self.lone_decode);
        if let ([i], None) = (rows, chunk) {
            let slot = &mut self.slots[*i];
            let token = slot.job.as_ref().and_then(|j| j.next).expect("a decoding slot");
            return Ok(logits_to_host(model.decode(token, &mut slot.cache, lone_decode)?));
        }
        // Each running slot's tokens due this step, then taken in `rows`' order.
        let mut due: Vec<Option<BatchEntry<'_, B>>> = (self.slots.iter_mut())
            .map(|slot| {
                let job = slot.job.as_ref()?;
                let tokens = match &job.next {
                    Some(token) => std::slice::from_ref(token),
                    None => job.pending.get(..chunk?)?,
                };
                Some(BatchEntry { tokens, cache: &mut slot.cache })
            })
            .collect();
        let entries = rows.iter().map(|&i| due[i].take().expect("a row's slot has tokens due")).collect();
        Ok(logits_to_host(model.forward_batch(entries)?))
    }

    /// Takes a sampled token into `job`: returns the text it lets through and, when the request
    /// is done, how it ended (`room`: the cache has a row to decode the token in).
    fn take_token(job: &mut Job<'m>, token: u32, room: bool, tokenizer: &Tokenizer) -> (String, Option<Finished>) {
        if !job.request.ignore_eos && tokenizer.is_end_of_generation(token) {
            let (text, _) = job.flush();
            return (text, Some(job.finished(FinishReason::Stop)));
        }
        job.generated += 1;
        job.request.sampler.accept(token);
        let filtered = job.request.stop.push(&job.decoder.push(token));
        if filtered.stopped {
            return (filtered.text, Some(job.finished(FinishReason::Stop)));
        }
        if job.generated < job.request.max_tokens && room {
            job.next = Some(token);
            return (filtered.text, None);
        }
        let (tail, stopped) = job.flush();
        let reason = if stopped { FinishReason::Stop } else { FinishReason::Length };
        (filtered.text + &tail, Some(job.finished(reason)))
    }
}

impl Job<'_> {
    /// The text still held (a partial character, a possible stop string) at the end of the
    /// reply, and whether it reached a stop string.
    fn flush(&mut self) -> (String, bool) {
        let stop = &mut self.request.stop;
        let tail = stop.push(&self.decoder.finish());
        if tail.stopped { (tail.text, true) } else { (tail.text + &stop.finish(), false) }
    }

    fn finished(&self, reason: FinishReason) -> Finished {
        Finished {
            reason,
            prompt_tokens: self.prompt_tokens,
            reused_tokens: self.reused_tokens,
            completion_tokens: self.generated,
        }
    }
}
