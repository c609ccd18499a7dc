//! llama-core: a Llama 3.x model written once against Burn's generic `Backend`, and everything
//! around it that does not depend on a framework.
//!
//! Reading order: [`gguf`] and [`dequant`] (the file), [`config`] (the shape), [`tokenizer`] and
//! [`chat_template`] (text ↔ ids), [`kernels`] (the fast-path seam), [`rope`], [`kv_cache`],
//! [`model`] (the decoder), [`sampling`] and [`generation`] (the loop), [`chat`] (multi-turn with a
//! kept cache), [`cli`], [`framework`], [`one_shot`], [`interactive`] and [`benchmark`] (what every
//! binary shares). docs/architecture.md explains the split.

pub mod benchmark;
pub mod chat;
pub mod chat_template;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod dequant;
pub mod framework;
pub mod generation;
pub mod gguf;
pub mod interactive;
pub mod kernel_checks;
pub mod kernels;
pub mod kv_cache;
pub mod metrics;
pub mod model;
pub mod one_shot;
pub mod progress;
pub mod rope;
pub mod sampling;
pub mod synth;
pub mod tokenizer;

// Re-exported so binaries and benches name one Burn version.
pub use burn;
