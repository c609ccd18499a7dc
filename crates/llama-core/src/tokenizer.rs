//! Text <-> token ids for byte-level BPE ("gpt2") vocabularies, equal to the reference tokenizers:
//! llama.cpp for GGUF metadata, Hugging Face `tokenizers` for a tokenizer.json.
//!
//! The `tokenizers` crate does the regex pre-tokenization and the merges. Special tokens stay out
//! of it: we cut them out of the text first, as llama.cpp does (`tokenizer_st_partition`: each
//! special token in turn, longest first, in every piece of text not yet cut), because whether
//! control tokens count is a per-call choice (`parse_special`) that the crate only offers as a
//! mutable setting. Decoding is ours too, from each token's bytes, which the stream decoder needs.

mod gguf_vocab;
mod json;
pub mod parts;
mod pretokenize;
pub mod stream;
mod tiktoken;

use std::ops::Range;
use std::path::PathBuf;

use crate::gguf::GgufError;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("cannot read tokenizer file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a tokenizer.json this program can load: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error(
        "{origin}: tokenizer model {model} is not supported: only byte-level BPE (GGUF `tokenizer.ggml.model` = \"gpt2\", or a tokenizer.json with a BPE model and ByteLevel decoder){hint}"
    )]
    UnsupportedModel { origin: String, model: String, hint: &'static str },
    #[error(
        "{origin}: pre-tokenizer `tokenizer.ggml.pre` = {pre:?} is not supported (known: llama-bpe/llama3, smollm, gpt-2, default, and llama.cpp's aliases of these)"
    )]
    UnknownPre { origin: String, pre: String },
    #[error("{origin}: {what}")]
    Invalid { origin: String, what: String },
    #[error(
        "{path} has {tokenizer} tokens but the model {model_path} has only {model}: this tokenizer does not belong to this model"
    )]
    VocabMismatch { path: PathBuf, tokenizer: usize, model_path: PathBuf, model: usize },
    #[error("cannot tokenize the text starting {text:?}: {message}")]
    Encode { text: String, message: String },
}

type Result<T> = std::result::Result<T, TokenizerError>;

fn invalid(origin: &str, what: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid { origin: origin.to_string(), what: what.into() }
}

/// GGUF token types (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_gguf(code: i64) -> Option<Self> {
        Some(match code {
            // 0 is llama.cpp's "undefined"; converters do not write it, so read it as normal.
            0 | 1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }

    /// Cut out of text before BPE, and rendered as written rather than byte-decoded.
    fn is_special(self) -> bool {
        matches!(self, Self::Unknown | Self::Control | Self::UserDefined)
    }

    /// The code GGUF's `tokenizer.ggml.token_type` uses for this kind.
    fn gguf_code(self) -> i64 {
        match self {
            Self::Normal => 1,
            Self::Unknown => 2,
            Self::Control => 3,
            Self::UserDefined => 4,
            Self::Unused => 5,
            Self::Byte => 6,
        }
    }
}

/// Token texts that end a generation, from llama.cpp's end-of-turn and end-of-generation lists.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// One vocabulary entry while a tokenizer is assembled.
#[derive(Clone)]
struct Entry {
    text: String,
    kind: TokenKind,
    /// Hugging Face added-token flags: swallow whitespace before / after the token.
    lstrip: bool,
    rstrip: bool,
}

impl Entry {
    fn new(text: String, kind: TokenKind) -> Self {
        Self { text, kind, lstrip: false, rstrip: false }
    }
}

/// A token matched in raw text before BPE.
#[derive(Debug)]
struct SpecialToken {
    id: u32,
    text: String,
    /// User-defined tokens are matched even when control tokens are not (llama.cpp, HF alike).
    always: bool,
    lstrip: bool,
    rstrip: bool,
}

#[derive(Default)]
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
}

/// A piece of input: raw text still to be BPE-encoded, or a special token already recognised.
#[derive(Debug, PartialEq)]
enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

pub struct Tokenizer {
    bpe: tokenizers::Tokenizer,
    /// Every token's bytes, concatenated: token `i` is `piece_bytes[piece_ends[i - 1]..piece_ends[i]]`.
    piece_bytes: Vec<u8>,
    piece_ends: Vec<usize>,
    /// Longest first, the order llama.cpp tries them in.
    specials: Vec<SpecialToken>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// EOS first (callers use it as "the" end token), then the others in id order.
    end_of_generation: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special_tokens", &self.specials.len())
            .field("bos", &self.bos)
            .field("add_bos", &self.add_bos)
            .field("end_of_generation", &self.end_of_generation)
            .finish()
    }
}

impl Tokenizer {
    fn assemble(
        origin: &str,
        bpe: tokenizers::Tokenizer,
        mut entries: Vec<Entry>,
        ids: SpecialIds,
        add_bos: bool,
        add_eos: bool,
    ) -> Result<Self> {
        let n = entries.len();
        for (name, id) in [("BOS", ids.bos), ("EOS", ids.eos), ("EOT", ids.eot), ("EOM", ids.eom)] {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(invalid(origin, format!("{name} token id {id} is outside the vocabulary of {n} tokens")));
            }
        }
        if add_bos && ids.bos.is_none() {
            return Err(invalid(origin, "the tokenizer asks for a BOS token but names none"));
        }
        if add_eos && ids.eos.is_none() {
            return Err(invalid(origin, "the tokenizer asks for an EOS token but names none"));
        }

