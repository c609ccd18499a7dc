//! Data for byte-level BPE: llama.cpp's pre-tokenizer regexes per `tokenizer.ggml.pre` family, and
//! GPT-2's reversible byte <-> char table.
//!
//! The regex strings are llama.cpp's (src/llama-vocab.cpp, `llm_tokenizer_bpe`'s constructor), not
//! the ones in the models' tokenizer.json files: GGUF files are tokenized by llama.cpp, so that is
//! the behaviour to reproduce. llama.cpp applies a family's regexes in order, each one splitting
//! the pieces left by the previous one and keeping both matches and the text between them; that is
//! a Hugging Face `Sequence` of `Split(regex, Isolated)` pre-tokenizers.

use std::sync::LazyLock;

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

/// GPT-2's pattern (LLAMA_VOCAB_PRE_TYPE_GPT2 and the second step of several others).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's pattern as llama.cpp adapted it: the tokenizer.json original starts with
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)`; llama.cpp spells the case-insensitivity out per letter.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How llama.cpp pre-tokenizes one family of `tokenizer.ggml.pre` values.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PreTokenizerFamily {
    /// llama.cpp's LLAMA_VOCAB_PRE_TYPE_* name, for messages and tests.
    pub name: &'static str,
    pub regexes: &'static [&'static str],
    /// Whether a piece that is itself a vocabulary entry becomes that token without running the
    /// merges (llama.cpp sets this for Llama 3: some of its tokens are not reachable by merges).
    pub ignore_merges: bool,
    /// llama.cpp's default for `add_bos` when `tokenizer.ggml.add_bos_token` is absent.
    pub add_bos: bool,
}

const LLAMA3_FAMILY: PreTokenizerFamily =
    PreTokenizerFamily { name: "LLAMA3", regexes: &[LLAMA3], ignore_merges: true, add_bos: true };
/// DBRX and Smaug use Llama 3's regex but none of its flags.
const DBRX_FAMILY: PreTokenizerFamily =
    PreTokenizerFamily { name: "DBRX", regexes: &[LLAMA3], ignore_merges: false, add_bos: false };
/// Every digit is its own piece, then GPT-2's pattern.
const SMOLLM_FAMILY: PreTokenizerFamily =
    PreTokenizerFamily { name: "SMOLLM", regexes: &[r"\p{N}", GPT2], ignore_merges: false, add_bos: false };
const GPT2_FAMILY: PreTokenizerFamily =
    PreTokenizerFamily { name: "GPT2", regexes: &[GPT2], ignore_merges: false, add_bos: false };
/// What llama.cpp uses for `pre` = "default" or no `pre` at all.
const DEFAULT_FAMILY: PreTokenizerFamily = PreTokenizerFamily {
    name: "DEFAULT",
    regexes: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
    ignore_merges: false,
    add_bos: false,
};

/// The family for a `tokenizer.ggml.pre` value, with llama.cpp's aliases; `None` for values whose
/// family we do not implement (llama.cpp would fall back to DEFAULT with a warning, which
/// tokenizes such models wrongly, so the caller reports it instead).
pub(super) fn family_for(pre: Option<&str>) -> Option<&'static PreTokenizerFamily> {
    Some(match pre {
        None | Some("default") => &DEFAULT_FAMILY,
        Some("llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2") => {
            &LLAMA3_FAMILY
        }
        Some("dbrx" | "smaug-bpe") => &DBRX_FAMILY,
        Some("smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b") => &SMOLLM_FAMILY,
        Some(
            "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" | "exaone4" | "gigachat"
            | "a.x-4.0" | "mellum",
        ) => &GPT2_FAMILY,
        Some(_) => return None,
    })
}

/// The family's regex splits followed by the byte -> char mapping (without GPT-2's own regex,
/// which the splits replace).
pub(super) fn pre_tokenizer(family: &PreTokenizerFamily) -> Result<PreTokenizerWrapper, String> {
    let mut steps = Vec::with_capacity(family.regexes.len() + 1);
    for regex in family.regexes {
        let split = Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| format!("pre-tokenizer regex {regex:?} does not compile: {e}"))?;
        steps.push(PreTokenizerWrapper::from(split));
    }
    steps.push(ByteLevel::new(false, true, false).into());
    Ok(Sequence::new(steps).into())
}

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves and the others are
/// shifted to U+0100.., so every byte has a visible, non-space character in vocabulary strings.
pub(super) static BYTE_TO_CHAR: LazyLock<[char; 256]> = LazyLock::new(|| {
    let mut table = ['\0'; 256];
    let mut shifted = 0;
    for byte in 0..=255u8 {
        let stands_for_itself = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[byte as usize] = if stands_for_itself {
            char::from(byte)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).expect("U+0100..U+0143 are chars")
        };
    }
    table
});

/// The inverse of [`BYTE_TO_CHAR`], indexed by code point (all of them are below U+0144).
static CHAR_TO_BYTE: LazyLock<Vec<Option<u8>>> = LazyLock::new(|| {
    let mut inverse = vec![None; 0x144];
    for (byte, &c) in BYTE_TO_CHAR.iter().enumerate() {
        inverse[c as usize] = Some(byte as u8);
    }
    inverse
});

/// The bytes a byte-level vocabulary string stands for. A string with a character outside the
/// table is not byte-level encoded (an added token written as plain text): its own UTF-8 bytes,
/// as Hugging Face's ByteLevel decoder does.
pub(super) fn byte_level_decode(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| CHAR_TO_BYTE.get(c as usize).copied().flatten())
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_else(|| text.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_with_gpt2_landmarks() {
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'A' as usize], 'A');
        let all: String = BYTE_TO_CHAR.iter().collect();
        assert_eq!(byte_level_decode(&all), (0..=255u8).collect::<Vec<_>>());
    }

    #[test]
    fn text_outside_the_table_decodes_as_itself() {
        assert_eq!(byte_level_decode("Ġhi"), b" hi");
        assert_eq!(byte_level_decode("<|im_start|>"), b"<|im_start|>");
        assert_eq!(byte_level_decode("日本"), "日本".as_bytes());
    }

    #[test]
    fn pre_values_map_to_llama_cpp_families() {
        assert_eq!(family_for(Some("llama-bpe")).unwrap().name, "LLAMA3");
        assert_eq!(family_for(Some("smollm")).unwrap().regexes, &[r"\p{N}", GPT2]);
        assert_eq!(family_for(Some("gpt-2")).unwrap().name, "GPT2");
        assert_eq!(family_for(None).unwrap().name, "DEFAULT");
        assert_eq!(family_for(Some("default")).unwrap().name, "DEFAULT");
        assert!(family_for(Some("qwen2")).is_none());
    }

    #[test]
    fn every_family_compiles() {
        for pre in ["llama-bpe", "dbrx", "smollm", "gpt-2", "default"] {
            pre_tokenizer(family_for(Some(pre)).unwrap()).unwrap();
        }
    }
}
