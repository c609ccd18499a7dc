//! A Hugging Face `tokenizer.json`; one that loads encodes (special tokens parsed) and decodes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_testkit::fuzz::tokenizer_json(data));
