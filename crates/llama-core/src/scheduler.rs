//! The one sequence engine: a fixed set of cache slots, each generating one request at a time,
//! all advanced together by [`Scheduler::step`]. A server is a scheduler with N slots; one-shot
//! generation, a chat and the benchmark are a single slot of it ([`Scheduler::generate`]).
//!
//! Each step is one pass of the model over every token due: each decoding sequence's last token,
//! and at most one chunk of one waiting prompt, so a long prompt is spread over several steps
//! while the others keep decoding. A slot keeps its last request's ids and cache, and a request
//! that shares a prefix with them (the next turn of a conversation) prefills only the rest. A
//! greedy sequence decoding alone runs one step ahead of the host where the provider can
//! (`pipeline.rs`).

use crate::batch::{Batch, StepError};
use crate::kernels::{Capabilities, Kernels};
use crate::kv_cache::KvCache;
use crate::model::Llama;
use crate::pipeline::{InFlight, Stepper, Token, pipelined_step};
use crate::readback::{PendingId, argmax_on_device, logits_to_host};
use crate::sequence::{Event, FinishReason, Finished, Next, Request, Sequence};
use crate::tokenizer::Tokenizer;

pub use crate::pipeline::{Eager, StepRunner};

/// How a scheduler runs.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerOptions {
    pub slots: usize,
    /// Positions each slot holds.
    pub context: usize,
    /// Most prompt tokens one step prefills.
    pub prefill_chunk: usize,
    /// A greedy sequence decoding alone runs one step ahead of the host, where the provider
    /// pipelines ([`Capabilities::pipelines_greedy`]).
    pub pipeline: bool,
    /// A sequence decoding alone runs the static-shape step (`--compile`); it does anyway where
    /// the provider says so ([`Capabilities::static_decode`]).
    pub compile: bool,
}

impl SchedulerOptions {
    /// One slot of `context` positions, the whole prompt in one step, pipelined where possible.
    pub fn single(context: usize) -> Self {
        Self { slots: 1, context, prefill_chunk: usize::MAX, pipeline: true, compile: false }
    }
}

/// Why a request could not be admitted or run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("every slot is busy")]
    NoFreeSlot,
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {tokens} tokens, more than the {capacity}-token context holds")]
    TooLong { tokens: usize, capacity: usize },
    #[error(transparent)]
    Step(#[from] StepError),
}

/// What one step did, for a server's metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    /// Sequences that decoded a token.
    pub decoded: usize,
    /// Prompt tokens prefilled.
    pub prefilled: usize,
    /// Tokens added to replies (an end-of-generation token is not one).
    pub generated: usize,
}

/// Each request's events from one step, in slot order, and what the step did.
#[derive(Debug, Default)]
pub struct StepReport {
    pub events: Vec<(u64, Event)>,
    pub stats: StepStats,
}

/// A cache slot: the ids it holds, in order, and the request generating into it.
struct Slot<'t> {
    cached: Vec<u32>,
    sequence: Option<Sequence<'t>>,
}

/// The slots and the model they run on.
pub struct Scheduler<'m, B: burn::tensor::backend::Backend, K: Kernels<B>> {
    stepper: Stepper<'m, B, K>,
    tokenizer: Option<&'m Tokenizer>,
    cache: KvCache<B>,
    slots: Vec<Slot<'m>>,
    options: SchedulerOptions,
    capabilities: Capabilities,
    in_flight: Option<InFlight<B>>,
}

impl<'m, B: burn::tensor::backend::Backend, K: Kernels<B>> Scheduler<'m, B, K> {
    /// `options.slots` slots of `options.context` positions over `model`, each step run by
    /// `runner`. Without a tokenizer there is no text and no end-of-generation token.
    pub fn new(
        model: &'m Llama<B, K>,
        tokenizer: Option<&'m Tokenizer>,
        runner: Box<dyn StepRunner<B, K> + 'm>,
        options: SchedulerOptions,
    ) -> Self {
        let capabilities = model.kernels().capabilities(model.device());
        let static_decode = options.compile || capabilities.static_decode;
        let slots = (0..options.slots).map(|_| Slot { cached: Vec::new(), sequence: None }).collect();
        Self {
            cache: model.new_cache(options.context, options.slots),
            stepper: Stepper { model, runner, static_decode },
            tokenizer,
            slots,
            options: SchedulerOptions { prefill_chunk: options.prefill_chunk.max(1), ..options },
            capabilities,
            in_flight: None,
        }
    }

    /// Positions each slot holds.
    pub fn context(&self) -> usize {
        self.cache.capacity()
    }

