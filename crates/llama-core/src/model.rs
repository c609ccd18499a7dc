//! The Llama 3.x decoder, written once against Burn's `Backend` and a [`Kernels`] provider.
//!
//! Per layer: `x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))`, then
//! `x += Wdown · (silu(Wgate·norm(x)) * Wup·norm(x))`. Final norm, then the output head (the
//! token embedding itself when the file has no `output.weight`).

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::config::LlamaConfig;
use crate::dequant::{DequantError, GgmlType};
use crate::gguf::{GgufError, GgufFile};
use crate::kernels::{Kernels, Normed, RawWeight, run_step_eagerly};
use crate::kv_cache::{ContextFull, KvCache};
use crate::rope::{self, RopeTables};
use crate::synth::{self, WeightType};

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
    Gguf(#[from] GgufError),
    #[error("{path}: tensor `{name}`: {source}")]
    Weight { path: String, name: String, source: DequantError },
    #[error(transparent)]
    ContextFull(#[from] ContextFull),
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
}

/// Projections that read the same input (Q, K and V; the feed-forward's gate and up), stacked by
/// rows into one weight when the file stores them in the same format (one product instead of
/// several), else each kept on its own. Q and K rows are permuted to half-split RoPE order (see
/// [`crate::rope`]).
enum SharedInput<W> {
    Stacked(W),
    Separate(Vec<W>),
}

impl<W> SharedInput<W> {
    fn weights(&self) -> &[W] {
        match self {
            Self::Stacked(w) => std::slice::from_ref(w),
            Self::Separate(ws) => ws,
        }
    }

    /// Every projection of the normed `input`, side by side: `[tokens, Σ rows]`.
    fn norm_linear<B: Backend, K: Kernels<B, Weight = W>>(&self, k: &K, input: Normed<'_, B>) -> Tensor<B, 2> {
        match self {
            Self::Stacked(w) => k.norm_linear(input, w),
            Self::Separate(ws) => {
                let h = k.normed(input);
                Tensor::cat(ws.iter().map(|w| k.linear(h.clone(), w)).collect(), 1)
            }
        }
    }

    /// Q/K/V of the normed `input`, rotated for positions `start ..`, keys and values written
    /// into the cache there: [`Kernels::norm_linear_rope_into_cache`] when stacked.
    #[allow(clippy::too_many_arguments)]
    fn norm_linear_rope_into_cache<B: Backend, K: Kernels<B, Weight = W>>(
        &self,
        k: &K,
        input: Normed<'_, B>,
        heads: usize,
        kv_heads: usize,
        tables: &RopeTables<B>,
        start: usize,
        cache: (Tensor<B, 3>, Tensor<B, 3>),
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
        let (cache_keys, cache_values) = cache;
        match self {
            Self::Stacked(w) => {
                k.norm_linear_rope_into_cache(input, w, heads, kv_heads, tables, start, cache_keys, cache_values)
            }
            Self::Separate(_) => {
                let qkv = self.norm_linear(k, input);
                k.rope_qkv_into_cache(qkv, heads, kv_heads, tables, start, cache_keys, cache_values)
            }
        }
    }
}

struct Layer<B: Backend, K: Kernels<B>> {
    attn_norm: Tensor<B, 1>,
    /// `[Wq; Wk; Wv]`.
    qkv: SharedInput<K::Weight>,
    wo: K::Weight,
    ffn_norm: Tensor<B, 1>,
    /// `[Wgate; Wup]`, stacked only for a provider that asks ([`Kernels::stacks_gate_up`]).
    gate_up: SharedInput<K::Weight>,
    w_down: K::Weight,
}

pub struct Llama<B: Backend, K: Kernels<B>> {
    pub config: LlamaConfig,
    kernels: K,
    token_embedding: K::Weight,
    layers: Vec<Layer<B, K>>,
    final_norm: Tensor<B, 1>,
    /// `None`: tied to `token_embedding`.
    output: Option<K::Weight>,
    rope: RopeTables<B>,
    device: B::Device,
}

/// Reads tensors from a GGUF file with the shapes the config implies.
struct GgufLoader<'a, B: Backend, K: Kernels<B>> {
    gguf: &'a GgufFile,
    kernels: &'a K,
    device: &'a B::Device,
}

impl<'a, B: Backend, K: Kernels<B>> GgufLoader<'a, B, K> {
    fn vector(&self, name: &str, len: usize) -> Result<Tensor<B, 1>, ModelError> {
        let values = self.gguf.tensor_f32(name, &[len])?;
        Ok(Tensor::from_data(TensorData::new(values, [len]), self.device))
    }

