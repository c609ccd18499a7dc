//! Loading a Hugging Face tokenizer.json (byte-level BPE), optionally checked against a GGUF.

use std::path::Path;

use serde_json::Value as Json;

use super::gguf_vocab::{gguf_token_id, if_present};
use super::parts::TokenizerParts;
use super::{Entry, Result, SpecialIds, TokenKind, Tokenizer, TokenizerError, invalid, pretokenize};
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

impl TokenizerParts {
    /// A tokenizer.json's vocabulary as GGUF metadata carries it (what llama.cpp's converter
    /// writes: added tokens typed control if special, user-defined otherwise), keeping the
    /// first `vocab_size` ids. `pre` names the pre-tokenizer family (e.g. "llama-bpe").
    pub fn from_tokenizer_json(path: &Path, pre: &str, vocab_size: usize) -> Result<Self> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| TokenizerError::Read { path: path.into(), source })?;
        let json: Json =
            serde_json::from_str(&text).map_err(|source| TokenizerError::Json { path: path.into(), source })?;
        let vocab =
            json.pointer("/model/vocab").and_then(Json::as_object).ok_or_else(|| invalid(&origin, "no model.vocab"))?;
        let added = json["added_tokens"].as_array().cloned().unwrap_or_default();
        let size = vocab.len() + added.len();
        if size < vocab_size {
            return Err(invalid(&origin, format!("{size} tokens, fewer than the {vocab_size} asked for")));
        }
        let mut tokens = vec![String::new(); size];
        let mut token_types = vec![TokenKind::Normal.gguf_code(); size];
        let id_of = |v: &Json| v.as_u64().map(|id| id as usize).filter(|&id| id < size);
        for (text, id) in vocab {
            let id = id_of(id).ok_or_else(|| invalid(&origin, format!("token {text:?} has a bad id")))?;
            tokens[id] = text.clone();
        }
        for token in &added {
            let id = id_of(&token["id"]).ok_or_else(|| invalid(&origin, "an added token has a bad id"))?;
            tokens[id] = token["content"].as_str().unwrap_or_default().to_string();
            let special = token["special"].as_bool().unwrap_or(false);
            token_types[id] = if special { TokenKind::Control } else { TokenKind::UserDefined }.gguf_code();
        }
        if let Some(id) = tokens.iter().position(String::is_empty) {
            return Err(invalid(&origin, format!("no token has id {id}: ids are not contiguous")));
        }
        tokens.truncate(vocab_size);
        token_types.truncate(vocab_size);
        // Older files write merges as "a b", newer ones as ["a", "b"].
        let merges = json
            .pointer("/model/merges")
            .and_then(Json::as_array)
            .ok_or_else(|| invalid(&origin, "no model.merges"))?
            .iter()
            .map(|m| match (m.as_str(), m[0].as_str(), m[1].as_str()) {
                (Some(pair), _, _) => Ok(pair.to_string()),
                (None, Some(left), Some(right)) => Ok(format!("{left} {right}")),
                _ => Err(invalid(&origin, format!("merge {m} is neither \"a b\" nor [\"a\", \"b\"]"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let id_of_text = |text: &str| tokens.iter().position(|t| t == text).map(|id| id as u32);
        Ok(Self {
            origin: format!("{origin} as GGUF metadata"),
            model: "gpt2".into(),
            pre: Some(pre.to_string()),
            bos_id: id_of_text("<|begin_of_text|>"),
            eos_id: id_of_text("<|eot_id|>").or_else(|| id_of_text("<|end_of_text|>")),
            eot_id: id_of_text("<|eot_id|>"),
            tokens,
            token_types,
            merges,
            ..Self::default()
        })
    }

    /// The `tokenizer.ggml.*` keys a GGUF file carries for these parts.
    pub fn gguf_metadata(&self) -> Vec<(&'static str, Value)> {
        let strings = |items: &[String]| Value::Array(items.iter().map(|s| Value::String(s.clone())).collect());
        let mut keys = vec![
            ("tokenizer.ggml.model", Value::String(self.model.clone())),
            ("tokenizer.ggml.tokens", strings(&self.tokens)),
            (
                "tokenizer.ggml.token_type",
                Value::Array(self.token_types.iter().map(|&t| Value::I32(t as i32)).collect()),
            ),
            ("tokenizer.ggml.merges", strings(&self.merges)),
        ];
        let ids = [
            ("tokenizer.ggml.pre", self.pre.clone().map(Value::String)),
            ("tokenizer.ggml.bos_token_id", self.bos_id.map(Value::U32)),
            ("tokenizer.ggml.eos_token_id", self.eos_id.map(Value::U32)),
            ("tokenizer.ggml.eot_token_id", self.eot_id.map(Value::U32)),
            ("tokenizer.ggml.eom_token_id", self.eom_id.map(Value::U32)),
            ("tokenizer.ggml.add_bos_token", self.add_bos.map(Value::Bool)),
            ("tokenizer.ggml.add_eos_token", self.add_eos.map(Value::Bool)),
        ];
        keys.extend(ids.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        keys
    }
}
