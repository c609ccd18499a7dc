//! What can be wrong with a Hugging Face folder, and reading its JSON files.

use std::path::{Path, PathBuf};

use crate::tokenizer::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{dir} has no model.safetensors and no model.safetensors.index.json")]
    NoWeights { dir: PathBuf },
    #[error("shard {path}{listed} is missing")]
    MissingShard { path: PathBuf, listed: String },
    #[error("{path}: not a valid safetensors file: {what}")]
    BadSafetensors { path: PathBuf, what: String },
    #[error("tensor `{name}` is missing from {files}")]
    MissingTensor { files: String, name: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

impl HfError {
    pub(super) fn invalid(path: &Path, what: impl Into<String>) -> Self {
        Self::Invalid { path: path.to_path_buf(), what: what.into() }
    }
}

/// `path` parsed as JSON of type `T`.
pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, HfError> {
    let text = std::fs::read_to_string(path).map_err(|source| HfError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| HfError::Json { path: path.to_path_buf(), source })
}
