//! Loading a Hugging Face tokenizer.json (byte-level BPE), optionally checked against a GGUF.

use std::path::Path;

use serde_json::Value as Json;

use super::{
    Entry, Result, SpecialIds, TokenKind, Tokenizer, TokenizerError, gguf_token_id, if_present, invalid, pretokenize,
};
use crate::gguf::{GgufFile, Value};

impl Tokenizer {
    /// From a Hugging Face tokenizer.json (byte-level BPE). Which source wins for BOS/EOS:
    /// the json's post-processor template when it has one (`<bos> $A` means add BOS; HF applies
    /// exactly that, and a json given explicitly is meant to override the GGUF), else the GGUF's
    /// `tokenizer.ggml.*` (ids mapped to this json by token text, since the vocabularies may be
    /// numbered differently), else no BOS/EOS. EOT/EOM always come from the GGUF, plus
    /// llama.cpp's list of end-of-generation texts. With a GGUF, a json with more tokens than
    /// the model's embedding has rows is an error; fewer is fine (models pad their embeddings).
    pub fn from_file(path: &Path, gguf: Option<&GgufFile>) -> Result<Self> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| TokenizerError::Read { path: path.into(), source })?;
        let json_err = |source| TokenizerError::Json { path: path.into(), source };
        let mut json: Json = serde_json::from_str(&text).map_err(json_err)?;
        let model_type = json.pointer("/model/type").and_then(Json::as_str).unwrap_or("(none)");
        let decoder_type = json.pointer("/decoder/type").and_then(Json::as_str).unwrap_or("(none)");
        if model_type != "BPE" || decoder_type != "ByteLevel" {
            let model = format!("{model_type} with decoder {decoder_type}");
            return Err(TokenizerError::UnsupportedModel { origin, model, hint: "" });
        }
        let added: Vec<AddedToken> = match json.get_mut("added_tokens").map(Json::take) {
            None | Some(Json::Null) => Vec::new(),
            Some(list) => serde_json::from_value(list).map_err(json_err)?,
        };
        let template = Template::from_post_processor(&json["post_processor"], &origin)?;
        // Special tokens are ours to match and BOS/EOS ours to add (see the module comment).
        json["added_tokens"] = Json::Array(Vec::new());
        json["post_processor"] = Json::Null;
        let bpe: tokenizers::Tokenizer = serde_json::from_value(json).map_err(json_err)?;

        let model_vocab = bpe.get_vocab(false);
        let size = model_vocab.values().chain(added.iter().map(|t| &t.id)).max().map_or(0, |&max| max as usize + 1);
        let mut entries = vec![Entry::new(String::new(), TokenKind::Unused); size];
        for (text, id) in model_vocab {
            entries[id as usize] = Entry::new(text, TokenKind::Normal);
        }
        for token in added {
            let kind = if token.special { TokenKind::Control } else { TokenKind::UserDefined };
            entries[token.id as usize] =
                Entry { text: token.content, kind, lstrip: token.lstrip, rstrip: token.rstrip };
        }

        let mut ids = SpecialIds { bos: template.bos, eos: template.eos, ..SpecialIds::default() };
        let (mut add_bos, mut add_eos) = (template.add_bos, template.add_eos);
        if let Some(gguf) = gguf {
            let model_size = model_vocab_size(gguf)?;
            if size > model_size {
                return Err(TokenizerError::VocabMismatch {
                    path: path.into(),
                    tokenizer: size,
                    model_path: gguf.path().into(),
                    model: model_size,
                });
            }
            let by_text = |key: &str| gguf_token_in(gguf, key, &entries, &origin);
            ids.bos = ids.bos.or(by_text("tokenizer.ggml.bos_token_id")?);
            ids.eos = ids.eos.or(by_text("tokenizer.ggml.eos_token_id")?);
            ids.eot = by_text("tokenizer.ggml.eot_token_id")?;
            ids.eom = by_text("tokenizer.ggml.eom_token_id")?;
            let family_add_bos = || {
                let pre = gguf
                    .get("tokenizer.ggml.pre")
                    .and_then(|v| if let Value::String(s) = v { Some(s.as_str()) } else { None });
                pretokenize::family_for(pre).is_some_and(|f| f.add_bos)
            };
            let flag = |key: &str| if_present(gguf, key, |key| gguf.bool(key));
            add_bos = add_bos.or(flag("tokenizer.ggml.add_bos_token")?).or_else(|| Some(family_add_bos()));
            add_eos = add_eos.or(flag("tokenizer.ggml.add_eos_token")?);
        }
        Self::assemble(&origin, bpe, entries, ids, add_bos.unwrap_or(false), add_eos.unwrap_or(false))
    }
}

