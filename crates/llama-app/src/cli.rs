//! Command-line flags shared by every framework binary.

use std::path::{Path, PathBuf};

use clap::Parser;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use llama_core::config::ModelSize;
use llama_core::random::WeightType;
use llama_core::sampling::SamplingParams;
use llama_core::scheduler::SchedulerOptions;

/// The model `cargo xtask setup` fetches, used when `--model` is not given.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The workspace's `models/` folder (where set-up puts the default model).
pub fn models_dir() -> PathBuf {
    // llama-core lives at <workspace>/crates/llama-core.
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().and_then(Path::parent).unwrap_or(crate_dir).join("models")
}

#[derive(Debug, Clone, Parser)]
#[command(version, about = "Run a Llama 3.x model (GGUF file or Hugging Face directory)", long_about = None)]
pub struct Args {
    /// GGUF file, a folder holding one, or a Hugging Face model folder (config.json + safetensors)
    /// [default: models/SmolLM2-135M-Instruct.Q4_1.gguf, fetched by `cargo xtask setup`]
    #[arg(long)]
    pub model: Option<PathBuf>,

    /// tokenizer.json, or Llama 3's tiktoken tokenizer.model, instead of the model's own
    /// [default: a GGUF's tokenizer.json beside it, else its metadata; a folder's tokenizer.json,
    /// else its tokenizer.model]
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,

    /// One-shot: answer this prompt, print the reply and exit [default: an interactive chat,
    /// one message a line; lines from a pipe work too]
    #[arg(long)]
    pub prompt: Option<String>,

    /// Tokenize the prompt as is, without the model's chat template
    #[arg(long)]
    pub raw: bool,

    /// System message for the chat template (ignored with --raw)
    #[arg(long)]
    pub system: Option<String>,

    /// Jinja chat template file to use instead of the model's own
    /// [default: the GGUF's tokenizer.chat_template, else Llama 3's]
    #[arg(long)]
    pub chat_template: Option<PathBuf>,

    /// Maximum number of tokens to generate (per reply in a chat)
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,

    /// Sampling temperature; 0 picks the most likely token (ties to the lowest id)
    #[arg(long, default_value_t = 0.7, value_parser = non_negative_f32)]
    pub temperature: f32,

    /// Sample from the K most likely tokens only; 0 keeps all
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,

    /// Sample from the fewest most likely tokens whose probabilities sum to P; 1 keeps all
    #[arg(long, default_value_t = 0.95, value_parser = probability_above_zero)]
    pub top_p: f32,

    /// Drop tokens less likely than P times the most likely one; 0 keeps all
    #[arg(long, default_value_t = 0.05, value_parser = probability)]
    pub min_p: f32,

    /// Penalise tokens seen in the last --repeat-last-n tokens by this factor; 1 is off
    #[arg(long, default_value_t = 1.0, value_parser = positive_f32)]
    pub repeat_penalty: f32,

    /// How many recent tokens the penalties look at
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,

    /// Subtract F times a token's count in the last --repeat-last-n tokens from its logit; 0 is off
    #[arg(long, default_value_t = 0.0, value_parser = penalty)]
    pub frequency_penalty: f32,

    /// Subtract F from the logit of every token in the last --repeat-last-n tokens; 0 is off
    #[arg(long, default_value_t = 0.0, value_parser = penalty)]
    pub presence_penalty: f32,

    /// Random seed for sampling [default: a fresh one, printed with --verbose and in --json]
    #[arg(long)]
    pub seed: Option<u64>,

    /// Compute and weight dtype on the device
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: FloatType,

    /// Half precision: --dtype f16 (bf16 where the device has no f16 kernels; the output says which)
    #[arg(long, conflicts_with = "dtype")]
    pub half: bool,

    /// pytorch-only: decode through a static-shape step (position as a device tensor, KV cache
    /// written in place, attention over the whole cache with a mask), the shape CUDA graph
    /// capture needs; on a CPU device the step runs eagerly (the output says so)
    #[arg(long)]
    pub compile: bool,

    /// Greedy decoding: read each token's id back before queuing the next step, instead of
    /// queuing it one step ahead (host and device time then add up; for comparisons)
    #[arg(long)]
    pub no_pipeline: bool,

    /// Device: for tinygrad-only auto|cpu|gpu[:N]; for pytorch-only cpu|cuda[:N]
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Context length for the KV cache [default: the model's, capped at 4096]
    #[arg(long)]
    pub ctx_size: Option<usize>,

    /// Expected model shape; the file's metadata must match it
    #[arg(long, value_parser = one_of(&ModelSize::ALL))]
    pub size: Option<ModelSize>,

    /// Quantize an f32/f16/bf16 model's matmul weights at load (tinygrad-only; a quantized GGUF
    /// keeps its own format)
    #[arg(long, value_enum)]
    pub quantize: Option<Quantize>,

    /// --benchmark without --model: store the random weights in this GGUF format (drawn on the
    /// host and loaded as a file's would be) instead of generating them on the device in the
    /// compute dtype
    #[arg(long, value_parser = one_of(&WeightType::ALL), requires = "benchmark", conflicts_with = "model")]
    pub weights: Option<WeightType>,

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

    /// Serve the OpenAI-compatible HTTP API and a web chat on ADDR (docs/serve.md)
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8080",
          conflicts_with_all = ["prompt", "benchmark", "json"])]
    pub serve: Option<String>,

    /// --serve: sequences decoded together, each with its own --ctx-size KV cache
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,

    /// --serve: requests that may wait for a free slot; past that, 503
    #[arg(long, default_value_t = 16)]
    pub queue: usize,

    /// --serve: require `Authorization: Bearer KEY` on the API's routes
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,

    /// Log loading and timing details to stderr
    #[arg(long, short)]
    pub verbose: bool,
}

