//! A GGUF file: header, metadata, tensor directory; then what the program reads from it: the
//! config, the tokenizer, every tensor dequantized.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_testkit::fuzz::gguf(data));
