//! GGUF reader: header, metadata and tensor directory parsed eagerly; tensor data memory-mapped.
//!
//! Format (v2/v3, little-endian): magic `GGUF`, version u32, tensor count u64, metadata count u64,
//! then `key: string, type: u32, value` pairs, then per tensor `name, n_dims u32, dims u64 × n,
//! type u32, offset u64`, then padding to `general.alignment` (default 32) and the data blob.
//!
//! We parse it ourselves rather than through a crate so that every malformed input maps to an
//! error naming the file and what is wrong (truncated where, which tensor, which type), and so that
//! no length read from the file is trusted before it is checked against the bytes that remain.

mod reader;
mod tensors;
mod types;

use reader::Reader;
pub use types::{GgufError, Result, TensorInfo, Value};

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dequant::{self, GgmlType};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    pub version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| GgufError::Open { path: path.clone(), source };
        let file = File::open(&path).map_err(open_err)?;
        if file.metadata().map_err(open_err)?.is_dir() {
            return Err(open_err(std::io::Error::other("is a directory")));
        }
        // SAFETY: the map is read-only; like every mmap-based loader we assume the file is not
        // truncated by another process while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(open_err)?;
        Self::parse(path, mmap)
    }

    fn parse(path: PathBuf, mmap: Mmap) -> Result<Self> {
        let mut r = Reader { bytes: &mmap, pos: 0, path: &path };
        let magic = r
            .take(4, "the magic number")
            .map_err(|_| GgufError::NotGguf { path: path.clone(), found: mmap[..mmap.len().min(4)].to_vec() })?;
        if magic != MAGIC {
            return Err(GgufError::NotGguf { path: path.clone(), found: magic.to_vec() });
        }
        let version = r.u32("the version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { path: path.clone(), version });
        }
        let tensor_count = r.u64("the tensor count")?;
        let kv_count = r.u64("the metadata count")?;

        let mut metadata = BTreeMap::new();
        for i in 0..kv_count {
            let key = r.string(&format!("metadata key #{i}"))?;
            let ty = r.u32(&format!("the type of metadata `{key}`"))?;
            let value = r.value(ty, &key, 0)?;
            metadata.insert(key, value);
        }

        // Every tensor entry takes at least 24 bytes; refuse counts the file cannot hold before
        // reserving memory for them.
        r.check_count(tensor_count, 24, "the tensor directory")?;
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        let mut by_name = HashMap::new();
        for i in 0..tensor_count {
            let name = r.string(&format!("the name of tensor #{i}"))?;
            let n_dims = r.u32(&format!("the rank of tensor `{name}`"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(r.malformed(format!("tensor `{name}` has {n_dims} dimensions (1..={MAX_DIMS} allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&format!("the shape of tensor `{name}`"))?);
            }
            if dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).is_none() {
                return Err(r.malformed(format!("tensor `{name}` has an element count that overflows: {dims:?}")));
            }
            let type_id = r.u32(&format!("the type of tensor `{name}`"))?;
            let offset = r.u64(&format!("the offset of tensor `{name}`"))?;
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(r.malformed(format!("tensor `{name}` appears twice")));
            }
            tensors.push(TensorInfo { name, dims, type_id, offset });
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(r.malformed(format!("general.alignment must be a power of two, got {v:?}"))),
            },
        };
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let file_len = mmap.len() as u64;
        for t in &tensors {
            // Tensors of unknown type cannot be sized; loading one reports its type by id.
            let Some(ty) = t.ggml_type() else { continue };
            let n_bytes = ty.bytes_for(t.n_elements() as usize).map_err(|source| GgufError::Tensor {
                path: path.clone(),
                name: t.name.clone(),
                source,
            })? as u64;
            let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(n_bytes));
            if end.is_none_or(|end| end > file_len) {
                return Err(GgufError::Truncated {
                    path: path.clone(),
                    what: format!("the data of tensor `{}` ({} bytes of {})", t.name, n_bytes, ty.name()),
                    offset: data_start.saturating_add(t.offset),
                    file_len,
                });
            }
        }
        Ok(Self { path, mmap, version, metadata, tensors, by_name, data_start })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }

    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    fn missing(&self, key: &str) -> GgufError {
        GgufError::MissingKey { path: self.path.clone(), key: key.to_string() }
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: &Value) -> GgufError {
        GgufError::WrongType { path: self.path.clone(), key: key.to_string(), expected, found: found.type_name() }
    }

    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| self.missing(key))
    }

    pub fn str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.wrong_type(key, "string", other)),
        }
    }

    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| self.wrong_type(key, "unsigned integer", v))
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.wrong_type(key, "number", v))
    }

    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            Value::Bool(b) => Ok(*b),
            other => Err(self.wrong_type(key, "bool", other)),
        }
    }

    pub fn array(&self, key: &str) -> Result<&[Value]> {
        match self.require(key)? {
            Value::Array(items) => Ok(items),
            other => Err(self.wrong_type(key, "array", other)),
        }
    }

    pub fn string_array(&self, key: &str) -> Result<Vec<String>> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(self.wrong_type(key, "array of strings", other)),
            })
            .collect()
    }

    pub fn i64_array(&self, key: &str) -> Result<Vec<i64>> {
        self.array(key)?
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| self.wrong_type(key, "array of integers", v)))
            .collect()
    }

    /// The raw bytes of a tensor, in its stored type. Bounds were checked at open.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8]> {
        let ty = self.tensor_type(info)?;
        let n_bytes = ty.bytes_for(info.n_elements() as usize).map_err(|source| self.tensor_err(info, source))?;
        let start = (self.data_start + info.offset) as usize;
        Ok(&self.mmap[start..start + n_bytes])
    }

    fn tensor_type(&self, info: &TensorInfo) -> Result<GgmlType> {
        info.ggml_type().ok_or_else(|| GgufError::UnknownTensorType {
            path: self.path.clone(),
            name: info.name.clone(),
            id: info.type_id,
        })
    }

    fn tensor_err(&self, info: &TensorInfo, source: dequant::DequantError) -> GgufError {
        GgufError::Tensor { path: self.path.clone(), name: info.name.clone(), source }
    }

    /// A tensor's directory entry, type and bytes, checking that it has the shape the model
    /// expects (row-major, outermost first).
    pub fn tensor(&self, name: &str, expected_shape: &[usize]) -> Result<(&TensorInfo, GgmlType, &[u8])> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor { path: self.path.clone(), name: name.to_string() })?;
        if info.shape() != expected_shape {
            return Err(GgufError::Malformed {
                path: self.path.clone(),
                what: format!(
                    "tensor `{name}` has shape {:?}, the model config needs {expected_shape:?}",
                    info.shape()
                ),
            });
        }
        Ok((info, self.tensor_type(info)?, self.tensor_bytes(info)?))
    }

    /// Dequantizes a tensor of the expected shape to f32.
    pub fn tensor_f32(&self, name: &str, expected_shape: &[usize]) -> Result<Vec<f32>> {
        let (info, ty, bytes) = self.tensor(name, expected_shape)?;
        dequant::dequantize(ty, bytes, info.n_elements() as usize).map_err(|e| self.tensor_err(info, e))
    }
}
