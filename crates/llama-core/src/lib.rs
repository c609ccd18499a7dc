//! llama-core: a Llama 3.x model written once against Burn's generic `Backend`, its file
//! formats, and the generation loop around it. No command line, no terminal: the app crate
//! (llama-app) holds those.
//!
//! Reading order: [`gguf`] and [`dequant`] (the file; [`hf`] for Hugging Face directories,
//! [`checkpoint`] for what a `--model` path holds), [`config`] (the shape), [`tokenizer`] and
//! [`chat_template`] (text ↔ ids), [`kernels`] (the fast-path seam and its composed reference),
//! [`rope`], [`kv_cache`], [`model`] (the decoder: one layer's forward is its formula),
//! [`batch`] (several sequences in one pass), [`load`] (weights onto the device), [`sampling`]
//! and [`generation`] (the loop), [`chat`] (multi-turn with a kept cache), [`stop`] and
//! [`slots`] (a server's continuous batching), [`metrics`]. docs/architecture.md explains the
//! split.

pub mod batch;
pub mod chat;
pub mod chat_template;
pub mod checkpoint;
pub mod config;
pub mod dequant;
pub mod generation;
pub mod gguf;
pub mod hf;
pub mod kernels;
pub mod kv_cache;
pub mod load;
pub mod metrics;
pub mod model;
pub mod rope;
pub mod sampling;
pub mod slots;
pub mod stop;
pub mod tokenizer;

// Re-exported so binaries and benches name one Burn version.
pub use burn;
