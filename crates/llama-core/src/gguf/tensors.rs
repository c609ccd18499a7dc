//! GGUF's names for the model's tensors (llama.cpp's convention), and the file as the loader
//! reads it.

use std::path::Path;

use super::{GgufError, GgufFile};
use crate::dequant::GgmlType;
use crate::tensor_file::{LayerTensor, ModelTensor, TensorFile, TensorFileError};

impl From<GgufError> for TensorFileError {
    fn from(e: GgufError) -> Self {
        Self(Box::new(e))
    }
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

    fn tensor(&self, name: &str, shape: &[usize]) -> Result<(GgmlType, &[u8]), TensorFileError> {
        let (_, ggml_type, bytes) = GgufFile::tensor(self, name, shape)?;
        Ok((ggml_type, bytes))
    }

    fn interleaved_qk(&self) -> bool {
        true
    }

    fn tied_output(&self) -> bool {
        self.tensor_info("output.weight").is_none()
    }

    fn rope_frequency_factors(&self, head_dim: usize) -> Result<Option<Vec<f32>>, TensorFileError> {
        match self.tensor_info("rope_freqs.weight") {
            Some(_) => Ok(Some(self.tensor_f32("rope_freqs.weight", &[head_dim / 2])?)),
            None => Ok(None),
        }
    }
}