        // As llama.cpp: a token whose text says it ends a turn ends generation and is a control
        // token, whatever its declared type.
        let mut end_of_generation: Vec<u32> = [ids.eot, ids.eom].into_iter().flatten().collect();
        for (id, entry) in entries.iter_mut().enumerate() {
            if END_OF_GENERATION_TEXTS.contains(&entry.text.as_str()) {
                entry.kind = TokenKind::Control;
                end_of_generation.push(id as u32);
            }
        }
        // gpt-oss (llama.cpp's workaround): with <|return|> and <|call|>, <|end|> only ends a message.
        let has = |text: &str| end_of_generation.iter().any(|&id| entries[id as usize].text == text);
        if has("<|return|>") && has("<|call|>") {
            end_of_generation.retain(|&id| entries[id as usize].text != "<|end|>");
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        if let Some(eos) = ids.eos {
            end_of_generation.retain(|&id| id != eos);
            end_of_generation.insert(0, eos);
        }

        let mut specials: Vec<SpecialToken> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind.is_special() && !e.text.is_empty())
            .map(|(id, e)| SpecialToken {
                id: id as u32,
                text: e.text.clone(),
                always: e.kind == TokenKind::UserDefined,
                lstrip: e.lstrip,
                rstrip: e.rstrip,
            })
            .collect();
        specials.sort_by_key(|s| std::cmp::Reverse(s.text.len()));

        let mut piece_bytes = Vec::new();
        let mut piece_ends = Vec::with_capacity(n);
        for entry in &entries {
            if entry.kind.is_special() {
                piece_bytes.extend_from_slice(entry.text.as_bytes());
            } else {
                piece_bytes.extend(pretokenize::byte_level_decode(&entry.text));
            }
            piece_ends.push(piece_bytes.len());
        }
        Ok(Self {
            bpe,
            piece_bytes,
            piece_ends,
            specials,
            bos: ids.bos,
            eos: ids.eos,
            add_bos,
            add_eos,
            end_of_generation,
        })
    }

    /// Text -> ids, BOS first iff `add_bos()`. With `parse_special`, the text of a control token
    /// (e.g. "<|im_start|>") becomes that token, as llama.cpp's `special=true`; without, it is
    /// tokenized as plain text. User-defined tokens are recognised either way.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        self.tokenize(text, true, parse_special)
    }

    /// llama.cpp's `llama_tokenize`: `add_special` adds BOS/EOS as the tokenizer asks for them;
    /// `parse_special` as in [`Tokenizer::encode`].
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        for fragment in self.split_specials(text, parse_special) {
            match fragment {
                Fragment::Token(id) => ids.push(id),
                Fragment::Text(range) => {
                    let encoding = self.bpe.encode_fast(&text[range], false).map_err(|e| TokenizerError::Encode {
                        text: text.chars().take(80).collect(),
                        message: e.to_string(),
                    })?;
                    ids.extend_from_slice(encoding.get_ids());
                }
            }
        }
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// llama.cpp's partition: each special token in turn, longest first, cut out of every piece
    /// of text that no earlier token claimed.
    fn split_specials(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut fragments = if text.is_empty() { Vec::new() } else { vec![Fragment::Text(0..text.len())] };
        for special in self.specials.iter().filter(|s| parse_special || s.always) {
            let mut next = Vec::with_capacity(fragments.len());
            for fragment in fragments {
                let Fragment::Text(range) = fragment else {
                    next.push(fragment);
                    continue;
                };
                let mut start = range.start;
                while let Some(found) = text[start..range.end].find(&special.text) {
                    let at = start + found;
                    let left_end = if special.lstrip { start + text[start..at].trim_end().len() } else { at };
                    if left_end > start {
                        next.push(Fragment::Text(start..left_end));
                    }
                    next.push(Fragment::Token(special.id));
                    start = at + special.text.len();
                    if special.rstrip {
                        start = range.end - text[start..range.end].trim_start().len();
                    }
                }
                if start < range.end {
                    next.push(Fragment::Text(start..range.end));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// Ids -> text, special tokens as written; bytes that do not form UTF-8 become U+FFFD, and
    /// ids outside the vocabulary (padding rows of a larger embedding) render as nothing.
    /// No clean-up of spaces: decode(encode(x)) == x.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().filter_map(|&id| self.piece(id)).flatten().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes a token stands for.
    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        let id = id as usize;
        let end = *self.piece_ends.get(id)?;
        let start = if id == 0 { 0 } else { self.piece_ends[id - 1] };
        Some(&self.piece_bytes[start..end])
    }

    pub fn vocab_size(&self) -> usize {
        self.piece_ends.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `encode` puts BOS first.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }

    /// Every token that ends a generation: EOS first when there is one, then EOT, EOM and the
    /// tokens llama.cpp recognises by text (<|eot_id|>, <|im_end|>, <|end_of_text|>, ...).
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// This tokenizer with `ids` also ending generation (a checkpoint's `generation_config.json`
    /// names its end-of-turn tokens apart from the tokenizer).
    pub fn with_end_of_generation(mut self, ids: &[u32]) -> Self {
        let vocab = self.vocab_size();
        for &id in ids.iter().filter(|&&id| (id as usize) < vocab) {
            if !self.end_of_generation.contains(&id) {
                self.end_of_generation.push(id);
            }
        }
        self
    }

    /// The text a token stands for (special tokens as written), lossy if it is part of a character.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.piece(id).map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    }
}

#[cfg(test)]
mod tests;
