//! What a model file is to the loader ([`TensorFile`]): each tensor by its role, handed over as
//! stored. A GGUF file (`gguf/tensors.rs`) and a Hugging Face folder (`hf/mod.rs`) each name
//! the roles their own way.

use std::path::Path;

use crate::dequant::GgmlType;

/// A model tensor by its role; each file convention names it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelTensor {
    TokenEmbedding,
    /// The output head, absent when it is tied to the embedding.
    Output,
    OutputNorm,
    Layer(usize, LayerTensor),
}

/// A layer's tensors, in the order [`TensorNames::parts`] names them.
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

/// How a file convention names the model's tensors.
pub struct TensorNames {
    pub token_embedding: &'static str,
    pub output: &'static str,
    pub output_norm: &'static str,
    /// A layer tensor's name from the layer's index and the tensor's part.
    pub layer: fn(usize, &str) -> String,
    /// Each [`LayerTensor`]'s part of the name, in its order.
    pub parts: [&'static str; 9],
}

impl TensorNames {
    pub fn name(&self, tensor: ModelTensor) -> String {
        match tensor {
            ModelTensor::TokenEmbedding => self.token_embedding.into(),
            ModelTensor::Output => self.output.into(),
            ModelTensor::OutputNorm => self.output_norm.into(),
            ModelTensor::Layer(i, part) => (self.layer)(i, self.parts[part as usize]),
        }
    }
}

/// Why a tensor could not be read: the file format's own error, which names the file and the
/// tensor.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TensorFileError(pub Box<dyn std::error::Error + Send + Sync>);

/// Where a model's weights are read from: a GGUF file, or a Hugging Face checkpoint's
/// safetensors. Both hand over each tensor as stored (ggml-typed bytes, checked against the shape
/// the config implies), so one loader builds the model from either.
pub trait TensorFile {
    /// The file or directory, for messages.
    fn origin(&self) -> &Path;
    fn name(&self, tensor: ModelTensor) -> String;
    /// Tensor `name`'s type and bytes, row-major, checked to be `shape` (outermost first).
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<(GgmlType, &[u8]), TensorFileError>;
    /// Whether Q and K rows are in interleaved-pair RoPE order: llama.cpp's converter permutes
    /// them so; Hugging Face checkpoints keep the half-split order this model computes in.
    fn interleaved_qk(&self) -> bool;
    /// Whether the output head is the token embedding (no output tensor).
    fn tied_output(&self) -> bool;
    /// RoPE's per-pair frequency divisors `[head_dim / 2]`, where the model scales them.
    fn rope_frequency_factors(&self, head_dim: usize) -> Result<Option<Vec<f32>>, TensorFileError>;
}
