//! A chat template from a model file rendered over a short conversation: hostile templates
//! must fail with an error, within bounded work and output.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_testkit::fuzz::chat_template(data));
