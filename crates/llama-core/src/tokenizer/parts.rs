//! A vocabulary as plain data, whichever file it came from: what the GGUF, `tokenizer.json` and
//! tiktoken readers make and [`super::Tokenizer::from_parts`] builds a tokenizer from.

/// Everything `tokenizer.ggml.*` says, as plain data: what [`super::Tokenizer::from_gguf`] reads, and
/// what tests build from a tokenizer.json to run the GGUF path on another vocabulary.
#[derive(Debug, Clone, Default)]
pub struct TokenizerParts {
    /// Where these came from, for error messages.
    pub origin: String,
    /// `tokenizer.ggml.model`; only "gpt2" is supported.
    pub model: String,
    pub pre: Option<String>,
    /// Vocabulary strings, id = index, byte-level encoded (a space is "Ġ").
    pub tokens: Vec<String>,
    /// GGUF token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte);
    /// empty means all normal.
    pub token_types: Vec<i64>,
    /// "left right", highest priority first.
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub eot_id: Option<u32>,
    pub eom_id: Option<u32>,
    /// `None`: llama.cpp's default for the `pre` family (true for Llama 3, else false).
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
}
