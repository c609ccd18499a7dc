//! Meta's Llama 3 `tokenizer.model`: tiktoken's text format, one `base64(token bytes) rank` per
//! line. It holds only the BPE ranks; the merges and the special tokens are derived here, as
//! Hugging Face's `TikTokenConverter` and Meta's `llama3/tokenizer.py` do, so the result is the
//! tokenizer.json Hugging Face ships for the same model.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::parts::TokenizerParts;
use super::pretokenize::BYTE_TO_CHAR;
use super::{Result, TokenKind, Tokenizer, TokenizerError, invalid};

/// Longer lines are refused before they are held in memory. Llama 3's longest line is 178
/// bytes; 1024 leaves room for tokens of over 700 bytes.
const MAX_LINE: usize = 1024;

/// Meta's special tokens, in id order after the ranks; the rest of the 256 are reserved.
const NAMED_SPECIALS: [&str; 11] = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
];
const SPECIAL_COUNT: usize = 256;

/// Llama 3's 256 special tokens in Meta's order (`<|reserved_special_token_2|>` onwards fill up).
pub(super) fn llama3_special_tokens() -> Vec<String> {
    let reserved = (0..SPECIAL_COUNT - NAMED_SPECIALS.len()).map(|i| format!("<|reserved_special_token_{}|>", 2 + i));
    NAMED_SPECIALS.iter().map(|s| s.to_string()).chain(reserved).collect()
}

impl Tokenizer {
    /// From Meta's Llama 3 `tokenizer.model` (tiktoken format), pre-tokenized as "llama-bpe".
    pub fn from_tiktoken(path: &Path) -> Result<Self> {
        Self::from_parts(TokenizerParts::from_tiktoken(path)?)
    }
}

impl TokenizerParts {
    /// A tiktoken file as GGUF metadata would carry it: the ranked tokens byte-level encoded,
    /// merges derived from the ranks, then Llama 3's special tokens as control tokens.
    pub fn from_tiktoken(path: &Path) -> Result<Self> {
        let origin = path.display().to_string();
        let ranked = read_ranks(path, &origin)?;
        let texts: Vec<String> = ranked.tokens.iter().map(|bytes| byte_level(bytes)).collect();
        let merges = derive_merges(&ranked.tokens, &ranked.rank_of, &texts);

        let n = texts.len();
        let specials = llama3_special_tokens();
        // `read_ranks` caps the ranks so that every id fits a u32.
        let id_of = |text: &str| specials.iter().position(|s| s == text).map(|i| (n + i) as u32);
        let (bos, eot, eom) = (id_of("<|begin_of_text|>"), id_of("<|eot_id|>"), id_of("<|eom_id|>"));
        let mut token_types = vec![TokenKind::Normal.gguf_code(); n];
        token_types.resize(n + specials.len(), TokenKind::Control.gguf_code());
        let mut tokens = texts;
        tokens.extend(specials);
        Ok(Self {
            origin,
            model: "gpt2".into(),
            pre: Some("llama-bpe".into()),
            tokens,
            token_types,
            merges,
            bos_id: bos,
            // As from_tokenizer_json: Llama 3 instruct models end a reply with <|eot_id|>.
            eos_id: eot,
            eot_id: eot,
            eom_id: eom,
            ..Self::default()
        })
    }
}

struct Ranked {
    /// Token bytes, index = rank.
    tokens: Vec<Vec<u8>>,
    rank_of: HashMap<Vec<u8>, u32>,
}

