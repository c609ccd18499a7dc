//! Bounds-checked reads of a GGUF header.

use std::path::Path;

use super::types::{GgufError, Result, Value};

/// Cursor over the header with bounds-checked reads.
pub(super) struct Reader<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
    pub path: &'a Path,
}

/// Metadata arrays nest rarely; this bounds recursion on hostile input.
const MAX_NESTING: usize = 4;

impl<'a> Reader<'a> {
    pub(super) fn truncated(&self, what: &str) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            offset: self.pos as u64,
            file_len: self.bytes.len() as u64,
        }
    }

    pub(super) fn malformed(&self, what: String) -> GgufError {
        GgufError::Malformed { path: self.path.to_path_buf(), what }
    }

    pub(super) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| self.truncated(what))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    pub(super) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("take returned N bytes"))
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Fails unless `count` items of at least `min_item_bytes` each could fit in what remains.
    pub(super) fn check_count(&self, count: u64, min_item_bytes: u64, what: &str) -> Result<()> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if count.saturating_mul(min_item_bytes) > remaining {
            return Err(self.truncated(&format!("{what} ({count} entries)")));
        }
        Ok(())
    }

    pub(super) fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        self.check_count(len, 1, what)?;
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.malformed(format!("{what} is not valid UTF-8")))
    }

    pub(super) fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        let what = format!("the value of metadata `{key}`");
        Ok(match ty {
            0 => Value::U8(self.array::<1>(&what)?[0]),
            1 => Value::I8(self.array::<1>(&what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => Value::U32(self.u32(&what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.malformed(format!("metadata `{key}`: bool byte {b} is neither 0 nor 1"))),
            },
            8 => Value::String(self.string(&what)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(self.malformed(format!("metadata `{key}`: arrays nested deeper than {MAX_NESTING}")));
                }
                let item_ty = self.u32(&what)?;
                let count = self.u64(&what)?;
                self.check_count(count, 1, &what)?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(&what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            other => return Err(self.malformed(format!("metadata `{key}` has unknown value type {other}"))),
        })
    }
}
