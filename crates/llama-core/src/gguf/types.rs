//! GGUF's value types: the errors, metadata values and tensor directory entries.

use std::path::PathBuf;

use crate::dequant::{self, GgmlType};

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open model file {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a GGUF file (starts with {found:02x?}, expected the bytes \"GGUF\")")]
    NotGguf { path: PathBuf, found: Vec<u8> },
    #[error("{path}: GGUF version {version} is not supported (only versions 2 and 3)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{path} is truncated: {what} at byte {offset} runs past the end of the file ({file_len} bytes)")]
    Truncated { path: PathBuf, what: String, offset: u64, file_len: u64 },
    #[error("{path}: malformed GGUF: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error("{path}: metadata key `{key}` is missing")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: metadata key `{key}` has type {found}, expected {expected}")]
    WrongType { path: PathBuf, key: String, expected: &'static str, found: &'static str },
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has ggml type id {id}, which this program does not know")]
    UnknownTensorType { path: PathBuf, name: String, id: u32 },
    #[error("{path}: tensor `{name}`: {source}")]
    Tensor { path: PathBuf, name: String, source: dequant::DequantError },
}

pub type Result<T> = std::result::Result<T, GgufError>;

/// One metadata value, as typed in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }

    /// Any integer type that fits in u64 (writers disagree on u32 vs i32 vs u64 for counts).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
}

/// A tensor's directory entry. `dims` are in ggml order: `dims[0]` is the fastest-varying
/// (row length), so a matrix of `rows × cols` in row-major order has `dims == [cols, rows]`.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub type_id: u32,
    /// Offset of the tensor's bytes from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn ggml_type(&self) -> Option<GgmlType> {
        GgmlType::from_id(self.type_id)
    }

    pub fn type_name(&self) -> String {
        self.ggml_type().map_or_else(|| format!("unknown type id {}", self.type_id), |t| t.name().to_string())
    }

    /// Shape in row-major order (outermost first), as Burn and PyTorch write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}
