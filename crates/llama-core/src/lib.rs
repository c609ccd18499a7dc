//! llama-core: a Llama 3.x model written once against Burn's generic `Backend`, its file
//! formats, and the engine that runs requests through it. No command line, no terminal: the app
//! crate (llama-app) holds those.
//!
//! Reading order: [`gguf`] and [`dequant`] (the file; [`hf`] for Hugging Face directories,
//! [`checkpoint`] for what a `--model` path holds, [`tensor_file`] for what the loader reads),
//! [`config`] (the shape), [`tokenizer`] and [`chat_template`] (text ↔ ids), [`kernels`] (the
//! fast-path seam and its composed reference), [`rope`], [`kv_cache`], [`batch`] (a step's
//! rows), [`model`] (the decoder: one layer's forward is its formula, [`model::Llama::step`] the
//! one way tokens run), [`load`] and [`random`] (weights onto the device), [`sampling`],
//! [`sequence`] and [`scheduler`] (the one engine every mode runs requests through, with
//! [`stop`] strings and [`readback`]), [`chat`] (multi-turn with a kept cache).
//! docs/architecture.md explains the split.

pub mod batch;
pub mod chat;
pub mod chat_template;
pub mod checkpoint;
pub mod config;
pub mod dequant;
pub mod gguf;
pub mod hf;
pub mod kernels;
pub mod kv_cache;
pub mod load;
pub mod model;
mod pipeline;
pub mod random;
pub mod readback;
pub mod rope;
pub mod sampling;
pub mod scheduler;
pub mod sequence;
pub mod stop;
pub mod tensor_file;
pub mod tokenizer;

// Re-exported so binaries and benches name one Burn version.
pub use burn;
