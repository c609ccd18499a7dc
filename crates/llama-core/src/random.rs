//! Models of a published shape with random weights, for speed measurements (timing needs no
//! trained weights): generated on the device, or drawn on the host and stored in a GGUF format
//! ([`WeightType`]) to load as a converted file's would be.

use burn::tensor::{Tensor, backend::Backend};

use crate::config::LlamaConfig;
use crate::dequant::{self, GgmlType};
use crate::kernels::{Kernels, Projections, RawWeight, RmsNorm};
use crate::load::LoadError;
use crate::model::{Layer, Llama};
use crate::rope::{self, RopeTables};
use crate::sampling::Rng;

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

impl<B: Backend, K: Kernels<B>> Llama<B, K> {
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
