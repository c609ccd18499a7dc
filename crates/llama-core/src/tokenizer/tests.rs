//! Unit tests on a tiny synthetic byte-level vocabulary; the real vocabularies are checked
//! against llama.cpp and Hugging Face in tests/tokenizer.rs.

use super::gguf_vocab::split_merge;
use super::json::Template;
use super::parts::TokenizerParts;
use super::pretokenize::BYTE_TO_CHAR;
use super::stream::StreamDecoder;
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

/// A tiktoken file: the 256 single bytes (rank = byte), then `extra` ranked from 256 on.
fn tiktoken_text(extra: &[&[u8]]) -> String {
    let tokens = (0..=255u8).map(|b| vec![b]).chain(extra.iter().map(|t| t.to_vec()));
    tokens.enumerate().map(|(rank, t)| format!("{} {rank}\n", base64(&t))).collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            let c = if i <= chunk.len() { ALPHABET[(bits >> (18 - 6 * i) & 63) as usize] as char } else { '=' };
            out.push(c);
        }
    }
    out
}

fn tiktoken_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("llama-core-tiktoken-{}-{name}.model", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Parts from a temporary file, removed before the result is looked at.
fn tiktoken_parts(name: &str, text: &str) -> Result<TokenizerParts> {
    let path = tiktoken_file(name, text);
    let parts = TokenizerParts::from_tiktoken(&path);
    std::fs::remove_file(&path).unwrap();
    parts
}

#[test]
fn base64_decodes_tiktoken_tokens() {
    use super::tiktoken::base64_decode;
    for bytes in [&b""[..], b"f", b"fo", b"foo", b"foob", b" \xff\x00\xe4\xb8"] {
        assert_eq!(base64_decode(base64(bytes).as_bytes()).as_deref(), Some(bytes), "{bytes:?}");
    }
    for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "Zm=v", "Zm9v\u{e9}"] {
        assert_eq!(base64_decode(bad.as_bytes()), None, "{bad:?}");
    }
}

#[test]
fn tiktoken_merges_follow_hugging_face_converter() {
    // "abc" splits as a+bc and ab+c: both are merges, ordered by the parts' ranks (a=97 < ab=256)
    // although "bc" ranks after "abc". " ab" splits only as " "+"ab" (" a" is no token).
    let parts = tiktoken_parts("merges", &tiktoken_text(&[b"ab", b"abc", b"bc", b" ab"])).unwrap();
    assert_eq!(parts.merges, ["a b", "a bc", "ab c", "b c", "Ġ ab"]);
    assert_eq!(&parts.tokens[256..261], ["ab", "abc", "bc", "Ġab", "<|begin_of_text|>"]);
    assert_eq!((parts.tokens[0].as_str(), parts.tokens[10].as_str()), ("Ā", "Ċ"));
    assert_eq!(parts.tokens.len(), 260 + 256);
    assert_eq!(parts.tokens.last().unwrap(), "<|reserved_special_token_246|>");
    assert_eq!(
        &parts.tokens[266..271],
        ["<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
    );
    assert_eq!((parts.bos_id, parts.eos_id, parts.eot_id, parts.eom_id), (Some(260), Some(269), Some(269), Some(268)));
    assert!(parts.token_types[..260].iter().all(|&t| t == 1) && parts.token_types[260..].iter().all(|&t| t == 3));

    let tok = Tokenizer::from_parts(parts).unwrap();
    assert_eq!(tok.tokenize(" abc", false, true).unwrap(), [32, 257]);
    assert_eq!(tok.tokenize(" ab<|eot_id|>", true, true).unwrap(), [260, 259, 269]);
    assert_eq!(tok.decode(&[260, 32, 257, 269]), "<|begin_of_text|> abc<|eot_id|>");
    assert_eq!(tok.end_of_generation_ids(), [269, 261, 268]);
}

#[test]
fn tiktoken_accepts_blank_lines_and_crlf() {
    let text = tiktoken_text(&[b"ab"]).replace('\n', "\r\n") + "\n\n";
    assert_eq!(tiktoken_parts("crlf", &text).unwrap().merges, ["a b"]);
}

#[test]
fn bad_tiktoken_files_name_the_file_and_line() {
    let good = tiktoken_text(&[]);
    let cases: &[(&str, String, &str)] = &[
        ("base64", format!("{good}!!!! 256\n"), "line 257: \"!!!!\" is not base64"),
        ("no-rank", format!("{good}YWI=\n"), "line 257: missing rank"),
        ("word-rank", format!("{good}YWI= x1\n"), "line 257: rank \"x1\" is not a number"),
        ("negative-rank", format!("{good}YWI= -256\n"), "line 257: rank \"-256\" is not a number"),
        ("huge-rank", format!("{good}YWI= 99999999999\n"), "line 257: rank \"99999999999\" is not a number"),
        ("gap", format!("{good}YWI= 300\n"), "line 257: rank 300 where 256 was expected"),
        ("repeat", format!("{good}YWI= 255\n"), "line 257: rank 255 where 256 was expected"),
        ("fields", format!("{good}YWI= 256 7\n"), "line 257: 3 fields"),
        ("duplicate", format!("{good}YQ== 256\n"), "line 257: duplicate token YQ==: its bytes already have rank 97"),
        ("long", format!("{good}{} 256\n", "A".repeat(4000)), "line 257: longer than 1024 bytes"),
        ("empty", String::new(), "line 1: no tokens"),
        ("blank", "\n\n".into(), "line 3: no tokens"),
        (
            "no-0xff",
            good.lines().take(255).map(|l| format!("{l}\n")).collect(),
            "line 256: end of file, and no token is the single byte 0xff",
        ),
    ];
    for (name, text, expected) in cases {
        let err = tiktoken_parts(name, text).unwrap_err().to_string();
        assert!(err.contains(&format!("llama-core-tiktoken-{}-{name}.model: ", std::process::id())), "{name}: {err}");
        assert!(err.contains(expected), "{name}: expected {expected:?} in {err}");
    }
    let missing = std::env::temp_dir().join("llama-core-no-such-tokenizer.model");
    let err = Tokenizer::from_tiktoken(&missing).unwrap_err().to_string();
    assert!(err.contains("llama-core-no-such-tokenizer.model"), "{err}");
}
