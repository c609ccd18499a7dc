//! tinygrad-only's fast path: llama-core's [`Kernels`] implemented with our own CubeCL kernels,
//! recorded into burn-wgpu's fusion stream (see [`fused`]).
//!
//! | operation | kernel | what it fuses |
//! |---|---|---|
//! | `linear` | [`matvec`] (one token: dense rows and the 32-weight block formats), [`linear`] (prompts, K-quants) | dequantization into the matrix-vector/matrix-matrix product |
//! | `norm_linear`, `linear_add` | [`matvec`] (one token), else [`norm`] then [`linear`] | the RMSNorm of the input, the residual add of the output |
//! | `norm_linear_swiglu` | [`matvec`], [`linear`] (the same split) | the norm, gate and up products, SiLU and the multiply |
//! | `embed` | [`embed`] | dequantization into the row lookup |
//! | `rms_norm` | [`norm`] | mean of squares, scale (where no product fuses it) |
//! | `rope` | [`rope`] | table lookup and rotation |
//! | `rope_qkv_into_cache` | [`rope`] | RoPE of Q and K, the KV-cache write (in place) |
//! | `norm_linear_rope_into_cache` | [`matvec`] (one token), else as its parts | the norm, the Q/K/V product, RoPE, the KV-cache write |
//! | `attention` | [`attention`] | scores, causal limit, softmax, weighted values (split-KV) |
//!
//! `swiglu` alone stays composed: burn's fuser already makes it one kernel. docs/kernels.md has
//! each kernel's bytes per token and measured speed.
//!
//! Every kernel is launched without cubecl's bounds checks (`launch_unchecked`): its indices are
//! in bounds by construction, and each launch site's `SAFETY` comment says why (docs/kernels.md,
//! "Bounds checks").

mod attention;
mod embed;
pub mod empty;
mod fused;
mod linear;
mod matvec;
mod norm;
pub mod pack;
mod prefill;
mod provider;
mod rope;
mod weights;

use burn::tensor::backend::Backend as _;
use burn::tensor::{DType, Int, Tensor, TensorData, TensorPrimitive};
use half::f16;

pub use fused::launches;
use fused::{Cube, CubeT, LazyTensor};
pub use pack::Quantize;
pub use weights::{DeviceWeight, Packing, Values};

/// The backend these kernels run on.
pub type Wgpu = burn_wgpu::Wgpu<f32, i32, u32>;
type Device = burn_wgpu::WgpuDevice;

/// The largest chunk of a weight, in device bytes: wgpu binds each chunk as one storage buffer,
/// so half the device's largest binding (lavapipe's 128 MiB gives 64 MiB chunks; a GPU's 4 GiB
/// puts a 1B model's output head in one chunk, so one launch), and at most 2 GiB, which keeps
/// every element index within cubecl's 32-bit addressing.
fn max_chunk_bytes(device: &Device) -> usize {
    use cubecl::Runtime as _;
    let largest_binding = burn_wgpu::WgpuRuntime::client(device).properties().memory.max_page_size;
    (largest_binding / 2).min(1 << 31) as usize
}

#[derive(Debug, Clone, Copy)]
pub struct WgpuKernels {
    layout: linear::Layout,
    /// `--quantize`: how float weights are stored.
    quantize: Option<Quantize>,
    /// Greedy decoding queues the next step before reading the id (`Kernels::pipelines_greedy`).
    pipeline_greedy: bool,
}

impl WgpuKernels {
    /// Thread layouts for a GPU.
    pub fn gpu() -> Self {
        Self { layout: linear::Layout::for_device(false), quantize: None, pipeline_greedy: true }
    }

    /// Thread layouts for a CPU Vulkan driver (lavapipe): 8 lanes per row, its SIMD width.
    pub fn cpu_driver() -> Self {
        Self { layout: linear::Layout::for_device(true), quantize: None, pipeline_greedy: true }
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

fn lazy<const D: usize>(t: Tensor<Wgpu, D>) -> LazyTensor {
    t.into_primitive().tensor()
}

fn tensor<const D: usize>(t: LazyTensor) -> Tensor<Wgpu, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Flushes `t`'s pending work and returns its device buffer (load time only).
fn resolve_float<const D: usize>(t: Tensor<Wgpu, D>) -> CubeT {
    let t = lazy(t);
    t.client.clone().resolve_tensor_float::<Cube>(t)
}

fn upload_float<E: burn::tensor::Element>(values: Vec<E>, dtype: DType, device: &Device) -> CubeT {
    let len = values.len();
    resolve_float(Tensor::<Wgpu, 1>::from_data(TensorData::new(values, [len]), (device, dtype)))
}

fn upload_u32(values: Vec<u32>, device: &Device) -> Tensor<Wgpu, 1, Int> {
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), (device, DType::U32))
}

fn upload_words(values: Vec<u32>, device: &Device) -> CubeT {
    let t = upload_u32(values, device).into_primitive();
    t.client.clone().resolve_tensor_int::<Cube>(t)
}

/// The device's compute dtype (`--dtype`), read from Burn's settings: no tensor is made for it.
fn compute_dtype(device: &Device) -> DType {
    burn::tensor::get_device_settings::<Wgpu>(device).float_dtype.into()
}

/// f16 where the device has it (half the bytes), else f32.
fn half_dtype(device: &Device) -> DType {
    if Wgpu::supports_dtype(device, DType::F16) { DType::F16 } else { DType::F32 }
}

fn upload_halves(values: Vec<f16>, device: &Device) -> CubeT {
    match half_dtype(device) {
        DType::F16 => upload_float(values, DType::F16, device),
        _ => upload_float(values.into_iter().map(f32::from).collect(), DType::F32, device),
    }
}

fn rows_per_chunk(row_bytes: usize, rows: usize, device: &Device) -> usize {
    (max_chunk_bytes(device) / row_bytes.max(1)).clamp(1, rows.max(1))
}

fn contiguous(t: CubeT) -> CubeT {
    burn_cubecl::kernel::into_contiguous(t)
}
