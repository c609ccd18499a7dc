//! The default model's own chat template, rendered and tokenized, against llama-cpp-python's
//! chat formatting (jinja2 as transformers sets it up) and llama.cpp's tokenizer.
//!
//! Fixture: tests/fixtures/chat_template_smollm2.json, made by
//! scripts/make_chat_template_reference.py.

use std::path::Path;

use llama_core::chat_template::{ChatTemplate, Message, TemplateSource};
use llama_core::checkpoint::Checkpoint;
use serde_json::Value as Json;

#[test]
fn smollm2_template_matches_llama_cpp_python_token_for_token() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(model.exists(), "{} is missing: run `cargo xtask setup` to fetch the models", model.display());
    let checkpoint = Checkpoint::open(&model).unwrap();
    let tokenizer = checkpoint.tokenizer(None).unwrap();
    let embedded = checkpoint.chat_template().unwrap();
    let template = ChatTemplate::for_model(embedded.as_deref(), &tokenizer, None).unwrap();
    assert_eq!(template.origin, TemplateSource::Model);

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_template_smollm2.json");
    let json: Json = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add_generation_prompt = case["add_generation_prompt"].as_bool().unwrap();
        let rendered = template.render(&messages, add_generation_prompt).unwrap();
        assert_eq!(rendered, case["rendered"].as_str().unwrap(), "rendering {messages:?}");
        let ids = template.encode(&tokenizer, &messages, add_generation_prompt).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(ids, want, "token ids of {messages:?}");
    }
}
