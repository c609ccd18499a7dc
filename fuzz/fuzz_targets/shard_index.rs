//! `model.safetensors.index.json` beside two well-formed shards: names that are not file
//! names, missing shards, tensors listed where they are not.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_testkit::fuzz::shard_index(data));
