//! A step's input ([`Batch`]): rows of token ids, each sequence's rows at the next positions of
//! its own cache slot. A prompt's prefill, one decoded token, several sequences decoding together
//! (a server's slots), or the static-shape step that a framework may capture, are all a batch.

use burn::tensor::{Int, Tensor, backend::Backend};

use crate::kernels::{Placement, Span, TokenIds};
use crate::kv_cache::{ContextFull, KvCache};
use crate::rope::RopeTables;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    ContextFull(#[from] ContextFull),
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("a step with no tokens cannot be run")]
    NoTokens,
    #[error("slot {slot} appears twice in one step")]
    SlotTwice { slot: usize },
    #[error("slot {slot} does not exist: the cache has {slots}")]
    NoSuchSlot { slot: usize, slots: usize },
}

enum Ids<B: Backend> {
    Host(Vec<u32>),
    /// Each `[1]`: ids still on the device (a greedy step's argmax).
    Device(Vec<Tensor<B, 1, Int>>),
}

/// The static-shape step's one token: its cache slot, and its id and position on the device
/// (`[1]` each).
pub struct FixedInputs<B: Backend> {
    pub slot: usize,
    pub id: Tensor<B, 1, Int>,
    pub position: Tensor<B, 1, Int>,
}

/// The rows of one step over a [`KvCache`], and what [`crate::model::Llama::step`] needs to run
/// them: ids, where each row goes, and whether the step has static shapes.
pub struct Batch<'c, B: Backend> {
    cache: &'c mut KvCache<B>,
    ids: Ids<B>,
    spans: Vec<Span>,
    /// The static-shape step's one position, on the device (`[1]`).
    fixed_position: Option<Tensor<B, 1, Int>>,
    written: bool,
}

impl<'c, B: Backend> Batch<'c, B> {
    /// A step with no rows yet over `cache`.
    pub fn new(cache: &'c mut KvCache<B>) -> Self {
        Self { cache, ids: Ids::Host(Vec::new()), spans: Vec::new(), fixed_position: None, written: false }
    }

    /// Adds `tokens`, the next of the sequence in slot `slot`, after what the slot holds.
    pub fn push(&mut self, slot: usize, tokens: &[u32]) -> Result<(), StepError> {
        let Ids::Host(ids) = &mut self.ids else { panic!("a step's ids are all on the host or all on the device") };
        ids.extend_from_slice(tokens);
        self.add_span(slot, tokens.len())
    }

    /// Adds one token of the sequence in slot `slot` whose id is still on the device, `[1]`.
    pub fn push_device(&mut self, slot: usize, id: Tensor<B, 1, Int>) -> Result<(), StepError> {
        match &mut self.ids {
            Ids::Device(ids) => ids.push(id),
            Ids::Host(ids) if ids.is_empty() => self.ids = Ids::Device(vec![id]),
            Ids::Host(_) => panic!("a step's ids are all on the host or all on the device"),
        }
        self.add_span(slot, 1)
    }

    /// The static-shape step: one token of slot `slot`, its id and its position on the device
    /// (`[1]` each), attending over the slot's whole cache with the later positions masked.
    /// Nothing of the step depends on the position's value on the host, so a framework may
    /// capture it once and replay it with new values in the same two tensors.
    pub fn fixed_shape(
        cache: &'c mut KvCache<B>,
        slot: usize,
        id: Tensor<B, 1, Int>,
        position: Tensor<B, 1, Int>,
    ) -> Result<Self, StepError> {
        let mut batch = Self::new(cache);
        batch.push_device(slot, id)?;
        batch.fixed_position = Some(position);
        Ok(batch)
    }

    fn add_span(&mut self, slot: usize, rows: usize) -> Result<(), StepError> {
        let slots = self.cache.slots();
        if slot >= slots {
            return Err(StepError::NoSuchSlot { slot, slots });
        }
        if self.spans.iter().any(|s| s.slot == slot) {
            return Err(StepError::SlotTwice { slot });
        }
        if rows == 0 {
            return Err(StepError::NoTokens);
        }
        self.cache.check_room(slot, rows)?;
        self.spans.push(Span { slot, start: self.cache.len(slot), rows });
        Ok(())
    }

    /// Each sequence's rows, in row order.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    pub fn rows(&self) -> usize {
        self.spans.iter().map(|s| s.rows).sum()
    }

    /// For the static-shape step: its slot, and its id and position tensors.
    pub fn fixed_inputs(&self) -> Option<FixedInputs<B>> {
        let position = self.fixed_position.clone()?;
        let Ids::Device(ids) = &self.ids else { unreachable!("a fixed-shape step's id is on the device") };
        Some(FixedInputs { slot: self.spans[0].slot, id: ids[0].clone(), position })
    }

    /// The static-shape step reads its id and position from these tensors instead (a captured
    /// step's own input buffers).
    pub fn set_fixed_inputs(&mut self, id: Tensor<B, 1, Int>, position: Tensor<B, 1, Int>) {
        assert!(self.fixed_position.is_some(), "only the static-shape step reads its inputs from buffers");
        self.ids = Ids::Device(vec![id]);
        self.fixed_position = Some(position);
    }

    pub fn cache_id(&self) -> u64 {
        self.cache.id()
    }

    /// Fails if a host id is outside a vocabulary of `vocab`, or the step has no rows.
    pub(crate) fn check(&self, vocab: usize) -> Result<(), StepError> {
        if self.spans.is_empty() {
            return Err(StepError::NoTokens);
        }
        if let Ids::Host(ids) = &self.ids
            && let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab)
        {
            return Err(StepError::TokenOutOfRange { id, vocab });
        }
        Ok(())
    }

    pub(crate) fn cache(&mut self) -> &mut KvCache<B> {
        self.cache
    }

    /// The ids to embed, `[rows]`.
    pub(crate) fn token_ids<'a>(&'a self, device: &'a B::Device) -> TokenIds<'a, B> {
        match &self.ids {
            Ids::Host(ids) => TokenIds::Host(ids, device),
            Ids::Device(ids) if ids.len() == 1 => TokenIds::Device(ids[0].clone()),
            Ids::Device(ids) => TokenIds::Device(Tensor::cat(ids.clone(), 0)),
        }
    }

    /// Where the rows sit, on `device`: each row's position and slot, from the host, or in the
    /// static-shape step from the device alone (a captured step may not copy from the host).
    pub(crate) fn placement<'r>(
        &self,
        rope: &'r RopeTables<B>,
        heads: [usize; 2],
        device: &B::Device,
    ) -> Placement<'r, B> {
        let spans = self.spans.clone();
        match &self.fixed_position {
            Some(position) => {
                let slots = position.zeros_like().add_scalar(spans[0].slot as i64);
                let [heads, kv_heads] = heads;
                let static_capacity = Some(self.cache.capacity());
                Placement { spans, positions: position.clone(), slots, rope, heads, kv_heads, static_capacity }
            }
            None => Placement::from_spans(spans, rope, heads, device),
        }
    }

    /// Marks the rows as written into the cache: each slot holds its span's tokens more. The
    /// model's step does this; a framework replaying a captured step does it in the step's place.
    pub fn mark_written(&mut self) {
        if !std::mem::replace(&mut self.written, true) {
            for span in &self.spans {
                self.cache.advance(span.slot, span.rows);
            }
        }
    }
}
