//! The tokenizer against the reference tokenizers, on the real vocabularies:
//! - SmolLM2's GGUF (pre "smollm") against llama.cpp's ids;
//! - Llama 3.2's tokenizer.json, and a GGUF-style tokenizer built from the same vocabulary with
//!   pre "llama-bpe" (the path synthetic Llama 3 GGUFs take), against Hugging Face's ids.
//!
//! - Meta's tiktoken tokenizer.model for Llama 3.2, with merges and special tokens derived,
//!   against the tokenizer.json of the same model.
//!
//! Fixtures: tests/fixtures/tokenizer_*.json, made by scripts/make_tokenizer_reference.py.

use std::path::{Path, PathBuf};
use std::time::Instant;

use llama_core::gguf::{GgufFile, Value};
use llama_core::tokenizer::parts::TokenizerParts;
use llama_core::tokenizer::stream::StreamDecoder;
use llama_core::tokenizer::{Tokenizer, TokenizerError};
use llama_testkit::gguf_writer::GgufWriter;
use serde_json::Value as Json;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file under models/, which `cargo xtask setup` fetches; missing is a failure, not a skip.
fn model_file(relative: &str) -> PathBuf {
    let path = repo_root().join("models").join(relative);
    assert!(path.exists(), "{} is missing: run `cargo xtask setup` to fetch the models", path.display());
    path
}

fn smollm2() -> Tokenizer {
    let gguf = GgufFile::open(model_file("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    Tokenizer::from_gguf(&gguf).unwrap()
}

fn llama32_json() -> Tokenizer {
    Tokenizer::from_file(&model_file("llama-3.2/tokenizer.json"), None).unwrap()
}

fn llama32_tiktoken_parts() -> TokenizerParts {
    let started = Instant::now();
    let parts = TokenizerParts::from_tiktoken(&model_file("llama-3.2/tokenizer.model")).unwrap();
    eprintln!("llama-3.2/tokenizer.model read, merges derived: {:?}", started.elapsed());
    parts
}

/// The tokenizer.json's vocabulary as GGUF metadata carries it, with pre "llama-bpe".
fn llama32_parts() -> TokenizerParts {
    let parts =
        TokenizerParts::from_tokenizer_json(&model_file("llama-3.2/tokenizer.json"), "llama-bpe", 128_257).unwrap();
    assert_eq!((parts.bos_id, parts.eos_id), (Some(128000), Some(128009)));
    parts
}

struct Case {
    text: String,
    ids: Vec<u32>,
    decoded: Option<String>,
}

fn fixture(name: &str) -> (bool, Vec<Case>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Json = serde_json::from_str(&text).unwrap();
    let cases = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: c["ids"].as_array().unwrap().iter().map(|id| id.as_u64().unwrap() as u32).collect(),
            decoded: c["decoded"].as_str().map(str::to_string),
        })
        .collect();
    (json["add_bos"].as_bool().unwrap(), cases)
}

