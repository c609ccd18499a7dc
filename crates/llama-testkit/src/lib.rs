//! llama-testkit: what both binaries' tests (and xtask) share, never linked into a binary.
//!
//! [`conformance`] runs a built binary against llama.cpp's reference ids, bad inputs and every
//! mode; [`kernel_checks`] holds a fast-path provider to naive loops; [`synth`] writes
//! random-weight GGUF files of the published shapes with [`gguf_writer`]; [`fuzz`] holds the fuzz
//! targets' bodies.

pub mod conformance;
pub mod fuzz;
pub mod gguf_writer;
pub mod kernel_checks;
pub mod synth;
