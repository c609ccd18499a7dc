//! Per-layer key/value cache, allocated once at the context length in use and written in place.

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

/// One layer's keys and values as attention reads them: whole `[kv_heads, capacity, head_dim]`
/// tensors, of which the first `len` positions are written. Handing attention the whole cache
/// and a length, rather than views cut to the length, lets a provider read the rows in place
/// without recording a slice per tensor per layer.
pub struct CachedKv<B: Backend> {
    pub keys: Tensor<B, 3>,
    pub values: Tensor<B, 3>,
    pub len: usize,
}

impl<B: Backend> CachedKv<B> {
    /// Keys and values `[kv_heads, keys, head_dim]` whose every position is visible.
    pub fn whole(keys: Tensor<B, 3>, values: Tensor<B, 3>) -> Self {
        let len = keys.dims()[1];
        Self { keys, values, len }
    }

    /// A layer's whole cache `(keys, values)` with `new_keys`, `new_values`
    /// `[kv_heads, tokens, head_dim]` written at positions `start ..`, visible up to them.
    pub fn written(
        (keys, values): (Tensor<B, 3>, Tensor<B, 3>),
        start: usize,
        new_keys: Tensor<B, 3>,
        new_values: Tensor<B, 3>,
    ) -> Self {
        let [kv_heads, tokens, head_dim] = new_keys.dims();
        let slot = [0..kv_heads, start..start + tokens, 0..head_dim];
        let keys = keys.slice_assign(slot.clone(), new_keys);
        Self { keys, values: values.slice_assign(slot, new_values), len: start + tokens }
    }

    /// The visible keys and values, `[kv_heads, len, head_dim]`.
    pub fn visible(self) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [kv_heads, capacity, head_dim] = self.keys.dims();
        if self.len == capacity {
            return (self.keys, self.values);
        }
        let visible = [0..kv_heads, 0..self.len, 0..head_dim];
        (self.keys.slice(visible.clone()), self.values.slice(visible))
    }
}

struct LayerKv<B: Backend> {
    // `Option` so `append` can move the tensor out: Burn writes a slice in place only when it
    // holds the sole reference, and a `clone()` here would force a full copy every token.
    keys: Option<Tensor<B, 3>>,
    values: Option<Tensor<B, 3>>,
}

pub struct KvCache<B: Backend> {
    /// Unique in the process: a captured decode step is tied to one cache's buffers.
    id: u64,
    layers: Vec<LayerKv<B>>,
    capacity: usize,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// `[kv_heads, capacity, head_dim]` keys and values for each of `n_layers` layers.
    pub fn new(n_layers: usize, kv_heads: usize, head_dim: usize, capacity: usize, device: &B::Device) -> Self {
        let zeros = || Some(Tensor::zeros([kv_heads, capacity, head_dim], device));
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let layers = (0..n_layers).map(|_| LayerKv { keys: zeros(), values: zeros() }).collect();
        Self { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), layers, capacity, len: 0 }
    }

    /// This cache's process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Tokens already cached (= position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every cached token; the memory stays allocated.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Keeps the first `len` cached tokens (a shared prefix) and forgets the rest.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Fails before any work if `new_tokens` more would overflow the cache.
    pub fn check_room(&self, new_tokens: usize) -> Result<(), ContextFull> {
        let needed = self.len + new_tokens;
        if needed > self.capacity { Err(ContextFull { needed, capacity: self.capacity }) } else { Ok(()) }
    }

    /// Writes `keys`/`values` `[kv_heads, tokens, head_dim]` for layer `layer` at the current
    /// position and returns every cached key and value including them.
    /// [`Self::advance`] moves the position once all layers are written.
    pub fn append(&mut self, layer: usize, keys: Tensor<B, 3>, values: Tensor<B, 3>) -> CachedKv<B> {
        let end = self.len + keys.dims()[1];
        assert!(end <= self.capacity, "check_room must be called before append");
        let written = CachedKv::written(self.take(layer), self.len, keys, values);
        self.keep(layer, written)
    }

    /// Layer `layer`'s whole `[kv_heads, capacity, head_dim]` keys and values, moved out so a
    /// kernel may write them in place (Burn writes in place only into a tensor it holds the sole
    /// reference to); give them back with [`Self::keep`].
    pub fn take(&mut self, layer: usize) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let entry = &mut self.layers[layer];
        (entry.keys.take().expect("cache tensor present"), entry.values.take().expect("cache tensor present"))
    }

    /// Stores layer `layer`'s written cache and passes it on (to attention).
    pub fn keep(&mut self, layer: usize, kv: CachedKv<B>) -> CachedKv<B> {
        let entry = &mut self.layers[layer];
        entry.keys = Some(kv.keys.clone());
        entry.values = Some(kv.values.clone());
        kv
    }

    pub fn advance(&mut self, tokens: usize) {
        self.len += tokens;
    }
}
