//! A Hugging Face model directory (`LlamaForCausalLM`), as `save_pretrained` writes it and the
//! hub serves it: `config.json`, `model.safetensors` or shards with
//! `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`, and perhaps `chat_template.jinja`. Meta's downloads add
//! `original/` (`params.json`, `consolidated.*.pth`, tiktoken's `tokenizer.model`).

mod config;
mod error;
mod safetensors;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value as Json;

use config::HfConfig;
pub use config::HfModelConfig;
pub use error::HfError;
use error::read_json;
use safetensors::Safetensors;

use crate::dequant::GgmlType;
use crate::tensor_file::{ModelTensor, TensorFile, TensorFileError, TensorNames};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// An opened Hugging Face model directory: its config checked, its shards mapped.
pub struct HfModel {
    dir: PathBuf,
    pub config: HfModelConfig,
    weights: Safetensors,
}

impl HfModel {
    pub fn open(dir: &Path) -> Result<Self, HfError> {
        let config_path = dir.join("config.json");
        let config: HfConfig = read_json(&config_path)?;
        let config = config.into_model_config().map_err(|what| HfError::invalid(&config_path, what))?;
        let weights = Safetensors::open(dir)?;
        Ok(Self { dir: dir.to_path_buf(), config, weights })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `tokenizer.json`, else tiktoken's `tokenizer.model` (here or in `original/`); the
    /// end-of-turn ids of `generation_config.json` also end generation.
    pub fn tokenizer(&self) -> Result<Tokenizer, HfError> {
        let json = self.dir.join("tokenizer.json");
        let tiktoken = ["tokenizer.model", "original/tokenizer.model"].map(|p| self.dir.join(p));
        let tokenizer = if json.is_file() {
            Tokenizer::from_file(&json, None)?
        } else if let Some(model) = tiktoken.iter().find(|p| p.is_file()) {
            Tokenizer::from_tiktoken(model)?
        } else {
            return Err(HfError::from(TokenizerError::Invalid {
                origin: self.dir.display().to_string(),
                what: "no tokenizer.json and no tokenizer.model".into(),
            }));
        };
        let ends = self.end_of_generation_ids()?;
        Ok(tokenizer.with_end_of_generation(&ends))
    }

    /// `generation_config.json`'s `eos_token_id`: one id or a list (Llama 3 Instruct lists
    /// `<|end_of_text|>`, `<|eom_id|>` and `<|eot_id|>`). None without the file.
    pub(crate) fn end_of_generation_ids(&self) -> Result<Vec<u32>, HfError> {
        let path = self.dir.join("generation_config.json");
        if !path.is_file() {
            return Ok(Vec::new());
        }
        let json: Json = read_json(&path)?;
        let ids = match &json["eos_token_id"] {
            Json::Null => Vec::new(),
            Json::Array(list) => list.iter().map(Json::as_u64).collect::<Option<Vec<_>>>().unwrap_or_default(),
            one => one.as_u64().into_iter().collect(),
        };
        let vocab = self.config.llama.vocab_size as u64;
        match ids.iter().find(|&&id| id >= vocab) {
            Some(id) => Err(HfError::invalid(&path, format!("eos_token_id {id} is outside the vocabulary of {vocab}"))),
            None => Ok(ids.into_iter().map(|id| id as u32).collect()),
        }
    }

    /// The chat template: `chat_template.jinja` (what current transformers writes), else
    /// `tokenizer_config.json`'s `chat_template` (a string, or a list whose `default` is used).
    pub fn chat_template(&self) -> Result<Option<String>, HfError> {
        let jinja = self.dir.join("chat_template.jinja");
        if jinja.is_file() {
            return std::fs::read_to_string(&jinja).map(Some).map_err(|source| HfError::Read { path: jinja, source });
        }
        let path = self.dir.join("tokenizer_config.json");
        if !path.is_file() {
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct Named {
            name: String,
            template: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Template {
            One(String),
            Named(Vec<Named>),
        }
        #[derive(Deserialize)]
        struct TokenizerConfig {
            chat_template: Option<Template>,
        }
        let config: TokenizerConfig = read_json(&path)?;
        Ok(match config.chat_template {
            None => None,
            Some(Template::One(text)) => Some(text),
            Some(Template::Named(list)) => list.into_iter().find(|t| t.name == "default").map(|t| t.template),
        })
    }
}

/// transformers' names for `LlamaForCausalLM`.
const HF_NAMES: TensorNames = TensorNames {
    token_embedding: "model.embed_tokens.weight",
    output: "lm_head.weight",
    output_norm: "model.norm.weight",
    layer: |i, part| format!("model.layers.{i}.{part}.weight"),
    parts: [
        "input_layernorm",
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "post_attention_layernorm",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ],
};

impl TensorFile for HfModel {
    fn origin(&self) -> &Path {
        &self.dir
    }

    fn name(&self, tensor: ModelTensor) -> String {
        HF_NAMES.name(tensor)
    }

    fn tensor(&self, name: &str, shape: &[usize]) -> Result<(GgmlType, &[u8]), TensorFileError> {
        self.weights.tensor(name, shape).map_err(|e| TensorFileError(Box::new(e)))
    }

    fn interleaved_qk(&self) -> bool {
        false
    }

    fn tied_output(&self) -> bool {
        self.config.tied_output
    }

    fn rope_frequency_factors(&self, _head_dim: usize) -> Result<Option<Vec<f32>>, TensorFileError> {
        Ok(self.config.rope_frequency_factors.clone())
    }
}
