//! tinygrad-only's library half: the CubeCL kernels behind llama-core's fast-path trait, so the
//! binary and its tests (and benches) share them. `main.rs` stays a thin front end.

pub mod host_threads;
pub mod host_work;
pub mod kernels;
pub mod noop;

pub use kernels::{Wgpu, WgpuKernels};
