//! Unit tests on a tiny synthetic byte-level vocabulary; the real vocabularies are checked
//! against llama.cpp and Hugging Face in tests/tokenizer.rs.

use super::gguf_vocab::split_merge;
use super::json::Template;
use super::pretokenize::BYTE_TO_CHAR;
use super::*;

const H: u32 = 256; // "Ġh"
const HI: u32 = 257; // "Ġhi"
const CONTROL: u32 = 258; // "<|s|>"
const USER: u32 = 259; // "<|u|>"
const IM_END: u32 = 260; // "<|im_end|>", typed normal: must become control and end generation
const BOS: u32 = 261; // "<s>"

/// Ids 0..=255 are the single bytes, so a byte's id is its value.
fn parts() -> TokenizerParts {
    let mut tokens: Vec<String> = BYTE_TO_CHAR.iter().map(|c| c.to_string()).collect();
    let mut token_types = vec![1; 256];
    for (text, kind) in [("Ġh", 1), ("Ġhi", 1), ("<|s|>", 3), ("<|u|>", 4), ("<|im_end|>", 1), ("<s>", 3)] {
        tokens.push(text.into());
        token_types.push(kind);
    }
    TokenizerParts {
        origin: "synthetic".into(),
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        tokens,
        token_types,
        merges: vec!["Ġ h".into(), "Ġh i".into()],
        bos_id: Some(BOS),
        eos_id: Some(IM_END),
        ..TokenizerParts::default()
    }
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_parts(parts()).unwrap()
}