    /// Tensor `name` (`rows × cols`) as file bytes, rows reordered by `row_order` (new row → stored row).
    fn matrix_bytes(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        row_order: Option<&[usize]>,
    ) -> Result<(GgmlType, std::borrow::Cow<'a, [u8]>), ModelError> {
        let (_, ggml_type, bytes) = self.gguf.tensor(name, &[rows, cols])?;
        Ok(match row_order {
            None => (ggml_type, bytes.into()),
            Some(order) => {
                // Every row is a whole number of quantization blocks (bytes_for checked it when the
                // file was opened), so moving rows keeps any block format valid.
                let row_bytes = bytes.len() / rows;
                (ggml_type, order.iter().flat_map(|&r| &bytes[r * row_bytes..(r + 1) * row_bytes]).copied().collect())
            }
        })
    }

    fn load(
        &self,
        name: &str,
        ggml_type: GgmlType,
        bytes: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<K::Weight, ModelError> {
        let raw = RawWeight { name, ggml_type, bytes, rows, cols };
        self.kernels.load_weight(raw, self.device).map_err(|source| ModelError::Weight {
            path: self.gguf.path().display().to_string(),
            name: name.to_string(),
            source,
        })
    }

    /// A `rows × cols` matmul weight; `row_order` (new row → stored row) reorders it on the way.
    fn matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        row_order: Option<&[usize]>,
    ) -> Result<K::Weight, ModelError> {
        let (ggml_type, bytes) = self.matrix_bytes(name, rows, cols, row_order)?;
        self.load(name, ggml_type, &bytes, rows, cols)
    }

