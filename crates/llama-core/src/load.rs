//! Building a [`Llama`]: from a GGUF file or a Hugging Face checkpoint ([`TensorFile`]), or with random weights of a published shape (speed
//! measurements need no trained weights).
//!
//! Every matmul weight goes through the provider's [`Kernels::load_weight`] (or
//! `random_weight`), which decides how it lives on the device. Q and K rows are reordered on the
//! way to half-split RoPE order (see [`crate::rope`]); projections that read the same input are
//! stacked into one weight where their formats agree ([`Projections`]).

use std::borrow::Cow;
use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::config::LlamaConfig;
use crate::dequant::{self, DequantError, GgmlType};
use crate::gguf::{GgufError, GgufFile};
use crate::kernels::{Kernels, Projections, RawWeight, RmsNorm};
use crate::model::{Layer, Llama};
use crate::rope::{self, RopeTables};
use crate::sampling::Rng;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    HuggingFace(#[from] crate::hf::HfError),
    #[error("{path}: tensor `{name}`: {source}")]
    Weight { path: String, name: String, source: DequantError },
}

/// The formats random weights can be stored in before loading, as a converted file's would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    F32,
    F16,
    Q8_0,
    Q4_0,
}

impl WeightType {
    pub const ALL: [WeightType; 4] = [WeightType::F32, WeightType::F16, WeightType::Q8_0, WeightType::Q4_0];

    pub fn ggml(self) -> GgmlType {
        match self {
            WeightType::F32 => GgmlType::F32,
            WeightType::F16 => GgmlType::F16,
            WeightType::Q8_0 => GgmlType::Q8_0,
            WeightType::Q4_0 => GgmlType::Q4_0,
        }
    }

    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            WeightType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            WeightType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            WeightType::Q8_0 => dequant::quantize_q8_0(values),
            WeightType::Q4_0 => dequant::quantize_q4_0(values),
        }
    }
}

impl std::fmt::Display for WeightType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format!("{:?}", self.ggml()).to_lowercase())
    }
}

impl std::str::FromStr for WeightType {
    type Err = String;

    /// `f32`, `f16`, `q8_0` or `q4_0`.
    fn from_str(s: &str) -> Result<Self, String> {
        crate::config::by_name(&Self::ALL, s, "weight type")
    }
}

/// N(0, 0.02) values from a seed: Box–Muller on SplitMix64, reproducible everywhere.
pub fn normal_values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (u1, u2) = (rng.next_f64().max(f64::MIN_POSITIVE), rng.next_f64());
        let r = (-2.0 * u1.ln()).sqrt() * 0.02;
        let theta = std::f64::consts::TAU * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// A model tensor by its role; each file convention names it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelTensor {
    TokenEmbedding,
    /// The output head, absent when it is tied to the embedding.
    Output,
    OutputNorm,
    Layer(usize, LayerTensor),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerTensor {
    AttentionNorm,
    Q,
    K,
    V,
    AttentionOutput,
    FeedForwardNorm,
    Gate,
    Up,
    Down,
}

/// Where a model's weights are read from: a GGUF file, or a Hugging Face checkpoint's
/// safetensors. Both hand over each tensor as stored (ggml-typed bytes, checked against the shape
/// the config implies), so one loader builds the model from either.
pub trait TensorFile {
    /// The file or directory, for messages.
    fn origin(&self) -> &Path;
    fn name(&self, tensor: ModelTensor) -> String;
    /// Tensor `name`'s type and bytes, row-major, checked to be `shape` (outermost first).
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<(GgmlType, &[u8]), LoadError>;
    /// Whether Q and K rows are in interleaved-pair RoPE order: llama.cpp's converter permutes
    /// them so; Hugging Face checkpoints keep the half-split order this model computes in.
    fn interleaved_qk(&self) -> bool;
    /// Whether the output head is the token embedding (no output tensor).
    fn tied_output(&self) -> bool;
    /// RoPE's per-pair frequency divisors `[head_dim / 2]`, where the model scales them.
    fn rope_frequency_factors(&self, head_dim: usize) -> Result<Option<Vec<f32>>, LoadError>;
}

impl TensorFile for GgufFile {
    fn origin(&self) -> &Path {
        self.path()
    }

    fn name(&self, tensor: ModelTensor) -> String {
        use LayerTensor::*;
        let (i, part) = match tensor {
            ModelTensor::TokenEmbedding => return "token_embd.weight".into(),
            ModelTensor::Output => return "output.weight".into(),
            ModelTensor::OutputNorm => return "output_norm.weight".into(),
            ModelTensor::Layer(i, part) => (i, part),
        };
        let suffix = match part {
            AttentionNorm => "attn_norm",
            Q => "attn_q",
            K => "attn_k",
            V => "attn_v",
            AttentionOutput => "attn_output",
            FeedForwardNorm => "ffn_norm",
            Gate => "ffn_gate",
            Up => "ffn_up",
            Down => "ffn_down",
        };
        format!("blk.{i}.{suffix}.weight")
    }

