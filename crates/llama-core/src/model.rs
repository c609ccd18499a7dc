//! The Llama 3.x decoder, written once against Burn's `Backend` and a [`Kernels`] provider.
//!
//! Per layer ([`Layer::forward`]): `h = x + Wo · attention(rope(Wqkv · norm(x)))`, then
//! `h + Wdown · swiglu(Wgate_up · norm(h))`. After the last layer, the final norm and the output
//! head (the token embedding itself when the file has no `output.weight`). Loading is in
//! `load.rs`.

use burn::tensor::{Int, Tensor, backend::Backend};

use crate::batch::Sequences;
use crate::config::LlamaConfig;
use crate::kernels::{Kernels, Pass, Position, Product, Projections, RmsNorm, TokenIds, run_step_eagerly};
use crate::kv_cache::{ContextFull, KvCache};
use crate::rope::RopeTables;

/// How one decoded token runs through the model ([`Llama::decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeStep {
    /// Shapes follow the cache: attention reads the rows written so far ([`Llama::forward`]).
    #[default]
    Dynamic,
    /// The static-shape step, run op by op.
    Static,
    /// The static-shape step through [`Kernels::run_static_step`]: captured once and replayed
    /// where the provider can (a CUDA graph), else run op by op (`--compile`).
    Captured,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    ContextFull(#[from] ContextFull),
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("a sequence with no tokens cannot be run")]
    NoTokens,
}

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

impl<B: Backend, W> Layer<B, W> {
    /// `x` `[tokens, dim]` through layer `i`; its keys and values go into the sequences' caches.
    fn forward<K>(&self, k: &K, x: Tensor<B, 2>, seqs: &mut Sequences<'_, '_, B>, i: usize) -> Tensor<B, 2>
    where
        K: Kernels<B, Weight = W>,
    {
        let attended = seqs.attend(k, self.attn_norm.of(x.clone()), &self.qkv, i);
        let h = k.product(Product::new(attended, &self.wo).add_to(x));
        let gated = k.swiglu_product(self.ffn_norm.of(h.clone()), &self.gate_up);
        k.product(Product::new(gated, &self.w_down).add_to(h))
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

    pub fn new_cache(&self, capacity: usize) -> KvCache<B> {
        let c = &self.config;
        KvCache::new(c.n_layers, c.n_kv_heads, c.head_dim(), capacity, &self.device)
    }

    /// Runs `tokens` (one batch: the whole prompt, or one new token) at the cache's position,
    /// appends their keys and values to `cache`, and returns the logits of the last token, `[1, vocab]`.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache<B>) -> Result<Tensor<B, 2>, ModelError> {
        self.check_tokens(tokens, cache)?;
        Ok(self.forward_embedded(self.embed(TokenIds::Host(tokens, &self.device)), cache))
    }

    /// [`Self::forward`] from the tokens' embeddings `x` `[tokens, dim]`.
    fn forward_embedded(&self, x: Tensor<B, 2>, cache: &mut KvCache<B>) -> Tensor<B, 2> {
        let [tokens, dim] = x.dims();
        let x = self.layers_forward(x, &mut self.one_sequence(Position::Host(cache.len()), cache));
        cache.advance(tokens);
        // Only the last position's logits are needed to pick the next token.
        self.logits(x.slice([tokens - 1..tokens, 0..dim]))
    }

    /// How this model decodes a token: captured with `--compile`, else as its provider decodes
    /// eagerly on this device ([`crate::kernels::Capabilities::static_decode`]).
    pub fn decode_step(&self, compile: bool) -> DecodeStep {
        if compile {
            DecodeStep::Captured
        } else if self.kernels.capabilities(&self.device).static_decode {
            DecodeStep::Static
        } else {
            DecodeStep::Dynamic
        }
    }

