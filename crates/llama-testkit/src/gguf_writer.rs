//! Writing GGUF v3 files: synthetic models for benchmarks, and malformed ones for tests.

use std::io::{self, Write};
use std::path::Path;

use llama_core::dequant::GgmlType;
use llama_core::gguf::Value;

const ALIGNMENT: usize = 32;

/// A tensor's bytes: given up front, or produced while the file is written (so a multi-GB
/// synthetic model never has to sit in memory whole).
enum Bytes {
    Ready(Vec<u8>),
    Later { len: usize, make: Box<dyn Fn() -> Vec<u8>> },
}

impl Bytes {
    fn len(&self) -> usize {
        match self {
            Bytes::Ready(data) => data.len(),
            Bytes::Later { len, .. } => *len,
        }
    }
}

struct PendingTensor {
    name: String,
    /// ggml order (fastest-varying first).
    dims: Vec<u64>,
    type_id: u32,
    data: Bytes,
}

#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn metadata(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds a tensor of row-major `shape` whose bytes are already in `ty`'s layout.
    pub fn tensor(&mut self, name: &str, shape: &[usize], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensor_with_type_id(name, dims, ty.id(), data)
    }

    /// Any type id, even one no ggml version defines (for testing how readers refuse it).
    pub fn tensor_with_type_id(&mut self, name: &str, dims: Vec<u64>, type_id: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push(PendingTensor { name: name.to_string(), dims, type_id, data: Bytes::Ready(data) });
        self
    }

    /// A tensor whose `len` bytes `make` produces when the file is written.
    pub fn tensor_later(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: GgmlType,
        len: usize,
        make: impl Fn() -> Vec<u8> + 'static,
    ) -> &mut Self {
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        let data = Bytes::Later { len, make: Box::new(make) };
        self.tensors.push(PendingTensor { name: name.to_string(), dims, type_id: ty.id(), data });
        self
    }

    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let mut header = Vec::new();
        header.extend_from_slice(b"GGUF");
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut header, key);
            header.extend_from_slice(&type_id(value).to_le_bytes());
            put_value(&mut header, value);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_string(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.type_id.to_le_bytes());
            header.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += t.data.len().next_multiple_of(ALIGNMENT);
        }
        header.resize(header.len().next_multiple_of(ALIGNMENT), 0);
        out.write_all(&header)?;
        for t in &self.tensors {
            let made;
            let data = match &t.data {
                Bytes::Ready(data) => data,
                Bytes::Later { len, make } => {
                    made = make();
                    if made.len() != *len {
                        return Err(io::Error::other(format!(
                            "tensor {}: made {} bytes, declared {len}",
                            t.name,
                            made.len()
                        )));
                    }
                    &made
                }
            };
            out.write_all(data)?;
            out.write_all(&vec![0u8; data.len().next_multiple_of(ALIGNMENT) - data.len()])?;
        }
        Ok(())
    }

    /// Writes to `path` through a temporary file renamed into place, and refuses to replace an
    /// existing file.
    pub fn write_new_file(&self, path: &Path) -> io::Result<()> {
        if path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists; not overwriting it", path.display()),
            ));
        }
        let partial = path.with_extension("gguf.partial");
        let written = (|| {
            let mut file = io::BufWriter::new(std::fs::File::create(&partial)?);
            self.write(&mut file)?;
            file.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        match written {
            Ok(()) => std::fs::rename(&partial, path),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(value: &Value) -> u32 {
    match value {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.push(*v as u8),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(*v as u8),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            // An empty array still needs an element type; strings are the common case.
            let item_type = items.first().map_or(8, type_id);
            out.extend_from_slice(&item_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llama_core::gguf::{GgufError, GgufFile};

    /// A scratch file under the workspace's ignored `target/` (cleaned with it; the system temp
    /// folder kept one directory per test run).
    fn temp_path(name: &str) -> std::path::PathBuf {
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
        let dir = target.join(format!("gguf-writer-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    fn sample() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.metadata("general.architecture", Value::String("llama".into()))
            .metadata("llama.block_count", Value::U32(2))
            .metadata("some.f32", Value::F32(0.5))
            .metadata("some.bool", Value::Bool(true))
            .metadata("some.list", Value::Array(vec![Value::String("a".into()), Value::String("bé".into())]))
            .metadata("some.ints", Value::Array(vec![Value::I32(-1), Value::I32(7)]));
        let values: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        w.tensor("t.weight", &[2, 3], GgmlType::F32, values).tensor("n.weight", &[3], GgmlType::F32, vec![0u8; 12]);
        w
    }

    #[test]
    fn written_files_read_back() {
        let path = temp_path("roundtrip.gguf");
        sample().write_new_file(&path).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.str("general.architecture").unwrap(), "llama");
        assert_eq!(f.u64("llama.block_count").unwrap(), 2);
        assert_eq!(f.f64("some.f32").unwrap(), 0.5);
        assert!(f.bool("some.bool").unwrap());
        assert_eq!(f.string_array("some.list").unwrap(), vec!["a", "bé"]);
        assert_eq!(f.i64_array("some.ints").unwrap(), vec![-1, 7]);
        let info = f.tensor_info("t.weight").unwrap();
        assert_eq!(info.shape(), vec![2, 3]);
        assert_eq!(info.dims, vec![3, 2], "ggml order is fastest-varying first");
        assert_eq!(f.tensor_f32("t.weight", &[2, 3]).unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let err = f.tensor_f32("t.weight", &[3, 2]).unwrap_err().to_string();
        assert!(err.contains("has shape [2, 3]"), "{err}");
        assert!(matches!(f.str("llama.block_count"), Err(GgufError::WrongType { .. })));
        assert!(matches!(f.str("absent.key"), Err(GgufError::MissingKey { .. })));
        assert!(matches!(f.tensor_f32("absent.weight", &[1]), Err(GgufError::MissingTensor { .. })));
    }

    #[test]
    fn never_overwrites() {
        let path = temp_path("exists.gguf");
        std::fs::write(&path, b"precious").unwrap();
        let err = sample().write_new_file(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    fn bytes_of(w: &GgufWriter) -> Vec<u8> {
        let mut out = Vec::new();
        w.write(&mut out).unwrap();
        out
    }

    fn open_bytes(name: &str, bytes: &[u8]) -> Result<GgufFile, GgufError> {
        let path = temp_path(name);
        std::fs::write(&path, bytes).unwrap();
        GgufFile::open(&path)
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = bytes_of(&sample());
        // The last tensor holds 12 bytes, padded to 32; cutting only padding loses nothing.
        let needed = full.len() - (ALIGNMENT - 12);
        assert!(open_bytes("whole.gguf", &full[..needed]).is_ok());
        for len in 0..needed {
            let result = open_bytes("cut.gguf", &full[..len]);
            assert!(result.is_err(), "a file cut to {len} of {} bytes was accepted", full.len());
        }
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        // A metadata string that claims 2^60 bytes.
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let err = open_bytes("huge.gguf", &bytes).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn other_versions_are_refused_by_number() {
        let mut bytes = bytes_of(&sample());
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        let err = open_bytes("v1.gguf", &bytes).unwrap_err().to_string();
        assert!(err.contains("GGUF version 1 is not supported"), "{err}");
    }

    #[test]
    fn duplicate_tensor_names_are_refused() {
        let mut w = sample();
        w.tensor("t.weight", &[1], GgmlType::F32, vec![0u8; 4]);
        let err = open_bytes("dup.gguf", &bytes_of(&w)).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
    }
}