    fn tensor(&self, name: &str, shape: &[usize]) -> Result<(GgmlType, &[u8]), LoadError> {
        let (_, ggml_type, bytes) = GgufFile::tensor(self, name, shape)?;
        Ok((ggml_type, bytes))
    }

    fn interleaved_qk(&self) -> bool {
        true
    }

    fn tied_output(&self) -> bool {
        self.tensor_info("output.weight").is_none()
    }

    fn rope_frequency_factors(&self, head_dim: usize) -> Result<Option<Vec<f32>>, LoadError> {
        match self.tensor_info("rope_freqs.weight") {
            Some(_) => Ok(Some(self.tensor_f32("rope_freqs.weight", &[head_dim / 2])?)),
            None => Ok(None),
        }
    }
}

/// Reads a [`TensorFile`]'s tensors with the shapes the config implies.
struct Loader<'a, B: Backend, K: Kernels<B>> {
    file: &'a dyn TensorFile,
    kernels: &'a K,
    config: &'a LlamaConfig,
    device: &'a B::Device,
    /// The provider's [`crate::kernels::Capabilities::stacks_gate_up`] on `device`.
    stack_gate_up: bool,
}

impl<'a, B: Backend, K: Kernels<B>> Loader<'a, B, K> {
    fn norm(&self, tensor: ModelTensor) -> Result<RmsNorm<B>, LoadError> {
        let dim = self.config.dim;
        let name = self.file.name(tensor);
        let (ty, bytes) = self.file.tensor(&name, &[dim])?;
        let values = dequant::dequantize(ty, bytes, dim).map_err(|source| self.weight_err(&name, source))?;
        let weight = Tensor::from_data(TensorData::new(values, [dim]), self.device);
        Ok(RmsNorm { weight, eps: self.config.norm_eps as f64 })
    }

    fn weight_err(&self, name: &str, source: DequantError) -> LoadError {
        LoadError::Weight { path: self.file.origin().display().to_string(), name: name.to_string(), source }
    }

