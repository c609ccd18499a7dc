//! The key/value cache: for every layer one block of `slots` sequences' keys and values,
//! allocated once at the context length in use and written in place. A sequence owns one slot;
//! one-shot generation, a chat and the benchmark use one, a server one per request it decodes at
//! once, so a step of several sequences reads and writes one tensor per layer, not one per
//! sequence.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{Tensor, backend::Backend};

#[derive(Debug, thiserror::Error)]
#[error(
    "the context is full: {needed} tokens do not fit in the {capacity}-token context (raise --ctx-size, up to the model's context length)"
)]
pub struct ContextFull {
    pub needed: usize,
    pub capacity: usize,
}

/// One layer's keys and values for every slot, `[slots · kv_heads, capacity, head_dim]` each:
/// slot `s`'s KV head `h` is row block `s · kv_heads + h`. Attention is handed the whole block
/// (and the step's rows say which slot and positions each query reads), so that a provider may
/// read the rows in place rather than record a slice per tensor per layer.
pub struct CachedKv<B: Backend> {
    pub keys: Tensor<B, 3>,
    pub values: Tensor<B, 3>,
}

impl<B: Backend> CachedKv<B> {
    /// `new_keys`, `new_values` `[kv_heads, tokens, head_dim]` written into slot `slot` at
    /// positions `start ..`.
    pub fn written(self, slot: usize, start: usize, new_keys: Tensor<B, 3>, new_values: Tensor<B, 3>) -> Self {
        let [kv_heads, tokens, head_dim] = new_keys.dims();
        let at = [slot * kv_heads..(slot + 1) * kv_heads, start..start + tokens, 0..head_dim];
        Self { keys: self.keys.slice_assign(at.clone(), new_keys), values: self.values.slice_assign(at, new_values) }
    }

    /// Slot `slot`'s first `len` positions, `[kv_heads, len, head_dim]` each.
    pub fn slot(&self, slot: usize, kv_heads: usize, len: usize) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let head_dim = self.keys.dims()[2];
        let at = [slot * kv_heads..(slot + 1) * kv_heads, 0..len, 0..head_dim];
        (self.keys.clone().slice(at.clone()), self.values.clone().slice(at))
    }
}

struct LayerKv<B: Backend> {
    // `Option` so `take` can move the tensor out: Burn writes a slice in place only when it holds
    // the sole reference, and a `clone()` here would force a full copy every token.
    keys: Option<Tensor<B, 3>>,
    values: Option<Tensor<B, 3>>,
}

/// The cache of `slots` sequences, each with its own length.
pub struct KvCache<B: Backend> {
    /// Unique in the process: a captured step is tied to one cache's buffers.
    id: u64,
    layers: Vec<LayerKv<B>>,
    kv_heads: usize,
    capacity: usize,
    /// Tokens cached per slot (= the position of the slot's next token).
    lens: Vec<usize>,
}

impl<B: Backend> KvCache<B> {
    /// `slots` sequences of `capacity` positions for `n_layers` layers of `kv_heads` heads.
    pub fn new(
        n_layers: usize,
        [kv_heads, head_dim]: [usize; 2],
        capacity: usize,
        slots: usize,
        device: &B::Device,
    ) -> Self {
        let zeros = || Some(Tensor::zeros([slots * kv_heads, capacity, head_dim], device));
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let layers = (0..n_layers).map(|_| LayerKv { keys: zeros(), values: zeros() }).collect();
        Self { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), layers, kv_heads, capacity, lens: vec![0; slots] }
    }

    /// This cache's process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn slots(&self) -> usize {
        self.lens.len()
    }

    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    /// Tokens slot `slot` holds (= the position of its next token).
    pub fn len(&self, slot: usize) -> usize {
        self.lens[slot]
    }

    /// Positions per slot.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keeps slot `slot`'s first `len` tokens (a shared prefix) and forgets the rest; the
    /// memory stays allocated.
    pub fn truncate(&mut self, slot: usize, len: usize) {
        self.lens[slot] = self.lens[slot].min(len);
    }

    /// Fails before any work if `new_tokens` more would overflow slot `slot`.
    pub fn check_room(&self, slot: usize, new_tokens: usize) -> Result<(), ContextFull> {
        let needed = self.lens[slot] + new_tokens;
        if needed > self.capacity { Err(ContextFull { needed, capacity: self.capacity }) } else { Ok(()) }
    }

    /// Layer `layer`'s whole keys and values, moved out so a kernel may write them in place;
    /// give them back with [`Self::keep`].
    pub fn take(&mut self, layer: usize) -> CachedKv<B> {
        let entry = &mut self.layers[layer];
        let missing = "a layer's cache is given back before the next is taken";
        CachedKv { keys: entry.keys.take().expect(missing), values: entry.values.take().expect(missing) }
    }

    /// Stores layer `layer`'s written cache and passes it on (to attention).
    pub fn keep(&mut self, layer: usize, kv: CachedKv<B>) -> CachedKv<B> {
        let entry = &mut self.layers[layer];
        entry.keys = Some(kv.keys.clone());
        entry.values = Some(kv.values.clone());
        kv
    }

    /// Slot `slot` now holds `tokens` more.
    pub fn advance(&mut self, slot: usize, tokens: usize) {
        self.lens[slot] += tokens;
    }
}