/// Reads and checks every line; each error names the file and the line.
fn read_ranks(path: &Path, origin: &str) -> Result<Ranked> {
    let read_err = |source| TokenizerError::Read { path: path.into(), source };
    let mut reader = BufReader::new(std::fs::File::open(path).map_err(read_err)?);
    let at = |line: usize, what: String| invalid(origin, format!("line {line}: {what}"));
    let mut ranked = Ranked { tokens: Vec::new(), rank_of: HashMap::new() };
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        line += 1;
        // `take` bounds what one line can make us hold, whatever the file is.
        let read = reader.by_ref().take(MAX_LINE as u64 + 2).read_until(b'\n', &mut buf).map_err(read_err)?;
        if read == 0 {
            break;
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.len() > MAX_LINE {
            return Err(at(line, format!("longer than {MAX_LINE} bytes: not a tiktoken `base64 rank` line")));
        }
        let fields: Vec<&[u8]> = text.split(u8::is_ascii_whitespace).filter(|f| !f.is_empty()).collect();
        let (encoded, rank) = match fields[..] {
            // tiktoken's loader skips blank lines too.
            [] => continue,
            [encoded, rank] => (encoded, rank),
            [_] => return Err(at(line, "missing rank: one field where `base64 rank` was expected".into())),
            _ => return Err(at(line, format!("{} fields where `base64 rank` was expected", fields.len()))),
        };
        let expected = ranked.tokens.len();
        let rank = std::str::from_utf8(rank)
            .ok()
            .filter(|r| r.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|r| r.parse::<u32>().ok())
            .ok_or_else(|| {
                at(line, format!("rank {:?} is not a number (0 to 2^32 - 1)", String::from_utf8_lossy(rank)))
            })?;
        if rank as usize != expected {
            return Err(at(line, format!("rank {rank} where {expected} was expected: ranks must run 0, 1, 2, ...")));
        }
        // Room for the special tokens after the last rank, all ids being u32.
        if rank > u32::MAX - SPECIAL_COUNT as u32 {
            return Err(at(line, format!("rank {rank} leaves no room for the special tokens' ids")));
        }
        let bytes = base64_decode(encoded).ok_or_else(|| {
            at(
                line,
                format!("{:?} is not base64", String::from_utf8_lossy(encoded).chars().take(80).collect::<String>()),
            )
        })?;
        if let Some(first) = ranked.rank_of.insert(bytes.clone(), rank) {
            let encoded = String::from_utf8_lossy(encoded);
            return Err(at(line, format!("duplicate token {encoded}: its bytes already have rank {first}")));
        }
        ranked.tokens.push(bytes);
    }
    if ranked.tokens.is_empty() {
        return Err(at(line, "no tokens: the file is empty".into()));
    }
    // Byte-level BPE starts from single bytes; without one, tokenizers would silently drop it.
    if let Some(byte) = (0..=255u8).find(|b| !ranked.rank_of.contains_key(&[*b][..])) {
        return Err(at(line, format!("end of file, and no token is the single byte 0x{byte:02x}")));
    }
    Ok(ranked)
}

/// Hugging Face's `TikTokenConverter`: every split of a token into two tokens is a merge;
/// merges are ordered by the merged token's rank, then by the parts' ranks. Each split is one
/// hash look-up per part, so this is O(total bytes × token length), not over pairs of tokens.
fn derive_merges(tokens: &[Vec<u8>], rank_of: &HashMap<Vec<u8>, u32>, texts: &[String]) -> Vec<String> {
    let mut merges = Vec::new();
    let mut splits = Vec::new();
    for token in tokens {
        splits.clear();
        splits
            .extend((1..token.len()).filter_map(|at| Some((*rank_of.get(&token[..at])?, *rank_of.get(&token[at..])?))));
        splits.sort_unstable();
        merges
            .extend(splits.iter().map(|&(left, right)| format!("{} {}", texts[left as usize], texts[right as usize])));
    }
    merges
}

/// GPT-2's byte-level string for raw bytes (a space is "Ġ"), as tokenizer.json vocabularies have.
fn byte_level(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| BYTE_TO_CHAR[b as usize]).collect()
}

/// Standard base64 with `=` padding, as tiktoken writes it; `None` for anything else.
pub(super) fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let quads = text.len() / 4;
    let mut out = Vec::with_capacity(quads * 3);
    for (i, quad) in text.chunks_exact(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return None;
        }
        let mut bits = 0u32;
        for &c in &quad[..4 - pad] {
            let value = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            };
            bits = bits << 6 | u32::from(value);
        }
        bits <<= 6 * pad;
        out.extend_from_slice(&bits.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}