    /// Tensor `name` (`rows × cols`) as file bytes, rows reordered by `row_order` (new row → stored row).
    fn matrix_bytes(
        &self,
        name: &str,
        [rows, cols]: [usize; 2],
        row_order: Option<&[usize]>,
    ) -> Result<(GgmlType, Cow<'a, [u8]>), LoadError> {
        let (ggml_type, bytes) = self.file.tensor(name, &[rows, cols])?;
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

    fn upload(&self, raw: RawWeight<'_>) -> Result<K::Weight, LoadError> {
        self.kernels.load_weight(raw, self.device).map_err(|source| self.weight_err(raw.name, source))
    }

    /// A `rows × cols` matmul weight, as stored.
    fn matrix(&self, tensor: ModelTensor, [rows, cols]: [usize; 2]) -> Result<K::Weight, LoadError> {
        let name = &self.file.name(tensor);
        let (ggml_type, bytes) = self.matrix_bytes(name, [rows, cols], None)?;
        self.upload(RawWeight { name, ggml_type, bytes: &bytes, rows, cols })
    }

    /// The file tensors `parts` (name, rows, row order), all `dim` wide, as one stacked weight
    /// when `stack` allows it and their formats agree, else each on its own.
    fn projections(
        &self,
        parts: &[(String, usize, Option<Vec<usize>>)],
        stack: bool,
    ) -> Result<Projections<K::Weight>, LoadError> {
        let cols = self.config.dim;
        let read = parts
            .iter()
            .map(|(name, rows, order)| self.matrix_bytes(name, [*rows, cols], order.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let ggml_type = read[0].0;
        if stack && read.iter().all(|(ty, _)| *ty == ggml_type) {
            let bytes: Vec<u8> = read.iter().flat_map(|(_, bytes)| bytes.iter().copied()).collect();
            let rows = parts.iter().map(|(_, rows, _)| rows).sum();
            // Named after the file tensors, so an error points at what is really in the file.
            let names: Vec<&str> = parts.iter().map(|(name, ..)| name.as_str()).collect();
            let name = &format!("{} (stacked)", names.join(" + "));
            return Ok(Projections::Stacked(self.upload(RawWeight { name, ggml_type, bytes: &bytes, rows, cols })?));
        }
        let separate = parts.iter().zip(&read).map(|((name, rows, _), (ggml_type, bytes))| {
            self.upload(RawWeight { name, ggml_type: *ggml_type, bytes, rows: *rows, cols })
        });
        Ok(Projections::Separate(separate.collect::<Result<_, _>>()?))
    }

    fn layer(&self, i: usize) -> Result<Layer<B, K::Weight>, LoadError> {
        use LayerTensor::*;
        let c = self.config;
        let (dim, hd) = (c.dim, c.head_dim());
        let tensor = |part| ModelTensor::Layer(i, part);
        let name = |part| self.file.name(tensor(part));
        let half_split = |heads| self.file.interleaved_qk().then(|| rope::half_split_row_order(heads, hd));
        let qkv = [
            (name(Q), dim, half_split(c.n_heads)),
            (name(K), c.kv_dim(), half_split(c.n_kv_heads)),
            (name(V), c.kv_dim(), None),
        ];
        let gate_up = [(name(Gate), c.ffn_dim, None), (name(Up), c.ffn_dim, None)];
        Ok(Layer {
            attn_norm: self.norm(tensor(AttentionNorm))?,
            qkv: self.projections(&qkv, true)?,
            wo: self.matrix(tensor(AttentionOutput), [dim, dim])?,
            ffn_norm: self.norm(tensor(FeedForwardNorm))?,
            gate_up: self.projections(&gate_up, self.stack_gate_up)?,
            w_down: self.matrix(tensor(Down), [dim, c.ffn_dim])?,
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
    ) -> Result<Self, LoadError> {
        Self::from_tensors(gguf, config, kernels, context, device)
    }

    /// Loads every weight from `file` (a GGUF file or a Hugging Face checkpoint), as
    /// [`Self::from_gguf`].
    pub fn from_tensors(
        file: &dyn TensorFile,
        config: LlamaConfig,
        kernels: K,
        context: usize,
        device: &B::Device,
    ) -> Result<Self, LoadError> {
        let c = &config;
        let stack_gate_up = kernels.capabilities(device).stacks_gate_up;
        let loader = Loader { file, kernels: &kernels, config: c, device, stack_gate_up };
        let layers = (0..c.n_layers).map(|i| loader.layer(i)).collect::<Result<Vec<_>, _>>()?;
        let token_embedding = loader.matrix(ModelTensor::TokenEmbedding, [c.vocab_size, c.dim])?;
        let output = match file.tied_output() {
            true => None,
            false => Some(loader.matrix(ModelTensor::Output, [c.vocab_size, c.dim])?),
        };
        let freq_factors = file.rope_frequency_factors(c.head_dim())?;
        let inv_freq = rope::inverse_frequencies(c.head_dim(), c.rope_theta, freq_factors.as_deref());
        let final_norm = loader.norm(ModelTensor::OutputNorm)?;
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
    ) -> Result<Self, LoadError> {
        let mut seed = 0;
        let encoded = |k: &K, rows: usize, cols: usize| {
            seed += 1;
            let bytes = weights.encode(&normal_values(rows * cols, seed));
            let raw = RawWeight { name: "random", ggml_type: weights.ggml(), bytes: &bytes, rows, cols };
            k.load_weight(raw, device).map_err(|source| LoadError::Weight {
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
        mut weight: impl FnMut(&K, usize, usize) -> Result<K::Weight, LoadError>,
    ) -> Result<Self, LoadError> {
        let c = &config;
        let norm = || RmsNorm { weight: Tensor::<B, 1>::ones([c.dim], device), eps: c.norm_eps as f64 };
        let stack_gate_up = kernels.capabilities(device).stacks_gate_up;
        let mut layers = Vec::with_capacity(c.n_layers);
        for _ in 0..c.n_layers {
            layers.push(Layer {
                attn_norm: norm(),
                qkv: Projections::Stacked(weight(&kernels, c.dim + 2 * c.kv_dim(), c.dim)?),
                wo: weight(&kernels, c.dim, c.dim)?,
                ffn_norm: norm(),
                gate_up: if stack_gate_up {
                    Projections::Stacked(weight(&kernels, 2 * c.ffn_dim, c.dim)?)
                } else {
                    let gate = weight(&kernels, c.ffn_dim, c.dim)?;
                    Projections::Separate(vec![gate, weight(&kernels, c.ffn_dim, c.dim)?])
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
            final_norm: norm(),
            rope: RopeTables::new(&inv_freq, context, device),
            layers,
            config,
            kernels,
            device: device.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::WeightType;

    #[test]
    fn weight_types_parse_by_name() {
        assert_eq!("Q8_0".parse::<WeightType>(), Ok(WeightType::Q8_0));
        assert_eq!("q5".parse::<WeightType>().unwrap_err(), "unknown weight type `q5`: use f32, f16, q8_0 or q4_0");
    }
}