/// The GGUF's token for `key`, found in `entries` by its text.
fn gguf_token_in(gguf: &GgufFile, key: &str, entries: &[Entry], origin: &str) -> Result<Option<u32>> {
    let Some(id) = gguf_token_id(gguf, key)? else { return Ok(None) };
    let tokens = gguf.array("tokenizer.ggml.tokens")?;
    let Some(Value::String(text)) = tokens.get(id as usize) else {
        return Err(invalid(
            &gguf.path().display().to_string(),
            format!("`{key}` = {id} is not an entry of tokenizer.ggml.tokens"),
        ));
    };
    let found = entries.iter().position(|e| &e.text == text);
    found.map(|i| Some(i as u32)).ok_or_else(|| {
        invalid(origin, format!("has no token {text:?}, which {} names in `{key}`", gguf.path().display()))
    })
}

/// Rows of the model's token embedding, else what its metadata says the vocabulary is.
fn model_vocab_size(gguf: &GgufFile) -> Result<usize> {
    if let Some(info) = gguf.tensor_info("token_embd.weight") {
        return Ok(info.shape()[0]);
    }
    if let Ok(arch) = gguf.str("general.architecture") {
        let key = format!("{arch}.vocab_size");
        if gguf.get(&key).is_some() {
            return Ok(gguf.u64(&key)? as usize);
        }
    }
    Ok(gguf.array("tokenizer.ggml.tokens")?.len())
}

#[derive(serde::Deserialize)]
struct AddedToken {
    id: u32,
    content: String,
    special: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
}

/// What a tokenizer.json's TemplateProcessing says about BOS/EOS (`None`: it has no template).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Template {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
}

impl Template {
    pub(super) fn from_post_processor(processor: &Json, origin: &str) -> Result<Self> {
        let template = match processor["type"].as_str() {
            Some("TemplateProcessing") => processor,
            Some("Sequence") => match processor["processors"]
                .as_array()
                .and_then(|all| all.iter().find(|p| p["type"] == "TemplateProcessing"))
            {
                Some(found) => found,
                None => return Ok(Self::default()),
            },
            _ => return Ok(Self::default()),
        };
        let Some(single) = template["single"].as_array() else { return Ok(Self::default()) };
        let sequence_at = single.iter().position(|item| item.get("Sequence").is_some()).unwrap_or(single.len());
        let special_id = |item: &Json| -> Result<Option<u32>> {
            let Some(name) = item.pointer("/SpecialToken/id").and_then(Json::as_str) else { return Ok(None) };
            let id = template["special_tokens"][name]["ids"][0].as_u64();
            id.map(|id| Some(id as u32)).ok_or_else(|| {
                invalid(origin, format!("post_processor template names special token {name:?} without an id"))
            })
        };
        let first_special = |items: &[Json]| -> Result<Option<u32>> {
            for item in items {
                if let Some(id) = special_id(item)? {
                    return Ok(Some(id));
                }
            }
            Ok(None)
        };
        let bos = first_special(&single[..sequence_at])?;
        let eos = first_special(single.get(sequence_at + 1..).unwrap_or_default())?;
        Ok(Self { bos, eos, add_bos: Some(bos.is_some()), add_eos: Some(eos.is_some()) })
    }
}
