//! A safetensors file (header lengths, JSON directory, offsets, dtypes) as a model directory's
//! `model.safetensors`, then every tensor the model asks for read from it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_testkit::fuzz::safetensors(data));
