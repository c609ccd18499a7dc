//! tinygrad-only's fast path: llama-core's [`Kernels`] implemented with our own CubeCL kernels,
//! recorded into burn-wgpu's fusion stream (see [`stream`]).
//!
//! | seam operation | kernel | what it fuses |
//! |---|---|---|
//! | `linear` | [`product`] routes: [`matvec`] (one token: dense rows and the 32-weight block formats), [`prefill`] (long prompts), [`linear`] (short prompts, K-quants) | dequantization into the matrix-vector/matrix-matrix product |
//! | `product` | [`matvec`] (one token), else [`norm`] then the above | the RMSNorm of the input, the residual add of the output |
//! | `swiglu_product` (separate gate and up) | [`matvec`], [`linear`] (the same split) | the norm, gate and up products, SiLU and the multiply |
//! | `qkv_into_cache` (host position) | [`matvec`] (one token, stacked Q/K/V), else the product then [`rope`] | the norm, the Q/K/V product, RoPE of Q and K, the KV-cache write (in place) |
//! | `embed` | [`embed`] | dequantization into the row lookup |
//! | `attention` (host position) | [`attention`] | scores, causal limit, softmax, weighted values (split-KV) |
//!
//! The static-shape step's device positions take the composed reference: tinygrad-only has no
//! `--compile`. docs/kernels.md has each kernel's bytes per token and measured speed.
//!
//! Every kernel is launched without cubecl's bounds checks (`launch_unchecked`): its indices are
//! in bounds by construction, and each launch site's `SAFETY` comment says why (docs/kernels.md,
//! "Bounds checks").

mod attention;
mod block_matvec_kernel;
mod embed;
pub mod empty;
mod layout;
mod linear;
mod matvec;
mod matvec_kernel;
mod norm;
pub mod pack;
mod places;
mod prefill;
mod product;
mod provider;
mod rope;
mod stream;
mod upload;
mod weights;

pub use pack::Quantize;
pub use stream::{Wgpu, launches};
pub use weights::{DeviceWeight, Packing, Values};

type Device = burn_wgpu::WgpuDevice;

#[derive(Debug, Clone, Copy)]
pub struct WgpuKernels {
    layout: layout::Layout,
    /// `--quantize`: how float weights are stored.
    quantize: Option<Quantize>,
    /// Greedy decoding queues the next step before reading the id (`Capabilities::pipelines_greedy`).
    pipeline_greedy: bool,
}

impl WgpuKernels {
    /// Thread layouts for a GPU.
    pub fn gpu() -> Self {
        Self { layout: layout::Layout::for_device(false), quantize: None, pipeline_greedy: true }
    }

    /// Thread layouts for a CPU Vulkan driver (lavapipe): 8 lanes per row, its SIMD width.
    pub fn cpu_driver() -> Self {
        Self { layout: layout::Layout::for_device(true), quantize: None, pipeline_greedy: true }
    }

    /// Stores f32/f16/bf16 weights as `quantize` says (quantized files keep their format).
    pub fn with_quantize(self, quantize: Option<Quantize>) -> Self {
        Self { quantize, ..self }
    }

    /// Greedy decoding reads each id before queuing the next step. For a device that runs no
    /// kernels (`--device noop`): there is no device time to hide, and its poll returns at once,
    /// so cubecl's poll thread would spin for as long as a read is pending.
    pub fn without_pipelining(self) -> Self {
        Self { pipeline_greedy: false, ..self }
    }
}
