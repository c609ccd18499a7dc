//! The model's hyper-parameters: read from GGUF `llama.*` metadata, or taken from the published
//! Llama 3.x shapes (for random-weight models and for checking `--size` against a file).

use crate::gguf::{GgufError, GgufFile};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: architecture `{found}` is not supported (this program runs `llama` models only)")]
    UnsupportedArchitecture { path: String, found: String },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: inconsistent model metadata: {what}")]
    Inconsistent { path: String, what: String },
    #[error("--size {size}: {path} is not that shape ({what})")]
    SizeMismatch { size: ModelSize, path: String, what: String },
}

/// Everything the forward pass needs to know about the model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    /// Width of the residual stream (`embedding_length`).
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Grouped-query attention: each KV head serves `n_heads / n_kv_heads` query heads.
    pub n_kv_heads: usize,
    pub ffn_dim: usize,
    pub rope_theta: f32,
    pub norm_eps: f32,
    /// The context length the model was trained for; the KV cache may use less.
    pub context_length: usize,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// Reads `llama.*` keys; fails on any other architecture or an inconsistent shape.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ConfigError> {
        let path = gguf.path().display().to_string();
        let arch = gguf.str("general.architecture")?;
        if arch != "llama" {
            return Err(ConfigError::UnsupportedArchitecture { path, found: arch.to_string() });
        }
        let count = |key: &str| -> Result<usize, GgufError> { Ok(gguf.u64(&format!("llama.{key}"))? as usize) };
        let dim = count("embedding_length")?;
        let n_heads = count("attention.head_count")?;
        // Absent head_count_kv means plain multi-head attention.
        let n_kv_heads = if gguf.get("llama.attention.head_count_kv").is_some() {
            count("attention.head_count_kv")?
        } else {
            n_heads
        };
        let vocab_size = match gguf.get("llama.vocab_size") {
            Some(_) => count("vocab_size")?,
            None => gguf.array("tokenizer.ggml.tokens")?.len(),
        };
        let config = Self {
            vocab_size,
            dim,
            n_layers: count("block_count")?,
            n_heads,
            n_kv_heads,
            ffn_dim: count("feed_forward_length")?,
            rope_theta: match gguf.get("llama.rope.freq_base") {
                Some(_) => gguf.f64("llama.rope.freq_base")? as f32,
                None => 10_000.0,
            },
            norm_eps: gguf.f64("llama.attention.layer_norm_rms_epsilon")? as f32,
            context_length: count("context_length")?,
        };
        let inconsistent = |what: String| ConfigError::Inconsistent { path: path.clone(), what };
        config.validate().map_err(inconsistent)?;
        if let Some(v) = gguf.get("llama.rope.dimension_count") {
            let rope_dim = v.as_u64().unwrap_or(0) as usize;
            if rope_dim != config.head_dim() {
                return Err(inconsistent(format!(
                    "rope.dimension_count is {rope_dim} but the head dimension is {}; partial rotary embeddings are not supported",
                    config.head_dim()
                )));
            }
        }
        Ok(config)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("embedding_length", self.dim),
            ("block_count", self.n_layers),
            ("attention.head_count", self.n_heads),
            ("attention.head_count_kv", self.n_kv_heads),
            ("feed_forward_length", self.ffn_dim),
            ("context_length", self.context_length),
        ];
        if let Some((key, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(format!("llama.{key} is 0"));
        }
        if !self.dim.is_multiple_of(self.n_heads) {
            return Err(format!("embedding_length {} is not divisible by head_count {}", self.dim, self.n_heads));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(format!("head_count {} is not a multiple of head_count_kv {}", self.n_heads, self.n_kv_heads));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!("head dimension {} is odd; RoPE rotates pairs", self.head_dim()));
        }
        Ok(())
    }

    /// Checks a file's shape against `--size`.
    pub fn check_size(&self, size: ModelSize, path: &str) -> Result<(), ConfigError> {
        let want = size.config();
        let fields = [
            ("dim", self.dim, want.dim),
            ("layers", self.n_layers, want.n_layers),
            ("heads", self.n_heads, want.n_heads),
            ("KV heads", self.n_kv_heads, want.n_kv_heads),
            ("FFN", self.ffn_dim, want.ffn_dim),
        ];
        let diffs: Vec<String> = fields
            .iter()
            .filter(|(_, got, want)| got != want)
            .map(|(name, got, want)| format!("{name} {got}, expected {want}"))
            .collect();
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::SizeMismatch { size, path: path.to_string(), what: diffs.join("; ") })
        }
    }
}