    /// The file tensors `parts` (name, rows, row order), all `cols` wide, as one stacked weight
    /// when `stack` allows it and their formats agree, else each on its own.
    fn shared_input(
        &self,
        parts: &[(String, usize, Option<Vec<usize>>)],
        cols: usize,
        stack: bool,
    ) -> Result<SharedInput<K::Weight>, ModelError> {
        let read = parts
            .iter()
            .map(|(name, rows, order)| self.matrix_bytes(name, *rows, cols, order.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let ggml_type = read[0].0;
        if stack && read.iter().all(|(ty, _)| *ty == ggml_type) {
            let bytes: Vec<u8> = read.iter().flat_map(|(_, bytes)| bytes.iter().copied()).collect();
            let rows = parts.iter().map(|(_, rows, _)| rows).sum();
            // Named after the file tensors, so an error points at what is really in the file.
            let names: Vec<&str> = parts.iter().map(|(name, ..)| name.as_str()).collect();
            let stacked_name = format!("{} (stacked)", names.join(" + "));
            return Ok(SharedInput::Stacked(self.load(&stacked_name, ggml_type, &bytes, rows, cols)?));
        }
        let separate =
            parts.iter().zip(&read).map(|((name, rows, _), (ty, bytes))| self.load(name, *ty, bytes, *rows, cols));
        Ok(SharedInput::Separate(separate.collect::<Result<_, _>>()?))
    }

    /// Layer `layer`'s Q, K and V weights.
    fn qkv(&self, layer: usize, c: &LlamaConfig) -> Result<SharedInput<K::Weight>, ModelError> {
        let hd = c.head_dim();
        let name = |part: &str| format!("blk.{layer}.{part}.weight");
        let parts = [
            (name("attn_q"), c.dim, Some(rope::half_split_row_order(c.n_heads, hd))),
            (name("attn_k"), c.kv_dim(), Some(rope::half_split_row_order(c.n_kv_heads, hd))),
            (name("attn_v"), c.kv_dim(), None),
        ];
        self.shared_input(&parts, c.dim, true)
    }

    /// Layer `layer`'s feed-forward gate and up weights.
    fn gate_up(&self, layer: usize, c: &LlamaConfig) -> Result<SharedInput<K::Weight>, ModelError> {
        let name = |part: &str| format!("blk.{layer}.{part}.weight");
        let parts = [(name("ffn_gate"), c.ffn_dim, None), (name("ffn_up"), c.ffn_dim, None)];
        self.shared_input(&parts, c.dim, self.kernels.stacks_gate_up())
    }
}

impl<B: Backend, K: Kernels<B>> Llama<B, K> {
    /// Loads every weight of a GGUF model; `context` is the KV-cache length the caller will use
    /// (RoPE tables are built for that many positions).
    pub fn from_gguf(
        gguf: &GgufFile,
        config: LlamaConfig,
        kernels: K,
        context: usize,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let c = &config;
        let (dim, hd) = (c.dim, c.head_dim());
        let loader = GgufLoader { gguf, kernels: &kernels, device };
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let name = |part: &str| format!("blk.{i}.{part}.weight");
            layers.push(Layer {
                attn_norm: loader.vector(&name("attn_norm"), dim)?,
                qkv: loader.qkv(i, c)?,
                wo: loader.matrix(&name("attn_output"), dim, dim, None)?,
                ffn_norm: loader.vector(&name("ffn_norm"), dim)?,
                gate_up: loader.gate_up(i, c)?,
                w_down: loader.matrix(&name("ffn_down"), dim, c.ffn_dim, None)?,
            });
        }
        let token_embedding = loader.matrix("token_embd.weight", c.vocab_size, dim, None)?;
        let output = match gguf.tensor_info("output.weight") {
            Some(_) => Some(loader.matrix("output.weight", c.vocab_size, dim, None)?),
            None => None,
        };
        let freq_factors = match gguf.tensor_info("rope_freqs.weight") {
            Some(_) => Some(gguf.tensor_f32("rope_freqs.weight", &[hd / 2])?),
            None => None,
        };
        let inv_freq = rope::inverse_frequencies(hd, c.rope_theta, freq_factors.as_deref());
        let final_norm = loader.vector("output_norm.weight", dim)?;
        Ok(Self {
            rope: RopeTables::new(&inv_freq, context, device),
            config,
            kernels,
            token_embedding,
            layers,
            final_norm,
            output,
            device: device.clone(),
        })
    }

    /// A model of `config`'s shape with N(0, 0.02) weights generated on the device, for speed
    /// measurements where no trained weights are needed.
    pub fn random(config: LlamaConfig, tied: bool, kernels: K, context: usize, device: &B::Device) -> Self {
        let weights = |k: &K, rows: usize, cols: usize| Ok(k.random_weight(rows, cols, 0.02, device));
        Self::build_random(config, tied, kernels, context, device, weights)
            .expect("device-generated weights cannot fail")
    }

    /// The same with N(0, 0.02) weights drawn on the host and stored as `weights` (e.g. Q8_0),
    /// loaded through the provider exactly as a GGUF file's would be.
    pub fn random_encoded(
        config: LlamaConfig,
        tied: bool,
        kernels: K,
        context: usize,
        device: &B::Device,
        weights: WeightType,
    ) -> Result<Self, ModelError> {
        let mut seed = 0;
        let encoded = |k: &K, rows: usize, cols: usize| {
            seed += 1;
            let bytes = weights.encode(&synth::normal_values(rows * cols, seed));
            let raw = RawWeight { name: "random", ggml_type: weights.ggml(), bytes: &bytes, rows, cols };
            k.load_weight(raw, device).map_err(|source| ModelError::Weight {
                path: "(random weights)".into(),
                name: format!("{rows}x{cols}"),
                source,
            })
        };
        Self::build_random(config, tied, kernels, context, device, encoded)
    }

    fn build_random(
        config: LlamaConfig,
        tied: bool,
        kernels: K,
        context: usize,
        device: &B::Device,
        mut weight: impl FnMut(&K, usize, usize) -> Result<K::Weight, ModelError>,
    ) -> Result<Self, ModelError> {
        let c = &config;
        let ones = || Tensor::<B, 1>::ones([c.dim], device);
        let mut layers = Vec::with_capacity(c.n_layers);
        for _ in 0..c.n_layers {
            layers.push(Layer {
                attn_norm: ones(),
                qkv: SharedInput::Stacked(weight(&kernels, c.dim + 2 * c.kv_dim(), c.dim)?),
                wo: weight(&kernels, c.dim, c.dim)?,
                ffn_norm: ones(),
                gate_up: if kernels.stacks_gate_up() {
                    SharedInput::Stacked(weight(&kernels, 2 * c.ffn_dim, c.dim)?)
                } else {
                    SharedInput::Separate(vec![
                        weight(&kernels, c.ffn_dim, c.dim)?,
                        weight(&kernels, c.ffn_dim, c.dim)?,
                    ])
                },
                w_down: weight(&kernels, c.dim, c.ffn_dim)?,
            });
        }
        let token_embedding = weight(&kernels, c.vocab_size, c.dim)?;
        let output = if tied { None } else { Some(weight(&kernels, c.vocab_size, c.dim)?) };
        let inv_freq = rope::inverse_frequencies(c.head_dim(), c.rope_theta, None);
        Ok(Self {
            token_embedding,
            output,
            final_norm: ones(),
            rope: RopeTables::new(&inv_freq, context, device),
            layers,
            config,
            kernels,
            device: device.clone(),
        })
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

    pub fn new_cache(&self, capacity: usize) -> KvCache<B> {
        let c = &self.config;
        KvCache::new(c.n_layers, c.n_kv_heads, c.head_dim(), capacity, &self.device)
    }

    /// Runs `tokens` (one batch: the whole prompt, or one new token) at the cache's position,
    /// appends their keys and values to `cache`, and returns the logits of the last token, `[1, vocab]`.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache<B>) -> Result<Tensor<B, 2>, ModelError> {
        self.check_tokens(tokens, cache)?;
        let x = self.kernels.embed(&self.token_embedding, tokens, &self.device);
        Ok(self.forward_embedded(x, cache))
    }

    /// [`Self::forward`] from the tokens' embeddings `x` `[tokens, dim]`.
    fn forward_embedded(&self, x: Tensor<B, 2>, cache: &mut KvCache<B>) -> Tensor<B, 2> {
        let (c, k) = (&self.config, &self.kernels);
        let n = x.dims()[0];
        let start = cache.len();
        let x = self.layers_forward(x, |i, qkv, input| {
            let (q, cache_keys, cache_values) =
                qkv.norm_linear_rope_into_cache(k, input, c.n_heads, c.n_kv_heads, &self.rope, start, cache.take(i));
            k.attention(q, cache.put(i, cache_keys, cache_values, n))
        });
        cache.advance(n);
        // Only the last position's logits are needed to pick the next token.
        self.logits(x.slice([n - 1..n, 0..c.dim]))
    }

    /// How this model decodes a token: captured with `--compile`, else as its provider decodes
    /// eagerly on this device ([`Kernels::eager_decode_is_static`]).
    pub fn decode_step(&self, compile: bool) -> DecodeStep {
        if compile {
            DecodeStep::Captured
        } else if self.kernels.eager_decode_is_static(&self.device) {
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
        let x = self.kernels.embed(&self.token_embedding, &[token], &self.device);
        Ok(self.decode_embedded(x, cache, step))
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
        let x = self.kernels.embed_ids(&self.token_embedding, token);
        Ok(self.decode_embedded(x, cache, step))
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
        let (c, k) = (&self.config, &self.kernels);
        let step = k.step_position(&self.rope, position, cache.capacity());
        let x = self.layers_forward(x, |i, qkv, input| {
            let qkv = qkv.norm_linear(k, input);
            let (cache_keys, cache_values) = cache.take(i);
            let (q, cache_keys, cache_values) =
                k.rope_qkv_into_cache_at(qkv, c.n_heads, c.n_kv_heads, &step, cache_keys, cache_values);
            let (all_keys, all_values) = cache.put_whole(i, cache_keys, cache_values);
            k.attention_at(q, all_keys, all_values, &step)
        });
        self.logits(x)
    }

    fn check_tokens(&self, tokens: &[u32], cache: &KvCache<B>) -> Result<(), ModelError> {
        let vocab = self.config.vocab_size;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange { id, vocab });
        }
        Ok(cache.check_room(tokens.len())?)
    }

