//! What a `--model` path holds: a GGUF file, a directory holding one, or a Hugging Face model
//! directory. Opened here into one [`Checkpoint`] that gives the config, the tensors, the
//! tokenizer and the chat template, whichever format they come in.

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, LlamaConfig};
use crate::gguf::{GgufError, GgufFile, Value};
use crate::hf::{HfError, HfModel};
use crate::tensor_file::TensorFile;
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    HuggingFace(#[from] HfError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{dir} holds several GGUF files ({}): pass one of them as --model", list(.files))]
    SeveralGguf { dir: PathBuf, files: Vec<PathBuf> },
    #[error(
        "{path} is a PyTorch pickle checkpoint, which this program does not load (unpickling runs code): use the model's safetensors (a Hugging Face directory with config.json and model.safetensors) or a GGUF file"
    )]
    Pickle { path: PathBuf },
    #[error(
        "{dir} holds no model: expected config.json with model.safetensors (a Hugging Face directory) or a .gguf file"
    )]
    Empty { dir: PathBuf },
}

fn list(files: &[PathBuf]) -> String {
    files.iter().filter_map(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()).collect::<Vec<_>>().join(", ")
}

/// An opened model in either format.
pub enum Checkpoint {
    Gguf(GgufFile),
    HuggingFace(HfModel),
}

/// Pickle-based PyTorch checkpoints (Meta's `consolidated.00.pth`, old `pytorch_model.bin`).
fn is_pickle(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "pth" || e == "pt" || e == "bin")
}

impl Checkpoint {
    /// Opens `path`: a GGUF file; a directory with `config.json` (Hugging Face); or a directory
    /// holding exactly one `.gguf`. Meta's `original/` layout and other pickles are refused by name.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        if !path.is_dir() {
            if is_pickle(path) {
                return Err(CheckpointError::Pickle { path: path.to_path_buf() });
            }
            return Ok(Self::Gguf(GgufFile::open(path)?));
        }
        if path.join("config.json").is_file() {
            return Ok(Self::HuggingFace(HfModel::open(path)?));
        }
        let entries = std::fs::read_dir(path)
            .map_err(|source| GgufError::Open { path: path.to_path_buf(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect::<Vec<_>>();
        let mut ggufs: Vec<PathBuf> =
            entries.iter().filter(|p| p.extension().is_some_and(|e| e == "gguf")).cloned().collect();
        ggufs.sort();
        match ggufs.len() {
            1 => return Ok(Self::Gguf(GgufFile::open(&ggufs[0])?)),
            0 => {}
            _ => return Err(CheckpointError::SeveralGguf { dir: path.to_path_buf(), files: ggufs }),
        }
        // Meta's own download: original/consolidated.00.pth (or the folder itself).
        let pickle = [path.to_path_buf(), path.join("original")].iter().find_map(|dir| {
            let found = std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path()));
            found.filter(|p| is_pickle(p)).min()
        });
        match pickle {
            Some(path) => Err(CheckpointError::Pickle { path }),
            None => Err(CheckpointError::Empty { dir: path.to_path_buf() }),
        }
    }

    /// The file or directory the model came from.
    pub fn path(&self) -> &Path {
        self.tensors().origin()
    }

    pub fn tensors(&self) -> &dyn TensorFile {
        match self {
            Self::Gguf(gguf) => gguf,
            Self::HuggingFace(hf) => hf,
        }
    }

    pub fn config(&self) -> Result<LlamaConfig, CheckpointError> {
        Ok(match self {
            Self::Gguf(gguf) => LlamaConfig::from_gguf(gguf)?,
            Self::HuggingFace(hf) => hf.config.llama.clone(),
        })
    }

    /// `explicit` (`--tokenizer`: a tokenizer.json, or tiktoken's tokenizer.model), else the
    /// model's own: a GGUF's `tokenizer.json` beside it or its metadata; a directory's files.
    pub fn tokenizer(&self, explicit: Option<&Path>) -> Result<Tokenizer, CheckpointError> {
        let from_path = |path: &Path, gguf: Option<&GgufFile>| match path.extension().is_some_and(|e| e == "model") {
            true => Tokenizer::from_tiktoken(path),
            false => Tokenizer::from_file(path, gguf),
        };
        Ok(match (self, explicit) {
            (Self::Gguf(gguf), Some(path)) => from_path(path, Some(gguf))?,
            (Self::Gguf(gguf), None) => {
                match gguf.path().parent().map(|dir| dir.join("tokenizer.json")).filter(|p| p.is_file()) {
                    Some(beside) => Tokenizer::from_file(&beside, Some(gguf))?,
                    None => Tokenizer::from_gguf(gguf)?,
                }
            }
            // A folder's generation_config.json still says which tokens end a turn.
            (Self::HuggingFace(hf), Some(path)) => {
                from_path(path, None)?.with_end_of_generation(&hf.end_of_generation_ids()?)
            }
            (Self::HuggingFace(hf), None) => hf.tokenizer()?,
        })
    }

    /// The chat template the model ships, if any.
    pub fn chat_template(&self) -> Result<Option<String>, CheckpointError> {
        Ok(match self {
            Self::Gguf(gguf) => match gguf.get("tokenizer.chat_template") {
                Some(Value::String(t)) => Some(t.clone()),
                _ => None,
            },
            Self::HuggingFace(hf) => hf.chat_template()?,
        })
    }

    /// The model's name: GGUF's `general.name`, else the file or directory name.
    pub fn name(&self) -> String {
        if let Self::Gguf(gguf) = self
            && let Some(Value::String(name)) = gguf.get("general.name")
        {
            return name.clone();
        }
        self.path().file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
    }
}
