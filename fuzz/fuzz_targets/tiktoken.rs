//! Meta's tiktoken `tokenizer.model` (base64 token, rank per line); one that loads encodes and
//! decodes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_testkit::fuzz::tiktoken(data));
