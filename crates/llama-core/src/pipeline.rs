//! How the scheduler runs a step ([`Stepper`]: the model behind its framework's wrapper, and the
//! static-shape step for a sequence decoding alone), and greedy decoding one step ahead of the
//! host ([`pipelined_step`]).
//!
//! Unpipelined, each token's id crosses to the host before the next step is queued, so the
//! host's time to record a step and the device's time to run it add up. Pipelined, while the host
//! waits for token N's id, token N + 1's step, looked up from N's argmax on the device, is
//! already queued. A step queued past the end (the id turned out to end the reply) is dropped,
//! and its cache row with it. The first token is read before any step is queued, so the time to
//! it stays the prefill's.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::batch::{Batch, StepError};
use crate::kernels::Kernels;
use crate::kv_cache::KvCache;
use crate::model::Llama;
use crate::readback::{PendingId, argmax_ids};
use crate::sequence::{Next, Sequence};

/// Runs a step of the model: as it is, or wrapped from outside by its framework (a captured
/// graph replayed, as `torch.compile` wraps gpt-fast's `decode_one_token`).
pub trait StepRunner<B: Backend, K: Kernels<B>> {
    fn run(&mut self, model: &Llama<B, K>, batch: &mut Batch<'_, B>) -> Result<Tensor<B, 2>, StepError>;
}

/// Every step run as it is.
pub struct Eager;

impl<B: Backend, K: Kernels<B>> StepRunner<B, K> for Eager {
    fn run(&mut self, model: &Llama<B, K>, batch: &mut Batch<'_, B>) -> Result<Tensor<B, 2>, StepError> {
        model.step(batch)
    }
}

/// A token to decode: its id on the host, or still on the device (`[1]`).
pub(crate) enum Token<B: Backend> {
    Host(u32),
    Device(Tensor<B, 1, Int>),
}

/// The model and how its steps run.
pub(crate) struct Stepper<'m, B: Backend, K: Kernels<B>> {
    pub model: &'m Llama<B, K>,
    pub runner: Box<dyn StepRunner<B, K> + 'm>,
    /// A sequence decoding alone runs the static-shape step.
    pub static_decode: bool,
}

impl<B: Backend, K: Kernels<B>> Stepper<'_, B, K> {
    pub fn run(&mut self, batch: &mut Batch<'_, B>) -> Result<Tensor<B, 2>, StepError> {
        self.runner.run(self.model, batch)
    }

    /// One token of the sequence in `slot`, decoding alone: its logits `[1, vocab]`.
    pub fn decode(&mut self, cache: &mut KvCache<B>, slot: usize, token: Token<B>) -> Result<Tensor<B, 2>, StepError> {
        let device = self.model.device();
        let on_device = |value: i64| Tensor::<B, 1, Int>::from_data(TensorData::new(vec![value], [1]), device);
        if self.static_decode {
            let id = match token {
                Token::Host(id) => on_device(id as i64),
                Token::Device(id) => id,
            };
            let position = on_device(cache.len(slot) as i64);
            return self.run(&mut Batch::fixed_shape(cache, slot, id, position)?);
        }
        let mut batch = Batch::new(cache);
        match token {
            Token::Host(id) => batch.push(slot, &[id])?,
            Token::Device(id) => batch.push_device(slot, id)?,
        }
        self.run(&mut batch)
    }
}

/// A greedy token still on the device, `[1]`, whose input token is in the slot's cache: the
/// step after it is the next to queue.
pub(crate) struct InFlight<B: Backend> {
    pub slot: usize,
    pub id: Tensor<B, 1, Int>,
}

/// What a pipelined step did.
pub(crate) struct Pipelined<'t> {
    /// The sequence, unless the token ended it (then its finish reason).
    pub next: Next,
    pub text: String,
    pub sequence: Sequence<'t>,
}

/// One token of the greedy sequence in `slot` decoding alone (its `next` token taken, or
/// `in_flight`), read one step behind: the step after it is queued before its id is waited for.
/// `cached` follows the slot's cache.
pub(crate) fn pipelined_step<'t, B: Backend, K: Kernels<B>>(
    stepper: &mut Stepper<'_, B, K>,
    cache: &mut KvCache<B>,
    slot: usize,
    mut sequence: Sequence<'t>,
    cached: &mut Vec<u32>,
    in_flight: &mut Option<InFlight<B>>,
) -> Result<Pipelined<'t>, StepError> {
    sequence.pipelined = true;
    let current = match in_flight.take() {
        Some(flight) => flight.id,
        None => {
            let token = sequence.next.take().expect("a decoding sequence has a token to decode");
            let logits = stepper.decode(cache, slot, Token::Host(token))?;
            cached.push(token);
            argmax_ids(logits)
        }
    };
    let reading = PendingId::request(current.clone());
    let wanted = sequence.wants_more_than(1) && cache.check_room(slot, 1).is_ok();
    let ahead = match wanted {
        true => Some(argmax_ids(stepper.decode(cache, slot, Token::Device(current))?)),
        false => None,
    };
    let token = reading.wait();
    // As the unpipelined loop would see the cache: without the row of the step queued ahead.
    let room = ahead.is_some() || cache.check_room(slot, 1).is_ok();
    let mut text = String::new();
    let next = sequence.accept(token, room, &mut text);
    match (next, ahead) {
        // The step queued ahead decoded the token already.
        (Next::Decode(_), Some(id)) => {
            sequence.next = None;
            cached.push(token);
            *in_flight = Some(InFlight { slot, id });
        }
        (Next::Decode(_), None) => {}
        (Next::Finish(_), ahead) => {
            if ahead.is_some() {
                cache.truncate(slot, cache.len(slot) - 1);
            }
        }
    }
    Ok(Pipelined { next, text, sequence })
}
