//! A tokenizer from GGUF metadata (`tokenizer.ggml.*`), with llama.cpp's defaults where keys are
//! absent.

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use super::parts::TokenizerParts;
use super::{Entry, Result, SpecialIds, TokenKind, Tokenizer, TokenizerError, invalid, pretokenize};
use crate::gguf::GgufFile;

impl Tokenizer {
    /// From GGUF metadata `tokenizer.ggml.*`, with llama.cpp's defaults where keys are absent.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.str("tokenizer.ggml.model")?.to_string();
        let parts = TokenizerParts {
            origin: gguf.path().display().to_string(),
            pre: if_present(gguf, "tokenizer.ggml.pre", |key| gguf.str(key).map(str::to_string))?,
            tokens: gguf.string_array("tokenizer.ggml.tokens")?,
            token_types: if_present(gguf, "tokenizer.ggml.token_type", |key| gguf.i64_array(key))?.unwrap_or_default(),
            // llama.cpp requires merges for "gpt2"; for other models from_parts names the model.
            merges: if model == "gpt2" { gguf.string_array("tokenizer.ggml.merges")? } else { Vec::new() },
            bos_id: gguf_token_id(gguf, "tokenizer.ggml.bos_token_id")?,
            eos_id: gguf_token_id(gguf, "tokenizer.ggml.eos_token_id")?,
            eot_id: gguf_token_id(gguf, "tokenizer.ggml.eot_token_id")?,
            eom_id: gguf_token_id(gguf, "tokenizer.ggml.eom_token_id")?,
            add_bos: if_present(gguf, "tokenizer.ggml.add_bos_token", |key| gguf.bool(key))?,
            add_eos: if_present(gguf, "tokenizer.ggml.add_eos_token", |key| gguf.bool(key))?,
            model,
        };
        Self::from_parts(parts)
    }

    pub fn from_parts(parts: TokenizerParts) -> Result<Self> {
        let origin = parts.origin.as_str();
        if parts.model != "gpt2" {
            let hint = if parts.model == "llama" {
                " (\"llama\" is SentencePiece, which this program does not implement)"
            } else {
                ""
            };
            return Err(TokenizerError::UnsupportedModel {
                origin: origin.into(),
                model: format!("{:?}", parts.model),
                hint,
            });
        }
        let family = pretokenize::family_for(parts.pre.as_deref()).ok_or_else(|| TokenizerError::UnknownPre {
            origin: origin.into(),
            pre: parts.pre.clone().unwrap_or_default(),
        })?;
        if !parts.token_types.is_empty() && parts.token_types.len() != parts.tokens.len() {
            return Err(invalid(
                origin,
                format!("{} token types for {} tokens", parts.token_types.len(), parts.tokens.len()),
            ));
        }
        let mut entries = Vec::with_capacity(parts.tokens.len());
        for (id, text) in parts.tokens.into_iter().enumerate() {
            let code = parts.token_types.get(id).copied().unwrap_or(1);
            let kind = TokenKind::from_gguf(code)
                .ok_or_else(|| invalid(origin, format!("token {id} ({text:?}) has unknown token type {code}")))?;
            // llama.cpp renames empty tokens so that every text maps back to one id.
            let text = if text.is_empty() { format!("[EMPTY_{id}]") } else { text };
            entries.push(Entry::new(text, kind));
        }
        let vocab: Vocab = entries.iter().enumerate().map(|(id, e)| (e.text.clone(), id as u32)).collect();
        let merges = parts
            .merges
            .iter()
            .enumerate()
            .map(|(i, merge)| {
                split_merge(merge).ok_or_else(|| {
                    invalid(origin, format!("merge #{i} {merge:?} is not two tokens separated by a space"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(family.ignore_merges)
            .build()
            .map_err(|e| invalid(origin, format!("cannot build the BPE model from tokens and merges: {e}")))?;
        let mut bpe = tokenizers::Tokenizer::new(model);
        bpe.with_pre_tokenizer(Some(pretokenize::pre_tokenizer(family).map_err(|e| invalid(origin, e))?));
        bpe.with_decoder(Some(ByteLevel::default()));
        let ids = SpecialIds { bos: parts.bos_id, eos: parts.eos_id, eot: parts.eot_id, eom: parts.eom_id };
        Self::assemble(
            origin,
            bpe,
            entries,
            ids,
            parts.add_bos.unwrap_or(family.add_bos),
            parts.add_eos.unwrap_or(false),
        )
    }
}

/// llama.cpp splits a merge at its first space after the first character.
pub(super) fn split_merge(merge: &str) -> Option<(String, String)> {
    let (at, _) = merge.char_indices().skip(1).find(|&(_, c)| c == ' ')?;
    Some((merge[..at].to_string(), merge[at + 1..].to_string()))
}

/// An id key; absent or negative (some writers use -1 for "none") means no token.
pub(super) fn gguf_token_id(gguf: &GgufFile, key: &str) -> Result<Option<u32>> {
    let Some(value) = gguf.get(key) else { return Ok(None) };
    if value.as_i64().is_some_and(|id| id < 0) {
        return Ok(None);
    }
    let id = gguf.u64(key)?;
    let id = u32::try_from(id)
        .map_err(|_| invalid(&gguf.path().display().to_string(), format!("`{key}` = {id} is not a token id")))?;
    Ok(Some(id))
}

/// `read(key)` if the GGUF has the key.
pub(super) fn if_present<T>(
    gguf: &GgufFile,
    key: &str,
    read: impl FnOnce(&str) -> crate::gguf::Result<T>,
) -> Result<Option<T>> {
    Ok(gguf.get(key).map(|_| read(key)).transpose()?)
}