    /// Every layer over the embeddings `x`, `attend` turning layer `i`'s Q/K/V weights and their
    /// (unnormed) input into its attention output; returns the residual stream after the last
    /// layer (unnormed: [`Self::logits`] applies the final norm).
    fn layers_forward(
        &self,
        mut x: Tensor<B, 2>,
        mut attend: impl FnMut(usize, &SharedInput<K::Weight>, Normed<'_, B>) -> Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let k = &self.kernels;
        let eps = self.config.norm_eps as f64;
        // Each norm goes to the product that reads it, and each residual add to the product whose
        // output it adds: a provider may fuse both (`Kernels::norm_linear`, `linear_add`).
        for (i, layer) in self.layers.iter().enumerate() {
            let attended = attend(i, &layer.qkv, Normed { x: x.clone(), weight: &layer.attn_norm, eps });
            x = k.linear_add(attended, &layer.wo, x);

            let ffn_input = Normed { x: x.clone(), weight: &layer.ffn_norm, eps };
            let activation = match &layer.gate_up {
                SharedInput::Stacked(gate_up) => k.norm_linear_swiglu_stacked(ffn_input, gate_up),
                SharedInput::Separate(ws) => k.norm_linear_swiglu(ffn_input, &ws[0], &ws[1]),
            };
            x = k.linear_add(activation, &layer.w_down, x);
        }
        x
    }

    /// The final norm and output head of the residual stream `x` `[1, dim]`.
    fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let input = Normed { x, weight: &self.final_norm, eps: self.config.norm_eps as f64 };
        self.kernels.norm_linear(input, self.output.as_ref().unwrap_or(&self.token_embedding))
    }
}
