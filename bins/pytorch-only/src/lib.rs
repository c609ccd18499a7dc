//! pytorch-only's library half: libtorch's fused operations behind llama-core's fast-path
//! trait, shared by the binary and its tests. `main.rs` stays a thin front end.

#[cfg(feature = "cuda-graph")]
mod cuda_graph;
pub mod kernels;

pub use kernels::{Tch, TchKernels};