    /// One decoded token `token` at the cache's position, as `step` says; returns its logits
    /// `[1, vocab]` and advances `cache`.
    ///
    /// The static-shape step sends the position to the device as a tensor, writes keys and values
    /// into the cache at it, and attends over the whole cache with the later positions masked.
    /// Every tensor has the same shape at every position, which is what lets a framework capture
    /// the step once (a CUDA graph) and replay it. All three give [`Self::forward`]'s logits.
    pub fn decode(&self, token: u32, cache: &mut KvCache<B>, step: DecodeStep) -> Result<Tensor<B, 2>, ModelError> {
        self.check_tokens(&[token], cache)?;
        Ok(self.decode_embedded(self.embed(TokenIds::Host(&[token], &self.device)), cache, step))
    }

    /// [`Self::decode`] of a token whose id is still on the device, `[1]` (the last step's
    /// argmax): the step is queued without waiting for the id to reach the host.
    pub fn decode_device_id(
        &self,
        token: Tensor<B, 1, Int>,
        cache: &mut KvCache<B>,
        step: DecodeStep,
    ) -> Result<Tensor<B, 2>, ModelError> {
        cache.check_room(1)?;
        Ok(self.decode_embedded(self.embed(TokenIds::Device(token)), cache, step))
    }

    pub(crate) fn embed(&self, ids: TokenIds<'_, B>) -> Tensor<B, 2> {
        self.kernels.embed(&self.token_embedding, ids)
    }

    /// One decode step from the token's embedding `x` `[1, dim]`.
    fn decode_embedded(&self, x: Tensor<B, 2>, cache: &mut KvCache<B>, step: DecodeStep) -> Tensor<B, 2> {
        let captured = match step {
            DecodeStep::Dynamic => return self.forward_embedded(x, cache),
            DecodeStep::Static => false,
            DecodeStep::Captured => true,
        };
        let (position, cache_id) = (cache.len(), cache.id());
        let logits = {
            let mut run = |x: Tensor<B, 2>, position: Tensor<B, 1, Int>| self.step_static(x, position, cache);
            if captured {
                self.kernels.run_static_step(x, position, cache_id, &mut run)
            } else {
                run_step_eagerly(x, position, &mut run)
            }
        };
        cache.advance(1);
        logits
    }

    /// The static-shape step itself, from the token's embedding `x` `[1, dim]` and its
    /// `position` `[1]` to the logits `[1, vocab]`; the caller advances `cache`.
    pub fn step_static(&self, x: Tensor<B, 2>, position: Tensor<B, 1, Int>, cache: &mut KvCache<B>) -> Tensor<B, 2> {
        let at = self.kernels.step_position(&self.rope, position, cache.capacity());
        self.logits(self.layers_forward(x, &mut self.one_sequence(Position::Device(at), cache)))
    }

    pub(crate) fn check_tokens(&self, tokens: &[u32], cache: &KvCache<B>) -> Result<(), ModelError> {
        let vocab = self.config.vocab_size;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange { id, vocab });
        }
        Ok(cache.check_room(tokens.len())?)
    }

    /// One sequence's tokens sitting `at` in `cache`.
    fn one_sequence<'c>(&self, at: Position<B>, cache: &'c mut KvCache<B>) -> Sequences<'_, 'c, B> {
        let c = &self.config;
        Sequences::One { pass: Pass { at, rope: &self.rope, heads: c.n_heads, kv_heads: c.n_kv_heads }, cache }
    }

    /// Every layer over the embeddings `x` `[tokens, dim]` of `seqs`: the residual stream after
    /// the last layer (unnormed: [`Self::logits`] applies the final norm).
    pub(crate) fn layers_forward(&self, x: Tensor<B, 2>, seqs: &mut Sequences<'_, '_, B>) -> Tensor<B, 2> {
        let layers = self.layers.iter().enumerate();
        layers.fold(x, |x, (i, layer)| layer.forward(&self.kernels, x, seqs, i))
    }

    /// The final norm and output head of the residual stream `x` `[rows, dim]`: `[rows, vocab]`.
    pub(crate) fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let head = self.output.as_ref().unwrap_or(&self.token_embedding);
        self.kernels.product(Product::normed(self.final_norm.of(x), head))
    }
}