/// The published Llama 3.x shapes, selectable with `--size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSize {
    B1,
    B3,
    B8,
    B70,
}

impl std::str::FromStr for ModelSize {
    type Err = String;

    /// `1B`, `3B`, `8B` or `70B` (any case).
    fn from_str(s: &str) -> Result<Self, String> {
        by_name(&Self::ALL, s, "model size")
    }
}

/// The one of `values` whose name is `name` (any case), else an error naming `what` and listing
/// the names: what a `FromStr` of a closed set of named values does.
pub(crate) fn by_name<T: Copy + std::fmt::Display>(values: &[T], name: &str, what: &str) -> Result<T, String> {
    if let Some(&value) = values.iter().find(|v| v.to_string().eq_ignore_ascii_case(name)) {
        return Ok(value);
    }
    let names: Vec<String> = values.iter().map(T::to_string).collect();
    let listed = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(format!("unknown {what} `{name}`: use {listed}"))
}

impl std::fmt::Display for ModelSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelSize::B1 => "1B",
            ModelSize::B3 => "3B",
            ModelSize::B8 => "8B",
            ModelSize::B70 => "70B",
        })
    }
}

impl ModelSize {
    pub const ALL: [ModelSize; 4] = [ModelSize::B1, ModelSize::B3, ModelSize::B8, ModelSize::B70];

    /// Shapes from Meta's published configs (Llama 3.2 1B/3B, Llama 3.1 8B/70B).
    pub fn config(self) -> LlamaConfig {
        //                  dim  layers heads kv  ffn
        let (dim, n_layers, n_heads, n_kv_heads, ffn_dim) = match self {
            ModelSize::B1 => (2048, 16, 32, 8, 8192),
            ModelSize::B3 => (3072, 28, 24, 8, 8192),
            ModelSize::B8 => (4096, 32, 32, 8, 14336),
            ModelSize::B70 => (8192, 80, 64, 8, 28672),
        };
        LlamaConfig {
            vocab_size: 128_256,
            dim,
            n_layers,
            n_heads,
            n_kv_heads,
            ffn_dim,
            rope_theta: 500_000.0,
            norm_eps: 1e-5,
            context_length: 131_072,
        }
    }

    /// Llama 3.2 1B and 3B share the embedding with the output head; 3.1 8B and 70B do not.
    pub fn tied_embeddings(self) -> bool {
        matches!(self, ModelSize::B1 | ModelSize::B3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_consistent() {
        for size in [ModelSize::B1, ModelSize::B3, ModelSize::B8, ModelSize::B70] {
            let c = size.config();
            c.validate().unwrap();
            let expected_head_dim = if size == ModelSize::B1 { 64 } else { 128 };
            assert_eq!(c.head_dim(), expected_head_dim, "{size}");
        }
        assert_eq!(ModelSize::B1.config().kv_dim(), 512);
    }

    #[test]
    fn sizes_parse_by_name() {
        assert_eq!("8b".parse::<ModelSize>(), Ok(ModelSize::B8));
        assert_eq!("2B".parse::<ModelSize>().unwrap_err(), "unknown model size `2B`: use 1B, 3B, 8B or 70B");
    }

    #[test]
    fn size_mismatch_names_the_fields() {
        let mut c = ModelSize::B1.config();
        c.n_layers = 30;
        let err = c.check_size(ModelSize::B1, "m.gguf").unwrap_err().to_string();
        assert!(err.contains("layers 30, expected 16"), "{err}");
        assert!(ModelSize::B1.config().check_size(ModelSize::B1, "m.gguf").is_ok());
    }
}
