//! `config.json` (shape, RoPE parameters and scaling, architecture) beside a tiny
//! `model.safetensors`; a config that passes has its tensors read at the shapes it implies.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_testkit::fuzz::hf_config(data));
