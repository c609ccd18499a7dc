//! The Llama 3.x decoder, written once against Burn's `Backend` and a [`Kernels`] provider.
//!
//! Per layer ([`Layer::forward`]): `h = x + Wo · attention(rope(Wqkv · norm(x)))`, then
//! `h + Wdown · swiglu(Wgate_up · norm(h))`. After the last layer, the final norm and the output
//! head (the token embedding itself when the file has no `output.weight`), for each sequence's
//! last row only. [`Llama::step`] is the one way tokens run; loading is in `load.rs`.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::batch::{Batch, StepError};
use crate::config::LlamaConfig;
use crate::kernels::{Kernels, Product, Projections, QkvIntoCache, RmsNorm, Rows};
use crate::kv_cache::KvCache;
use crate::rope::RopeTables;

/// One decoder layer's weights.
pub(crate) struct Layer<B: Backend, W> {
    pub attn_norm: RmsNorm<B>,
    /// `[Wq; Wk; Wv]`
    pub qkv: Projections<W>,
    pub wo: W,
    pub ffn_norm: RmsNorm<B>,
    /// `[Wgate; Wup]`
    pub gate_up: Projections<W>,
    pub w_down: W,
}

/// Layer `layer`'s part of the step's cache, and where the step's rows sit.
struct LayerStep<'s, B: Backend> {
    cache: &'s mut KvCache<B>,
    layer: usize,
    rows: &'s Rows<B>,
}

impl<B: Backend, W> Layer<B, W> {
    /// `x` `[rows, dim]` through the layer; its keys and values go into each row's cache slot.
    fn forward<K: Kernels<B, Weight = W>>(&self, k: &K, x: Tensor<B, 2>, at: &mut LayerStep<'_, B>) -> Tensor<B, 2> {
        let h = k.product(Product::new(self.attention(k, x.clone(), at), &self.wo).add_to(x));
        let gated = k.swiglu_product(self.ffn_norm.of(h.clone()), &self.gate_up);
        k.product(Product::new(gated, &self.w_down).add_to(h))
    }

    /// `attention(rope(Wqkv · norm(x)))` `[rows, heads · head_dim]`, writing k and v.
    fn attention<K: Kernels<B, Weight = W>>(&self, k: &K, x: Tensor<B, 2>, at: &mut LayerStep<'_, B>) -> Tensor<B, 2> {
        let input = self.attn_norm.of(x);
        let cache = at.cache.take(at.layer);
        let (q, kv) = k.qkv_into_cache(QkvIntoCache { input, weight: &self.qkv, rows: at.rows, cache });
        k.attention(q, at.cache.keep(at.layer, kv), at.rows)
    }
}

pub struct Llama<B: Backend, K: Kernels<B>> {
    pub config: LlamaConfig,
    pub(crate) kernels: K,
    /// `[vocab, dim]`
    pub(crate) token_embedding: K::Weight,
    pub(crate) layers: Vec<Layer<B, K::Weight>>,
    pub(crate) final_norm: RmsNorm<B>,
    /// `[vocab, dim]`; `None`: tied to `token_embedding`.
    pub(crate) output: Option<K::Weight>,
    pub(crate) rope: RopeTables<B>,
    pub(crate) device: B::Device,
}

impl<B: Backend, K: Kernels<B>> Llama<B, K> {
    /// Runs the batch's rows, writes their keys and values into their cache slots, and returns
    /// the logits of each sequence's last row, `[sequences, vocab]`, in the batch's order.
    pub fn step(&self, batch: &mut Batch<'_, B>) -> Result<Tensor<B, 2>, StepError> {
        let c = &self.config;
        batch.check(c.vocab_size)?;
        let rows = self.kernels.rows(batch.placement(&self.rope, [c.n_heads, c.n_kv_heads], &self.device));
        let x = self.kernels.embed(&self.token_embedding, batch.token_ids(&self.device)); // [rows, dim]
        let cache = batch.cache();
        let x = self.layers.iter().enumerate().fold(x, |x, (layer, weights)| {
            let mut at = LayerStep { cache: &mut *cache, layer, rows: &rows };
            weights.forward(&self.kernels, x, &mut at)
        });
        batch.mark_written();
        Ok(self.logits(self.last_rows(x, &rows)))
    }

    /// Each span's last row of `x` `[rows, dim]`: only those pick a next token.
    fn last_rows(&self, x: Tensor<B, 2>, rows: &Rows<B>) -> Tensor<B, 2> {
        let [count, dim] = x.dims();
        match rows.spans.as_slice() {
            spans if spans.len() == count => x,
            [_] => x.slice([count - 1..count, 0..dim]),
            spans => {
                let last: Vec<i64> = rows.spans_from().map(|(s, first)| (first + s.rows - 1) as i64).collect();
                let last = Tensor::<B, 1, Int>::from_data(TensorData::new(last, [spans.len()]), &self.device);
                x.select(0, last)
            }
        }
    }

    /// The final norm and output head of the residual stream `x` `[rows, dim]`: `[rows, vocab]`.
    fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let head = self.output.as_ref().unwrap_or(&self.token_embedding);
        self.kernels.product(Product::normed(self.final_norm.of(x), head))
    }

    /// A cache of `slots` sequences of `capacity` positions each.
    pub fn new_cache(&self, capacity: usize, slots: usize) -> KvCache<B> {
        let c = &self.config;
        KvCache::new(c.n_layers, [c.n_kv_heads, c.head_dim()], capacity, slots, &self.device)
    }

    /// Bytes of matmul weights one decoded token reads, as the provider stores them: every
    /// layer's projections and the output head (the embedding lookup reads one row).
    pub fn weight_bytes_per_token(&self) -> u64 {
        let k = &self.kernels;
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let projections = l.qkv.weights().iter().chain(l.gate_up.weights()).chain([&l.wo, &l.w_down]);
                projections.map(|w| k.weight_bytes(w)).sum::<usize>()
            })
            .sum();
        (layers + k.weight_bytes(self.output.as_ref().unwrap_or(&self.token_embedding))) as u64
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    pub fn kernels(&self) -> &K {
        &self.kernels
    }
}
