//! GGUF's names for the model's tensors (llama.cpp's convention), and the file as the loader
//! reads it.

use std::path::Path;

use super::{GgufError, GgufFile};
use crate::dequant::GgmlType;
use crate::tensor_file::{ModelTensor, TensorFile, TensorFileError, TensorNames};

impl From<GgufError> for TensorFileError {
    fn from(e: GgufError) -> Self {
        Self(Box::new(e))
    }
}

/// llama.cpp's names.
const GGUF_NAMES: TensorNames = TensorNames {
    token_embedding: "token_embd.weight",
    output: "output.weight",
    output_norm: "output_norm.weight",
    layer: |i, part| format!("blk.{i}.{part}.weight"),
    parts: ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"],
};

impl TensorFile for GgufFile {
    fn origin(&self) -> &Path {
        self.path()
    }

    fn name(&self, tensor: ModelTensor) -> String {
        GGUF_NAMES.name(tensor)
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
