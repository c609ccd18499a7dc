//! Every ggml block format from arbitrary bytes: the first byte picks the type, the next two
//! an element count (often not what the bytes hold, to exercise the length checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_testkit::fuzz::dequant(data));