fn bytes(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

#[test]
fn merges_apply_in_rank_order() {
    let tok = tokenizer();
    assert_eq!(tok.tokenize(" hi", false, true).unwrap(), [HI]);
    assert_eq!(tok.tokenize(" h", false, true).unwrap(), [H]);
    assert_eq!(tok.tokenize("hi", false, true).unwrap(), bytes("hi"));
    assert!(tok.tokenize("", false, true).unwrap().is_empty());
}

#[test]
fn control_tokens_are_matched_only_when_parsing_special() {
    let tok = tokenizer();
    assert_eq!(tok.tokenize("a<|s|>b", false, true).unwrap(), [97, CONTROL, 98]);
    assert_eq!(tok.tokenize("a<|s|>b", false, false).unwrap(), bytes("a<|s|>b"));
    // A token typed normal but named like an end of turn is promoted to control, as llama.cpp does.
    assert_eq!(tok.tokenize("<|im_end|>", false, true).unwrap(), [IM_END]);
    assert_eq!(tok.tokenize("<|im_end|>", false, false).unwrap(), bytes("<|im_end|>"));
}

#[test]
fn user_defined_tokens_are_always_matched() {
    let tok = tokenizer();
    assert_eq!(tok.tokenize("x<|u|>", false, false).unwrap(), [120, USER]);
    assert_eq!(tok.tokenize("<|u|><|s|>", false, true).unwrap(), [USER, CONTROL]);
}

#[test]
fn bos_is_added_per_flag_and_family_default() {
    // gpt-2 family: no BOS unless asked.
    let tok = tokenizer();
    assert!(!tok.add_bos());
    assert_eq!(tok.encode("hi", true).unwrap(), bytes("hi"));
    let tok = Tokenizer::from_parts(TokenizerParts { add_bos: Some(true), ..parts() }).unwrap();
    assert_eq!(tok.encode("hi", true).unwrap(), [BOS, 104, 105]);
    assert_eq!(tok.tokenize("hi", false, true).unwrap(), bytes("hi"));
    // Llama 3's family adds BOS when the GGUF does not say.
    let tok = Tokenizer::from_parts(TokenizerParts { pre: Some("llama-bpe".into()), ..parts() }).unwrap();
    assert!(tok.add_bos());
    let tok = Tokenizer::from_parts(TokenizerParts { add_eos: Some(true), ..parts() }).unwrap();
    assert_eq!(tok.encode(" hi", true).unwrap(), [HI, IM_END]);
}

#[test]
fn end_of_generation_lists_eos_first() {
    let tok = Tokenizer::from_parts(TokenizerParts { eos_id: Some(BOS), ..parts() }).unwrap();
    assert_eq!(tok.end_of_generation_ids(), [BOS, IM_END]);
    assert!(tok.is_end_of_generation(IM_END));
    assert!(!tok.is_end_of_generation(HI));
}

#[test]
fn decode_renders_special_tokens_and_bytes() {
    let tok = tokenizer();
    assert_eq!(tok.decode(&[BOS, HI, CONTROL, 0xC3, 0xA9]), "<s> hi<|s|>é");
    assert_eq!(tok.decode(&[0xC3]), "\u{FFFD}");
    assert_eq!(tok.decode(&[99_999]), "");
    assert_eq!(tok.token_text(HI).as_deref(), Some(" hi"));
    assert_eq!(tok.token_text(99_999), None);
}

#[test]
fn stream_decoder_holds_back_partial_characters() {
    let tok = tokenizer();
    let mut stream = StreamDecoder::new(&tok);
    assert_eq!(stream.push(0xC3), "");
    assert_eq!(stream.push(0xA9), "é");
    assert_eq!(stream.push(0xF0), "");
    assert_eq!(stream.push(0x9F), "");
    assert_eq!(stream.push(0x98), "");
    assert_eq!(stream.push(0x80), "😀");
    assert_eq!(stream.finish(), "");
}

#[test]
fn stream_decoder_replaces_what_cannot_complete() {
    let tok = tokenizer();
    let mut stream = StreamDecoder::new(&tok);
    assert_eq!(stream.push(0xFF), "\u{FFFD}");
    assert_eq!(stream.push(0xC3), "");
    assert_eq!(stream.push(u32::from(b'b')), "\u{FFFD}b");
    assert_eq!(stream.push(0xE6), "");
    assert_eq!(stream.finish(), "\u{FFFD}");
    // Whatever the split, the stream says what decode says.
    let ids = [0xFF, 0xC3, 98, HI, 0xE6, 0x97, CONTROL, 0xE6];
    let mut streamed: String = ids.iter().map(|&id| stream.push(id)).collect();
    streamed.push_str(&stream.finish());
    assert_eq!(streamed, tok.decode(&ids));
}

#[test]
fn strip_flags_swallow_neighbouring_whitespace() {
    let mut tok = tokenizer();
    let special = tok.specials.iter_mut().find(|s| s.id == CONTROL).unwrap();
    special.lstrip = true;
    special.rstrip = true;
    let text = "a  <|s|>\n b";
    assert_eq!(
        tok.split_specials(text, true),
        [Fragment::Text(0..1), Fragment::Token(CONTROL), Fragment::Text(10..11)]
    );
}

#[test]
fn unsupported_inputs_are_named() {
    let err = Tokenizer::from_parts(TokenizerParts { model: "llama".into(), ..parts() }).unwrap_err().to_string();
    assert!(err.contains("\"llama\"") && err.contains("SentencePiece"), "{err}");
    let err = Tokenizer::from_parts(TokenizerParts { pre: Some("qwen2".into()), ..parts() }).unwrap_err().to_string();
    assert!(err.contains("\"qwen2\""), "{err}");
    let err = Tokenizer::from_parts(TokenizerParts { merges: vec!["Ġh".into()], ..parts() }).unwrap_err().to_string();
    assert!(err.contains("merge #0 \"Ġh\""), "{err}");
    let err = Tokenizer::from_parts(TokenizerParts { merges: vec!["x yz".into()], ..parts() }).unwrap_err().to_string();
    assert!(err.contains("yz"), "{err}");
    let err =
        Tokenizer::from_parts(TokenizerParts { bos_id: None, add_bos: Some(true), ..parts() }).unwrap_err().to_string();
    assert!(err.contains("BOS"), "{err}");
    let err = Tokenizer::from_parts(TokenizerParts { eos_id: Some(5000), ..parts() }).unwrap_err().to_string();
    assert!(err.contains("EOS token id 5000"), "{err}");
    let err = Tokenizer::from_parts(TokenizerParts { token_types: vec![1], ..parts() }).unwrap_err().to_string();
    assert!(err.contains("1 token types for 262 tokens"), "{err}");
}

#[test]
fn merges_split_at_the_first_space_after_the_first_char() {
    assert_eq!(split_merge("Ġ h"), Some(("Ġ".into(), "h".into())));
    assert_eq!(split_merge("  x"), Some((" ".into(), "x".into())));
    assert_eq!(split_merge("ab"), None);
}

#[test]
fn template_says_whether_to_add_bos() {
    let llama3 = serde_json::json!({"type": "Sequence", "processors": [
        {"type": "ByteLevel"},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000], "tokens": ["<|begin_of_text|>"]}}}]});
    let template = Template::from_post_processor(&llama3, "t").unwrap();
    assert_eq!(template, Template { bos: Some(128000), eos: None, add_bos: Some(true), add_eos: Some(false) });
    let byte_level = serde_json::json!({"type": "ByteLevel"});
    assert_eq!(Template::from_post_processor(&byte_level, "t").unwrap(), Template::default());
    assert_eq!(Template::from_post_processor(&serde_json::Value::Null, "t").unwrap(), Template::default());
}
