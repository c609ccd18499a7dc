//! A Hugging Face checkpoint's weights: one `model.safetensors`, or the shards that
//! `model.safetensors.index.json` lists, each memory-mapped.
//!
//! The safetensors crate parses and checks each header (the JSON directory of names, dtypes,
//! shapes and byte ranges): every tensor's bytes must lie inside the file, follow the previous
//! one without gap or overlap, and match its shape and dtype. The bytes themselves are read in
//! place through the map.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use super::error::{HfError, read_json};
use crate::dequant::GgmlType;

pub(crate) const SINGLE_FILE: &str = "model.safetensors";
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";

/// Where one tensor lives: which shard, its dtype and shape, its bytes in that shard.
#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the shard's map (the header already skipped).
    bytes: std::ops::Range<usize>,
}

pub struct Safetensors {
    shards: Vec<(PathBuf, Mmap)>,
    entries: HashMap<String, Entry>,
}

/// `model.safetensors.index.json`: which shard holds each tensor.
#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

impl Safetensors {
    /// The checkpoint in `dir`: the index's shards if it has one, else `model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self, HfError> {
        let index_path = dir.join(INDEX_FILE);
        let (shard_names, expected): (Vec<String>, Option<BTreeMap<String, String>>) = if index_path.is_file() {
            let index: Index = read_json(&index_path)?;
            let mut names: Vec<String> = index.weight_map.values().cloned().collect();
            names.sort();
            names.dedup();
            if let Some(bad) = names.iter().find(|n| Path::new(n).components().count() != 1) {
                return Err(HfError::invalid(
                    &index_path,
                    format!("shard name {bad:?} is not a file name in the directory"),
                ));
            }
            (names, Some(index.weight_map))
        } else if dir.join(SINGLE_FILE).is_file() {
            (vec![SINGLE_FILE.to_string()], None)
        } else {
            return Err(HfError::NoWeights { dir: dir.to_path_buf() });
        };
        let mut shards = Vec::with_capacity(shard_names.len());
        let mut entries = HashMap::new();
        for (shard, name) in shard_names.iter().enumerate() {
            let path = dir.join(name);
            if !path.is_file() {
                let listed = if expected.is_some() { format!(" (listed in {INDEX_FILE})") } else { String::new() };
                return Err(HfError::MissingShard { path, listed });
            }
            let mmap = map(&path)?;
            let (header_len, metadata) = SafeTensors::read_metadata(&mmap)
                .map_err(|e| HfError::BadSafetensors { path: path.clone(), what: explain(&mmap, e) })?;
            let data_start = 8 + header_len;
            for (tensor, info) in metadata.tensors() {
                let (start, end) = info.data_offsets;
                let entry = Entry {
                    shard,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    bytes: data_start + start..data_start + end,
                };
                if entries.insert(tensor.clone(), entry).is_some() {
                    return Err(HfError::invalid(&path, format!("tensor `{tensor}` is also in another shard")));
                }
            }
            shards.push((path, mmap));
        }
        if let Some(expected) = expected {
            for (tensor, shard) in expected {
                let found = entries.get(&tensor).map(|e| shards[e.shard].0.file_name());
                if found.flatten().is_none_or(|f| f != shard.as_str()) {
                    return Err(HfError::invalid(
                        &index_path,
                        format!("lists tensor `{tensor}` in {shard}, which does not hold it"),
                    ));
                }
            }
        }
        Ok(Self { shards, entries })
    }

    /// Tensor `name` as ggml-typed bytes, checked to be `shape` (outermost first, as stored).
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<(GgmlType, &[u8]), HfError> {
        let entry = self.entries.get(name).ok_or_else(|| HfError::MissingTensor {
            files: self.shards.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", "),
            name: name.to_string(),
        })?;
        let path = &self.shards[entry.shard].0;
        if entry.shape != shape {
            return Err(HfError::invalid(
                path,
                format!("tensor `{name}` has shape {:?}, the model config needs {shape:?}", entry.shape),
            ));
        }
        let ggml_type = match entry.dtype {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            other => {
                return Err(HfError::invalid(
                    path,
                    format!("tensor `{name}` is {other:?}; supported dtypes are F32, F16 and BF16"),
                ));
            }
        };
        Ok((ggml_type, &self.shards[entry.shard].1[entry.bytes.clone()]))
    }
}

/// The crate's error, with the numbers where the tensors and the file's length disagree.
fn explain(file: &[u8], error: safetensors::SafeTensorError) -> String {
    if !matches!(error, safetensors::SafeTensorError::MetadataIncompleteBuffer) {
        return error.to_string();
    }
    // The header parsed and its offsets chain up: only their end and the file's length differ.
    let header_len = file.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize);
    let header: Option<serde_json::Value> = file.get(8..8 + header_len).and_then(|h| serde_json::from_slice(h).ok());
    let end = header
        .as_ref()
        .and_then(|h| h.as_object())
        .map(|tensors| tensors.values().filter_map(|t| t["data_offsets"][1].as_u64()).max().unwrap_or(0));
    match end {
        Some(end) => format!(
            "its tensors end at data byte {end}, but the file holds {} bytes of data after its {header_len}-byte header",
            file.len().saturating_sub(8 + header_len)
        ),
        None => error.to_string(),
    }
}

fn map(path: &Path) -> Result<Mmap, HfError> {
    let open_err = |source| HfError::Read { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(open_err)?;
    // SAFETY: the map is read-only; like every mmap-based loader we assume the file is not
    // truncated by another process while it is open.
    unsafe { Mmap::map(&file) }.map_err(open_err)
}