    /// Slots running a request.
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.sequence.is_some()).count()
    }

    pub fn has_free_slot(&self) -> bool {
        self.active() < self.slots.len()
    }

    /// Tokens slot `slot` holds in its cache.
    pub fn cached_tokens(&self, slot: usize) -> usize {
        self.cache.len(slot)
    }

    /// Whether a sequence decoding alone runs the static-shape step.
    pub fn static_decode(&self) -> bool {
        self.stepper.static_decode
    }

    /// Empties slot `slot`'s cache (its request, if any, is cancelled first).
    pub fn forget(&mut self, slot: usize) {
        if let Some(id) = self.slots[slot].sequence.as_ref().map(|s| s.id) {
            self.cancel(id);
        }
        self.cache.truncate(slot, 0);
        self.slots[slot].cached.clear();
    }

    /// Starts `request` (known to the caller as `id`) in the free slot whose cache shares the
    /// longest prefix with its prompt; returns how many prompt tokens that slot already holds.
    pub fn admit(&mut self, id: u64, request: Request) -> Result<usize, EngineError> {
        let (tokens, capacity) = (request.prompt.len(), self.cache.capacity());
        if tokens == 0 {
            return Err(EngineError::EmptyPrompt);
        }
        if tokens > capacity {
            return Err(EngineError::TooLong { tokens, capacity });
        }
        let (index, slot) = (self.slots.iter_mut().enumerate())
            .filter(|(_, s)| s.sequence.is_none())
            .max_by_key(|(_, s)| common_prefix(&s.cached, &request.prompt))
            .ok_or(EngineError::NoFreeSlot)?;
        // At least the last prompt token is run again: its logits pick the first new token.
        let reused = common_prefix(&slot.cached, &request.prompt).min(tokens - 1);
        self.cache.truncate(index, reused);
        slot.cached.truncate(reused);
        slot.sequence = Some(Sequence::new(id, request, reused, self.tokenizer));
        Ok(reused)
    }

    /// Ends request `id` now: the text it still held and its account (nothing if it is not
    /// running). Its slot keeps what it has cached.
    pub fn cancel(&mut self, id: u64) -> Vec<Event> {
        let Some(index) = self.slots.iter().position(|s| s.sequence.as_ref().is_some_and(|q| q.id == id)) else {
            return Vec::new();
        };
        if self.in_flight.as_ref().is_some_and(|f| f.slot == index) {
            // Its input token is taken and cached; the id it led to is dropped unread.
            self.in_flight = None;
        }
        let sequence = self.slots[index].sequence.take().expect("found running");
        let mut text = String::new();
        let finished = sequence.finish(FinishReason::Cancelled, &mut text);
        [(!text.is_empty()).then_some(Event::Text(text)), Some(Event::Finished(Box::new(finished)))]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Admits `request` into a free slot and steps until it ends, passing its text to `on_text`
    /// as it comes; `interrupted` is asked between steps (Ctrl-C).
    pub fn generate(
        &mut self,
        request: Request,
        mut on_text: impl FnMut(&str),
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Finished, EngineError> {
        const ID: u64 = u64::MAX;
        self.admit(ID, request)?;
        loop {
            let events = match interrupted() {
                true => self.cancel(ID),
                false => self.step()?.events.into_iter().filter(|(id, _)| *id == ID).map(|(_, e)| e).collect(),
            };
            for event in events {
                match event {
                    Event::Text(text) => on_text(&text),
                    Event::Finished(finished) => return Ok(*finished),
                }
            }
        }
    }

    /// One pass over every token due; each request's events. Nothing is due when no slot runs a
    /// request.
    pub fn step(&mut self) -> Result<StepReport, StepError> {
        if let Some(slot) = self.lone_pipelined() {
            return self.pipelined(slot);
        }
        let mut report = StepReport::default();
        self.land(&mut report);
        let decoding: Vec<usize> =
            (0..self.slots.len()).filter(|&i| self.sequence(i).is_some_and(|s| s.next.is_some())).collect();
        let prefilling = (0..self.slots.len()).find(|&i| self.sequence(i).is_some_and(|s| !s.pending().is_empty()));
        let chunk =
            prefilling.map_or(0, |i| self.sequence(i).map_or(0, |s| s.pending().len()).min(self.options.prefill_chunk));
        let rows: Vec<usize> = decoding.iter().copied().chain(prefilling).collect();
        if rows.is_empty() {
            return Ok(report);
        }
        let logits = match (decoding.as_slice(), prefilling) {
            ([slot], None) => {
                let token = self.sequence(*slot).and_then(|s| s.next).expect("a decoding slot");
                self.stepper.decode(&mut self.cache, *slot, Token::Host(token))?
            }
            _ => {
                let mut batch = Batch::new(&mut self.cache);
                for &slot in &rows {
                    let sequence = self.slots[slot].sequence.as_ref().expect("a running slot");
                    match sequence.next {
                        Some(token) => batch.push(slot, &[token])?,
                        None => batch.push(slot, &sequence.pending()[..chunk])?,
                    }
                }
                self.stepper.run(&mut batch)?
            }
        };
        let plain_greedy = rows.iter().all(|&i| self.sequence(i).is_some_and(|s| s.plain_greedy()));
        let output = match plain_greedy && self.capabilities.greedy_on_device {
            true => Output::Ids(argmax_on_device(logits)),
            false => Output::Logits { values: logits_to_host(logits), vocab: self.stepper.model.config.vocab_size },
        };
        for (row, &slot) in rows.iter().enumerate() {
            self.take_row(slot, &output, row, chunk, &mut report);
        }
        Ok(report)
    }

    fn sequence(&self, slot: usize) -> Option<&Sequence<'m>> {
        self.slots[slot].sequence.as_ref()
    }

    /// The slot of the one running sequence, if it decodes greedily and the provider pipelines.
    fn lone_pipelined(&self) -> Option<usize> {
        if !(self.options.pipeline && self.capabilities.pipelines_greedy) || self.active() != 1 {
            return None;
        }
        let slot = self.slots.iter().position(|s| s.sequence.is_some())?;
        let sequence = self.sequence(slot)?;
        let decoding = sequence.next.is_some() || self.in_flight.as_ref().is_some_and(|f| f.slot == slot);
        (decoding && sequence.plain_greedy()).then_some(slot)
    }

    fn pipelined(&mut self, slot: usize) -> Result<StepReport, StepError> {
        let state = &mut self.slots[slot];
        let sequence = state.sequence.take().expect("a running slot");
        let before = sequence.generated();
        let id = sequence.id;
        let done =
            pipelined_step(&mut self.stepper, &mut self.cache, slot, sequence, &mut state.cached, &mut self.in_flight)?;
        let mut report =
            StepReport { stats: StepStats { decoded: 1, ..StepStats::default() }, ..StepReport::default() };
        report.stats.generated = done.sequence.generated() - before;
        self.settle(slot, id, done.sequence, done.next, done.text, &mut report);
        Ok(report)
    }

    /// A token read ahead for a sequence that no longer decodes alone: waited for and taken, so
    /// that its sequence joins the step as any other.
    fn land(&mut self, report: &mut StepReport) {
        let Some(flight) = self.in_flight.take() else { return };
        let token = PendingId::request(flight.id).wait();
        let room = self.cache.check_room(flight.slot, 1).is_ok();
        let mut sequence = self.slots[flight.slot].sequence.take().expect("an in-flight slot runs");
        let (id, before, mut text) = (sequence.id, sequence.generated(), String::new());
        let next = sequence.accept(token, room, &mut text);
        report.stats.generated += sequence.generated() - before;
        self.settle(flight.slot, id, sequence, next, text, report);
    }

    /// Row `row` of the step's output for the sequence in `slot`: what it fed is cached; once
    /// its prompt is in, its next token is drawn and taken.
    fn take_row(&mut self, slot: usize, output: &Output, row: usize, chunk: usize, report: &mut StepReport) {
        let state = &mut self.slots[slot];
        let mut sequence = state.sequence.take().expect("a running slot");
        let id = sequence.id;
        match sequence.next.take() {
            Some(token) => {
                state.cached.push(token);
                report.stats.decoded += 1;
            }
            None => {
                state.cached.extend_from_slice(&sequence.pending()[..chunk]);
                sequence.prompt_done += chunk;
                report.stats.prefilled += chunk;
                if !sequence.pending().is_empty() {
                    state.sequence = Some(sequence);
                    return;
                }
                sequence.prompt_read();
                if !sequence.wants_more_than(0) {
                    return self.settle(
                        slot,
                        id,
                        sequence,
                        Next::Finish(FinishReason::MaxTokens),
                        String::new(),
                        report,
                    );
                }
            }
        }
        let token = match output {
            Output::Ids(ids) => ids[row],
            Output::Logits { values, vocab } => sequence.sample(&values[row * vocab..(row + 1) * vocab]),
        };
        let room = self.cache.check_room(slot, 1).is_ok();
        let (before, mut text) = (sequence.generated(), String::new());
        let next = sequence.accept(token, room, &mut text);
        report.stats.generated += sequence.generated() - before;
        self.settle(slot, id, sequence, next, text, report);
    }

    /// Puts `sequence` back into its slot, or ends it: its text and account become events.
    fn settle(
        &mut self,
        slot: usize,
        id: u64,
        sequence: Sequence<'m>,
        next: Next,
        mut text: String,
        report: &mut StepReport,
    ) {
        let finished = match next {
            Next::Decode(_) => {
                self.slots[slot].sequence = Some(sequence);
                None
            }
            Next::Finish(reason) => Some(sequence.finish(reason, &mut text)),
        };
        if !text.is_empty() {
            report.events.push((id, Event::Text(text)));
        }
        if let Some(finished) = finished {
            report.events.push((id, Event::Finished(Box::new(finished))));
        }
    }
}

/// A step's result on the host: each sequence's logits, or the ids the device picked.
enum Output {
    Logits { values: Vec<f32>, vocab: usize },
    Ids(Vec<u32>),
}

/// How many leading ids `a` and `b` share.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefix_counts_matching_leading_ids() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
    }
}