/// `--quantize`: how an f32/f16/bf16 model's matmul weights are stored on the device (tinygrad's
/// options). Quantized GGUF weights keep their own format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    /// 8-bit integers with one scale per weight row
    Int8,
    /// 4-bit NormalFloat (QLoRA's levels) with one scale per block of 64
    Nf4,
    /// f16
    Float16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    F32,
    F16,
    Bf16,
}

impl FloatType {
    /// As `--dtype` spells it.
    pub fn name(self) -> &'static str {
        match self {
            FloatType::F32 => "f32",
            FloatType::F16 => "f16",
            FloatType::Bf16 => "bf16",
        }
    }

    pub fn dtype(self) -> burn::tensor::DType {
        match self {
            FloatType::F32 => burn::tensor::DType::F32,
            FloatType::F16 => burn::tensor::DType::F16,
            FloatType::Bf16 => burn::tensor::DType::BF16,
        }
    }
}

fn parse_f32(s: &str, accept: impl Fn(f32) -> bool, range: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() && accept(v) { Ok(v) } else { Err(format!("must be {range}, got {s}")) }
}

fn non_negative_f32(s: &str) -> Result<f32, String> {
    parse_f32(s, |v| v >= 0.0, "a finite number >= 0")
}

fn positive_f32(s: &str) -> Result<f32, String> {
    parse_f32(s, |v| v > 0.0, "a finite number > 0")
}

fn penalty(s: &str) -> Result<f32, String> {
    parse_f32(s, |v| (-2.0..=2.0).contains(&v), "between -2 and 2")
}

fn probability(s: &str) -> Result<f32, String> {
    parse_f32(s, |v| (0.0..=1.0).contains(&v), "between 0 and 1")
}

fn probability_above_zero(s: &str) -> Result<f32, String> {
    parse_f32(s, |v| v > 0.0 && v <= 1.0, "above 0 and at most 1")
}

impl Args {
    pub fn model_path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(|| models_dir().join(DEFAULT_MODEL_FILE))
    }

    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
        }
    }

    /// What the flags ask of the framework's device.
    pub fn backend_options(&self) -> BackendOptions {
        BackendOptions {
            device: self.device.clone(),
            dtype: self.dtype,
            half: self.half,
            quantize: self.quantize,
            compile: self.compile,
            measuring: self.benchmark,
        }
    }

    /// One slot of `context` positions, run as the flags say (the one-shot, chat and benchmark
    /// modes).
    pub fn single_slot(&self, context: usize) -> SchedulerOptions {
        SchedulerOptions { pipeline: !self.no_pipeline, compile: self.compile, ..SchedulerOptions::single(context) }
    }

    /// Which mode the flags pick: `--serve` serves HTTP, `--benchmark` measures, `--prompt`
    /// answers once, and anything else opens a chat.
    pub fn mode(&self) -> Mode<'_> {
        match (&self.serve, self.benchmark, &self.prompt) {
            (Some(addr), _, _) => Mode::Serve(addr),
            (None, true, _) => Mode::Benchmark,
            (None, false, Some(prompt)) => Mode::OneShot(prompt),
            (None, false, None) => Mode::Chat,
        }
    }
}

/// What the flags ask of a framework's device.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// `--device`, as typed.
    pub device: String,
    /// `--dtype`; `--half` asks for the framework's half type instead.
    pub dtype: FloatType,
    pub half: bool,
    pub quantize: Option<Quantize>,
    /// `--compile`: a sequence decoding alone runs the static-shape step, captured where the
    /// framework can.
    pub compile: bool,
    /// The mode only measures speed (`--benchmark`): a device that runs no kernels may serve it.
    pub measuring: bool,
}

/// What the binary does with its model.
pub enum Mode<'a> {
    Serve(&'a str),
    Benchmark,
    OneShot(&'a str),
    Chat,
}

/// A flag that takes one of `values`, by their names (listed in `--help` and in the error for
/// any other).
pub fn one_of<T>(values: &[T]) -> impl TypedValueParser<Value = T> + use<T>
where
    T: ToString + std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    let names: Vec<String> = values.iter().map(T::to_string).collect();
    PossibleValuesParser::new(names).map(|name| name.parse().expect("a listed name parses"))
}
