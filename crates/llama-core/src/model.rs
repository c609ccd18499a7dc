//! The Llama 3.x decoder, written once against Burn's `Backend` and a [`Kernels`] provider.
//!
//! Per layer: `x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))`, then
//! `x += Wdown · (silu(Wgate·norm(x)) * Wup·norm(x))`. Final norm, then the output head (the
//! token embedding itself when the file has no `output.weight`).

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::config::LlamaConfig;
use crate::dequant::DequantError;
use crate::gguf::{GgufError, GgufFile};
use crate::kernels::{Kernels, RawWeight};
use crate::kv_cache::{ContextFull, KvCache};
use crate::rope::{self, RopeTables};

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

struct Layer<B: Backend, K: Kernels<B>> {
    attn_norm: Tensor<B, 1>,
    /// Rows permuted to half-split RoPE order (see [`crate::rope`]).
    wq: K::Weight,
    wk: K::Weight,
    wv: K::Weight,
    wo: K::Weight,
    ffn_norm: Tensor<B, 1>,
    w_gate: K::Weight,
    w_up: K::Weight,
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

impl<B: Backend, K: Kernels<B>> GgufLoader<'_, B, K> {
    fn vector(&self, name: &str, len: usize) -> Result<Tensor<B, 1>, ModelError> {
        let values = self.gguf.tensor_f32(name, &[len])?;
        Ok(Tensor::from_data(TensorData::new(values, [len]), self.device))
    }

    /// A `rows × cols` matmul weight; `row_order` (new row → stored row) reorders it on the way.
    fn matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        row_order: Option<&[usize]>,
    ) -> Result<K::Weight, ModelError> {
        let (info, ggml_type, bytes) = self.gguf.tensor(name, &[rows, cols])?;
        let permuted;
        let bytes = match row_order {
            None => bytes,
            Some(order) => {
                // Every row is a whole number of quantization blocks (bytes_for checked it when the
                // file was opened), so moving rows keeps any block format valid.
                let row_bytes = bytes.len() / rows;
                permuted = order
                    .iter()
                    .flat_map(|&r| &bytes[r * row_bytes..(r + 1) * row_bytes])
                    .copied()
                    .collect::<Vec<u8>>();
                &permuted[..]
            }
        };
        let raw = RawWeight { name: &info.name, ggml_type, bytes, rows, cols };
        self.kernels.load_weight(raw, self.device).map_err(|source| ModelError::Weight {
            path: self.gguf.path().display().to_string(),
            name: name.to_string(),
            source,
        })
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
        let q_order = rope::half_split_row_order(c.n_heads, hd);
        let k_order = rope::half_split_row_order(c.n_kv_heads, hd);
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let name = |part: &str| format!("blk.{i}.{part}.weight");
            layers.push(Layer {
                attn_norm: loader.vector(&name("attn_norm"), dim)?,
                wq: loader.matrix(&name("attn_q"), dim, dim, Some(&q_order))?,
                wk: loader.matrix(&name("attn_k"), c.kv_dim(), dim, Some(&k_order))?,
                wv: loader.matrix(&name("attn_v"), c.kv_dim(), dim, None)?,
                wo: loader.matrix(&name("attn_output"), dim, dim, None)?,
                ffn_norm: loader.vector(&name("ffn_norm"), dim)?,
                w_gate: loader.matrix(&name("ffn_gate"), c.ffn_dim, dim, None)?,
                w_up: loader.matrix(&name("ffn_up"), c.ffn_dim, dim, None)?,
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
        let c = &config;
        let dense = |rows: usize, cols: usize| kernels.random_weight(rows, cols, 0.02, device);
        let ones = || Tensor::<B, 1>::ones([c.dim], device);
        let layers = (0..c.n_layers)
            .map(|_| Layer {
                attn_norm: ones(),
                wq: dense(c.dim, c.dim),
                wk: dense(c.kv_dim(), c.dim),
                wv: dense(c.kv_dim(), c.dim),
                wo: dense(c.dim, c.dim),
                ffn_norm: ones(),
                w_gate: dense(c.ffn_dim, c.dim),
                w_up: dense(c.ffn_dim, c.dim),
                w_down: dense(c.dim, c.ffn_dim),
            })
            .collect();
        let inv_freq = rope::inverse_frequencies(c.head_dim(), c.rope_theta, None);
        Self {
            token_embedding: dense(c.vocab_size, c.dim),
            output: (!tied).then(|| dense(c.vocab_size, c.dim)),
            final_norm: ones(),
            rope: RopeTables::new(&inv_freq, context, device),
            layers,
            config,
            kernels,
            device: device.clone(),
        }
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
        let c = &self.config;
        let vocab = c.vocab_size;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange { id, vocab });
        }
        cache.check_room(tokens.len())?;
        let k = &self.kernels;
        let (n, hd) = (tokens.len(), c.head_dim());
        let eps = c.norm_eps as f64;
        let start = cache.len();
        let mut x = k.embed(&self.token_embedding, tokens, &self.device);
        // Each residual add is fused into the norm after it: `h` is always the normed stream.
        let mut h = k.rms_norm(x.clone(), &self.layers[0].attn_norm, eps);
        for (i, layer) in self.layers.iter().enumerate() {
            let q = k.linear(h.clone(), &layer.wq).reshape([n, c.n_heads, hd]);
            let keys = k.linear(h.clone(), &layer.wk).reshape([n, c.n_kv_heads, hd]);
            let values = k.linear(h, &layer.wv).reshape([n, c.n_kv_heads, hd]);
            let q = k.rope(q, &self.rope, start);
            let keys = k.rope(keys, &self.rope, start);
            let (all_keys, all_values) = cache.append(i, keys.swap_dims(0, 1), values.swap_dims(0, 1));
            let attended = k.attention(q, all_keys, all_values);
            let (x_mid, h_mid) = k.add_rms_norm(x, k.linear(attended, &layer.wo), &layer.ffn_norm, eps);

            let ffn = k.linear(k.linear_swiglu(h_mid, &layer.w_gate, &layer.w_up), &layer.w_down);
            let next_norm = self.layers.get(i + 1).map_or(&self.final_norm, |next| &next.attn_norm);
            (x, h) = k.add_rms_norm(x_mid, ffn, next_norm, eps);
        }
        drop(x);
        cache.advance(n);
        // Only the last position's logits are needed to pick the next token.
        let last = h.slice([n - 1..n, 0..c.dim]);
        Ok(k.linear(last, self.output.as_ref().unwrap_or(&self.token_embedding)))
    }
}