/// Every case (ids, and decoded text where the fixture has it), reporting all mismatches at once.
fn assert_matches_fixture(tok: &Tokenizer, name: &str) {
    let (add_bos, cases) = fixture(name);
    let mut failures = Vec::new();
    for case in &cases {
        let ids = tok.tokenize(&case.text, add_bos, true).unwrap();
        if ids != case.ids {
            failures.push(format!("{:?}: expected {:?}, got {ids:?}", case.text, case.ids));
        }
        if let Some(decoded) = &case.decoded {
            let ours = tok.decode(&case.ids);
            if &ours != decoded {
                failures.push(format!("decode of {:?}: expected {decoded:?}, got {ours:?}", case.ids));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_gguf_matches_llama_cpp() {
    assert_matches_fixture(&smollm2(), "tokenizer_smollm2_llamacpp.json");
}

#[test]
fn llama32_tokenizer_json_matches_hugging_face() {
    assert_matches_fixture(&llama32_json(), "tokenizer_llama32_hf.json");
}

#[test]
fn llama_bpe_from_gguf_metadata_matches_hugging_face() {
    assert_matches_fixture(&Tokenizer::from_parts(llama32_parts()).unwrap(), "tokenizer_llama32_hf.json");
}

/// The same vocabulary through a real GGUF file: the keys, types and defaults from_gguf reads.
#[test]
fn llama_bpe_gguf_file_matches_hugging_face() {
    let parts = llama32_parts();
    let mut writer = GgufWriter::new();
    writer.metadata("general.architecture", Value::String("llama".into()));
    for (key, value) in parts.gguf_metadata() {
        writer.metadata(key, value);
    }
    let path = std::env::temp_dir().join(format!("llama-core-tokenizer-test-{}.gguf", std::process::id()));
    let _ = std::fs::remove_file(&path);
    writer.write_new_file(&path).unwrap();
    let gguf = GgufFile::open(&path).unwrap();
    let from_gguf = Tokenizer::from_gguf(&gguf);
    // The json with this GGUF: BOS from the json's template, EOS (absent from the json) from the GGUF.
    let json_with_gguf = Tokenizer::from_file(&model_file("llama-3.2/tokenizer.json"), Some(&gguf));
    std::fs::remove_file(&path).unwrap();

    let tok = from_gguf.unwrap();
    // add_bos_token is absent: llama.cpp's default for llama-bpe is to add BOS.
    assert!(tok.add_bos());
    assert_eq!(tok.encode("hi", true).unwrap(), [128000, 6151]);
    assert_matches_fixture(&tok, "tokenizer_llama32_hf.json");
    let tok = json_with_gguf.unwrap();
    assert_eq!((tok.bos_id(), tok.add_bos()), (Some(128000), true));
    assert_eq!(tok.end_of_generation_ids()[0], 128009);
}

/// Meta's tokenizer.model is the tokenizer.json: the same vocabulary, merges and special tokens
/// (the json has one more, Llama 3.2 Vision's `<|image|>` at 128256, which the tiktoken file
/// does not define), hence the same ids and text.
#[test]
fn llama32_tiktoken_model_matches_tokenizer_json() {
    let parts = llama32_tiktoken_parts();
    let json_parts = llama32_parts();
    assert_eq!(parts.tokens.len(), 128_256);
    assert_eq!(parts.tokens[..], json_parts.tokens[..128_256]);
    assert_eq!(json_parts.tokens[128_256..], ["<|image|>"]);
    assert_eq!(parts.token_types[..], json_parts.token_types[..128_256]);
    assert!(parts.merges == json_parts.merges, "the derived merges differ from the json's");
    let started = Instant::now();
    let tiktoken = Tokenizer::from_parts(parts).unwrap();
    eprintln!("llama-3.2/tokenizer.model tokenizer built: {:?}", started.elapsed());

    assert_matches_fixture(&tiktoken, "tokenizer_llama32_hf.json");
    let json = llama32_json();
    let chat = "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>";
    assert_eq!(tiktoken.tokenize(chat, false, true).unwrap(), [128006, 882, 128007, 271, 6151, 128009]);
    let (_, cases) = fixture("tokenizer_llama32_hf.json");
    let texts = ROUND_TRIP_TEXTS.iter().copied().chain([chat, "<|begin_of_text|>system: x<|eom_id|><|python_tag|>"]);
    for text in texts.chain(cases.iter().map(|c| c.text.as_str())) {
        for (add_special, parse_special) in [(true, true), (false, true), (true, false)] {
            let ids = tiktoken.tokenize(text, add_special, parse_special).unwrap();
            assert_eq!(ids, json.tokenize(text, add_special, parse_special).unwrap(), "{text:?}");
            assert_eq!(tiktoken.decode(&ids), json.decode(&ids), "{ids:?}");
        }
    }
    for id in 0..128_256 {
        assert_eq!(tiktoken.piece(id), json.piece(id), "token {id}");
    }

    // BOS and the ends of generation: as the json's vocabulary through the GGUF path (which
    // also takes <|eot_id|> for EOS), and as the same set as the json itself.
    let from_json_parts = Tokenizer::from_parts(llama32_parts()).unwrap();
    assert_eq!((tiktoken.bos_id(), tiktoken.add_bos()), (Some(128000), true));
    assert_eq!((tiktoken.bos_id(), tiktoken.add_bos()), (json.bos_id(), json.add_bos()));
    assert_eq!(tiktoken.eos_id(), from_json_parts.eos_id());
    assert_eq!(tiktoken.end_of_generation_ids(), from_json_parts.end_of_generation_ids());
    assert_eq!(tiktoken.end_of_generation_ids(), [128009, 128001, 128008]);
    let mut json_ends = json.end_of_generation_ids().to_vec();
    json_ends.sort_unstable();
    assert_eq!(json_ends, [128001, 128008, 128009]);
}

#[test]
fn special_tokens_and_end_of_generation() {
    let tok = smollm2();
    assert_eq!((tok.bos_id(), tok.add_bos(), tok.vocab_size()), (Some(1), false, 49152));
    // eos <|im_end|> first, then <|endoftext|> which llama.cpp also treats as an end.
    assert_eq!(tok.end_of_generation_ids(), [2, 0]);
    assert_eq!(tok.token_text(1).as_deref(), Some("<|im_start|>"));
    // Without parse_special a control token's text is ordinary text.
    assert_eq!(
        tok.encode("<|im_start|>", false).unwrap(),
        tok.encode("<|im_start", true).unwrap().into_iter().chain(tok.encode("|>", true).unwrap()).collect::<Vec<_>>()
    );

    let tok = llama32_json();
    assert_eq!((tok.bos_id(), tok.add_bos()), (Some(128000), true));
    assert_eq!(tok.encode("Hello world", true).unwrap(), [128000, 9906, 1917]);
    for text in ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"] {
        let id = tok.tokenize(text, false, true).unwrap();
        assert!(id.len() == 1 && tok.is_end_of_generation(id[0]), "{text} -> {id:?} should end generation");
    }
    assert!(!tok.is_end_of_generation(128006), "<|start_header_id|> does not end generation");
}

const ROUND_TRIP_TEXTS: &[&str] = &[
    "Hello, world! How's it going?",
    "  two leading spaces, trailing tab\t",
    "line\r\nbreaks\n\n\nand \u{a0}non-breaking",
    "数学 は 楽しい。한국어 텍스트. Ελληνικά. עברית. العربية",
    "emoji 👋🏽 👨‍👩‍👧 🇫🇷 and 🧑🏿‍🚀",
    "code: fn f(x: &str) -> Option<u8> { x.bytes().next() } // 123456789",
    "<|im_start|>user\nhi<|im_end|> <|begin_of_text|><|eot_id|>",
    "\u{0}\u{1f}\u{7f} control chars and U+FFFD \u{fffd}",
];

#[test]
fn decode_inverts_encode() {
    let (_, cases) = fixture("tokenizer_llama32_hf.json");
    let texts: Vec<&str> = ROUND_TRIP_TEXTS.iter().copied().chain(cases.iter().map(|c| c.text.as_str())).collect();
    for tok in [smollm2(), llama32_json(), Tokenizer::from_parts(llama32_parts()).unwrap()] {
        for &text in &texts {
            for parse_special in [true, false] {
                let ids = tok.tokenize(text, false, parse_special).unwrap();
                assert_eq!(tok.decode(&ids), text, "ids {ids:?}");
            }
        }
        // With BOS added, decoding shows it first.
        let ids = tok.encode("x", true).unwrap();
        let bos = tok.bos_id().filter(|_| tok.add_bos()).and_then(|id| tok.token_text(id)).unwrap_or_default();
        assert_eq!(tok.decode(&ids), format!("{bos}x"));
    }
}

#[test]
fn stream_decoder_emits_whole_characters_only() {
    let texts = ["👋🏽 hi", "👨‍👩‍👧", "🇫🇷🇯🇵", "你好，世界", "数学は楽しい", "naïve 🧑🏿‍🚀 ok", "ab\u{10ffff}"];
    for tok in [smollm2(), llama32_json()] {
        let mut held_back = false;
        for text in texts {
            let ids = tok.tokenize(text, false, true).unwrap();
            let mut stream = StreamDecoder::new(&tok);
            let mut out = String::new();
            for &id in &ids {
                let chunk = stream.push(id);
                assert!(!chunk.contains('\u{FFFD}'), "{text:?}: partial character emitted as {chunk:?}");
                held_back |= chunk.is_empty();
                out.push_str(&chunk);
            }
            out.push_str(&stream.finish());
            assert_eq!(out, text);
        }
        // Byte-level tokens do split these characters, so the holding back was exercised.
        assert!(held_back);
    }
}

#[test]
fn json_larger_than_the_model_is_refused() {
    let gguf = GgufFile::open(model_file("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let err = Tokenizer::from_file(&model_file("llama-3.2/tokenizer.json"), Some(&gguf)).unwrap_err();
    assert!(matches!(err, TokenizerError::VocabMismatch { tokenizer: 128257, model: 49152, .. }), "{err}");
    assert!(err.to_string().contains("does not belong to this model"), "{err}");
}

#[test]
fn unreadable_tokenizer_files_are_named() {
    let missing = repo_root().join("models/no-such-tokenizer.json");
    let err = Tokenizer::from_file(&missing, None).unwrap_err().to_string();
    assert!(err.contains("no-such-tokenizer.json"), "{err}");
    let not_json = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let err = Tokenizer::from_file(&not_json, None).unwrap_err().to_string();
    assert!(err.contains("Cargo.toml"), "{err}");
}
