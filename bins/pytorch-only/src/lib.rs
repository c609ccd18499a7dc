//! pytorch-only's library half: libtorch's fused operations behind llama-core's fast-path
//! trait, shared by the binary and its tests. `main.rs` stays a thin front end.

pub mod kernels;

pub use kernels::{Tch, TchKernels};
