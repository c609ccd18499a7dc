//! `config.json` of a `LlamaForCausalLM` checkpoint: the shape, the norm's eps, RoPE's base and
//! Llama 3's frequency scaling, and whether the output head is the embedding.

use serde::Deserialize;

use crate::config::LlamaConfig;

/// The fields of `config.json` this program reads; the rest (dtype, transformers version, ...)
/// does not change the computation.
#[derive(Debug, Deserialize)]
pub(crate) struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    intermediate_size: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    /// transformers 4 writes `rope_theta` and `rope_scaling`; transformers 5 writes both as
    /// `rope_parameters`.
    rope_theta: Option<f64>,
    rope_scaling: Option<RopeScaling>,
    rope_parameters: Option<RopeScaling>,
    head_dim: Option<usize>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
}

/// `rope_scaling` or `rope_parameters`: plain RoPE (`"default"`) or Llama 3's scheme
/// (`"llama3"`); no other.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RopeScaling {
    /// Newer files say `rope_type`, older ones `type`.
    #[serde(alias = "type", default = "plain_rope")]
    rope_type: String,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    low_freq_factor: Option<f64>,
    #[serde(default)]
    high_freq_factor: Option<f64>,
    #[serde(default)]
    original_max_position_embeddings: Option<f64>,
}

/// What `config.json` decides: the shape, and two things GGUF keeps elsewhere.
#[derive(Debug, Clone)]
pub struct HfModelConfig {
    pub llama: LlamaConfig,
    /// `tie_word_embeddings`: no `lm_head.weight`; the head is the embedding.
    pub tied_output: bool,
    /// RoPE's per-pair frequency divisors from `rope_scaling` (what llama.cpp's converter
    /// writes as `rope_freqs.weight`), `[head_dim / 2]`.
    pub rope_frequency_factors: Option<Vec<f32>>,
}

fn plain_rope() -> String {
    "default".into()
}

impl HfConfig {
    /// Checks that this is a Llama this program computes exactly; `Err` says what is not.
    pub(crate) fn into_model_config(self) -> Result<HfModelConfig, String> {
        let is_llama = self.architectures.iter().any(|a| a == "LlamaForCausalLM")
            || (self.architectures.is_empty() && self.model_type.as_deref() == Some("llama"));
        if !is_llama {
            let found = if self.architectures.is_empty() {
                format!("model_type {:?}", self.model_type.as_deref().unwrap_or("(none)"))
            } else {
                format!("architectures {:?}", self.architectures)
            };
            return Err(format!("{found} is not supported (this program runs LlamaForCausalLM models only)"));
        }
        if let Some(act) = self.hidden_act.as_deref().filter(|&a| a != "silu") {
            return Err(format!("hidden_act {act:?} is not supported (Llama uses \"silu\")"));
        }
        if self.attention_bias || self.mlp_bias {
            return Err("attention_bias / mlp_bias: biased projections are not supported".into());
        }
        let parameters = self.rope_parameters.as_ref();
        let theta = parameters.and_then(|p| p.rope_theta).or(self.rope_theta).unwrap_or(10_000.0);
        let scaling = self.rope_scaling.as_ref().or(parameters).filter(|s| s.rope_type != "default");
        let llama = LlamaConfig {
            vocab_size: self.vocab_size,
            dim: self.hidden_size,
            n_layers: self.num_hidden_layers,
            n_heads: self.num_attention_heads,
            n_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            ffn_dim: self.intermediate_size,
            rope_theta: theta as f32,
            norm_eps: self.rms_norm_eps as f32,
            context_length: self.max_position_embeddings,
        };
        llama.validate()?;
        if let Some(head_dim) = self.head_dim.filter(|&h| h != llama.head_dim()) {
            return Err(format!(
                "head_dim {head_dim} differs from hidden_size / num_attention_heads = {}",
                llama.head_dim()
            ));
        }
        let factors = scaling.map(|s| s.frequency_factors(llama.head_dim(), theta)).transpose()?;
        Ok(HfModelConfig { llama, tied_output: self.tie_word_embeddings, rope_frequency_factors: factors })
    }
}

