//! Command-line flags shared by every framework binary.

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::config::ModelSize;

/// The model `cargo xtask setup` fetches, used when `--model` is not given.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The workspace's `models/` folder (where set-up puts the default model).
pub fn models_dir() -> PathBuf {
    // llama-core lives at <workspace>/crates/llama-core.
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().and_then(Path::parent).unwrap_or(crate_dir).join("models")
}

#[derive(Debug, Clone, Parser)]
#[command(version, about = "Run a Llama 3.x GGUF model", long_about = None)]
pub struct Args {
    /// GGUF model file [default: models/SmolLM2-135M-Instruct.Q4_1.gguf, fetched by `cargo xtask setup`]
    #[arg(long)]
    pub model: Option<PathBuf>,

    /// Hugging Face tokenizer.json to use instead of the one in the GGUF metadata
    /// [default: tokenizer.json beside the model, if present]
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,

    /// One-shot: generate a continuation of this prompt, print it and exit
    #[arg(long)]
    pub prompt: Option<String>,

    /// Tokenize the prompt as is, without the model's chat template
    #[arg(long)]
    pub raw: bool,

    /// System message for the chat template (ignored with --raw)
    #[arg(long)]
    pub system: Option<String>,

    /// Maximum number of tokens to generate
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,

    /// Sampling temperature; 0 picks the most likely token (ties to the lowest id)
    #[arg(long, default_value_t = 0.7, value_parser = non_negative_f32)]
    pub temperature: f32,

    /// Random seed for sampling [default: a fresh one, printed with --verbose and in --json]
    #[arg(long)]
    pub seed: Option<u64>,

    /// Compute and weight dtype on the device
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: FloatType,

    /// Half precision: --dtype f16 (bf16 where the device has no f16 kernels; the output says which)
    #[arg(long, conflicts_with = "dtype")]
    pub half: bool,

    /// Device: for tinygrad-only auto|cpu|gpu[:N]; for pytorch-only cpu|cuda[:N]
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Context length for the KV cache [default: the model's, capped at 4096]
    #[arg(long)]
    pub ctx_size: Option<usize>,

    /// Expected model shape; the file's metadata must match it
    #[arg(long, value_enum)]
    pub size: Option<ModelSize>,

    /// Keep generating past end-of-generation tokens until --max-tokens
    #[arg(long)]
    pub ignore_eos: bool,

    /// Measure speed: one warm-up, then --iterations runs of prefill + decode. Without --model,
    /// a random-weight model of the --size shape (default 1B) is built on the device
    #[arg(long)]
    pub benchmark: bool,

    /// Measured runs in --benchmark mode
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,

    /// Prompt length in --benchmark mode
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,

    /// Tokens to decode per run in --benchmark mode
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,

    /// Print one JSON object on stdout instead of streaming text
    #[arg(long)]
    pub json: bool,

    /// Also record this many top logits per generated token in --json output
    #[arg(long, default_value_t = 8)]
    pub top_logits: usize,

    /// Log loading and timing details to stderr
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    F32,
    F16,
    Bf16,
}

impl FloatType {
    pub fn dtype(self) -> burn::tensor::DType {
        match self {
            FloatType::F32 => burn::tensor::DType::F32,
            FloatType::F16 => burn::tensor::DType::F16,
            FloatType::Bf16 => burn::tensor::DType::BF16,
        }
    }

    pub fn bytes(self) -> usize {
        if self == FloatType::F32 { 4 } else { 2 }
    }
}

fn non_negative_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() && v >= 0.0 { Ok(v) } else { Err(format!("must be a finite number >= 0, got {s}")) }
}

impl Args {
    pub fn model_path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(|| models_dir().join(DEFAULT_MODEL_FILE))
    }
}
