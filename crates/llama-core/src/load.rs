//! Building a [`Llama`] from a model file ([`TensorFile`]: a GGUF file or a Hugging Face
//! checkpoint).
//!
//! Every matmul weight goes through the provider's [`Kernels::load_weight`], which decides how it
//! lives on the device. Q and K rows are reordered on the way to half-split RoPE order (see
//! [`crate::rope`]); projections that read the same input are stacked into one weight where their
//! formats agree ([`Projections`]).

use std::borrow::Cow;

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::config::LlamaConfig;
use crate::dequant::{self, DequantError, GgmlType};
use crate::kernels::{Kernels, Projections, RawWeight, RmsNorm};
use crate::model::{Layer, Llama};
use crate::rope::{self, RopeTables};
use crate::tensor_file::{LayerTensor, ModelTensor, TensorFile, TensorFileError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    TensorFile(#[from] TensorFileError),
    #[error("{path}: tensor `{name}`: {source}")]
    Weight { path: String, name: String, source: DequantError },
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
    /// Loads every weight from `file` (a GGUF file or a Hugging Face checkpoint); `context` is
    /// the KV-cache length the caller will use (RoPE tables are built for that many positions).
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
}