impl RopeScaling {
    /// Llama 3's scaling as divisors of each pair's frequency: long wavelengths (beyond the
    /// original context / `low_freq_factor`) are slowed by `factor`, short ones (below
    /// / `high_freq_factor`) kept, and those between blended smoothly.
    fn frequency_factors(&self, head_dim: usize, theta: f64) -> Result<Vec<f32>, String> {
        if self.rope_type != "llama3" {
            return Err(format!("RoPE type {:?} is not supported (only \"default\" and \"llama3\")", self.rope_type));
        }
        let field = |name: &str, value: Option<f64>| {
            value
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("rope_scaling.{name} is missing or not positive"))
        };
        let factor = field("factor", self.factor)?;
        let low = field("low_freq_factor", self.low_freq_factor)?;
        let high = field("high_freq_factor", self.high_freq_factor)?;
        let original = field("original_max_position_embeddings", self.original_max_position_embeddings)?;
        if high <= low {
            return Err(format!("rope_scaling.high_freq_factor {high} must exceed low_freq_factor {low}"));
        }
        let (low_wavelen, high_wavelen) = (original / low, original / high);
        Ok((0..head_dim / 2)
            .map(|i| {
                let freq = theta.powf(-2.0 * i as f64 / head_dim as f64);
                let wavelen = std::f64::consts::TAU / freq;
                let divisor = if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth = (original / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                divisor as f32
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<HfModelConfig, String> {
        config_of("LlamaForCausalLM", extra)
    }

    fn config_of(architecture: &str, extra: &str) -> Result<HfModelConfig, String> {
        let json = format!(
            r#"{{"architectures": ["{architecture}"], "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 128,
            "vocab_size": 100, "max_position_embeddings": 256, "rms_norm_eps": 1e-5 {extra}}}"#
        );
        serde_json::from_str::<HfConfig>(&json).map_err(|e| e.to_string())?.into_model_config()
    }

    #[test]
    fn reads_the_shape_and_defaults() {
        let c = config("").unwrap();
        assert_eq!((c.llama.dim, c.llama.n_kv_heads, c.llama.rope_theta, c.tied_output), (64, 4, 10_000.0, false));
        let c = config(r#", "num_key_value_heads": 2, "tie_word_embeddings": true"#).unwrap();
        assert_eq!((c.llama.n_kv_heads, c.tied_output), (2, true));
        assert!(c.rope_frequency_factors.is_none());
    }

    /// Llama 3.2's published scaling (factor 32, 1 / 4, original 8192, theta 500000): the same
    /// divisors llama.cpp's converter writes into `rope_freqs.weight`.
    #[test]
    fn llama3_scaling_slows_only_long_wavelengths() {
        let scaling = r#", "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#;
        let f = config(scaling).unwrap().rope_frequency_factors.unwrap();
        assert_eq!(f.len(), 8);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[7], 32.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "{f:?}");
    }

    /// transformers 5's `rope_parameters` carries the base and the scaling.
    #[test]
    fn reads_rope_parameters_as_transformers_5_writes_them() {
        let c = config(r#", "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}"#).unwrap();
        assert_eq!((c.llama.rope_theta, c.rope_frequency_factors), (100_000.0, None));
        let scaled = r#", "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#;
        let c = config(scaled).unwrap();
        assert_eq!(c.llama.rope_theta, 500_000.0);
        assert_eq!(c.rope_frequency_factors.unwrap()[7], 32.0);
    }

    #[test]
    fn refuses_what_it_cannot_compute() {
        let err = |extra: &str| config(extra).unwrap_err();
        assert!(config_of("MistralForCausalLM", "").unwrap_err().contains("MistralForCausalLM"));
        assert!(err(r#", "rope_scaling": {"type": "yarn", "factor": 4.0}"#).contains("yarn"));
        assert!(err(r#", "head_dim": 32"#).contains("head_dim 32"));
        assert!(err(r#", "num_key_value_heads": 3"#).contains("not a multiple"));
        assert!(err(r#", "hidden_act": "gelu""#).contains("gelu"));
    }
}
