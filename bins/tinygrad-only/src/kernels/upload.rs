//! Putting a weight's packed chunks on the device, once at load: uploads in the dtypes the
//! kernels read, and the chunk size a storage binding allows.

use burn::tensor::backend::Backend as _;
use burn::tensor::{DType, Int, Tensor, TensorData};
use half::f16;

use super::stream::{Cube, CubeT, Wgpu, lazy};

type Device = burn_wgpu::WgpuDevice;

/// The largest chunk of a weight, in device bytes: wgpu binds each chunk as one storage buffer,
/// so half the device's largest binding (lavapipe's 128 MiB gives 64 MiB chunks; a GPU's 4 GiB
/// puts a 1B model's output head in one chunk, so one launch), and at most 2 GiB, which keeps
/// every element index within cubecl's 32-bit addressing.
pub fn max_chunk_bytes(device: &Device) -> usize {
    use cubecl::Runtime as _;
    let largest_binding = burn_wgpu::WgpuRuntime::client(device).properties().memory.max_page_size;
    (largest_binding / 2).min(1 << 31) as usize
}

/// Flushes `t`'s pending work and returns its device buffer (load time only).
pub fn resolve_float<const D: usize>(t: Tensor<Wgpu, D>) -> CubeT {
    let t = lazy(t);
    t.client.clone().resolve_tensor_float::<Cube>(t)
}

pub fn upload_float<E: burn::tensor::Element>(values: Vec<E>, dtype: DType, device: &Device) -> CubeT {
    let len = values.len();
    resolve_float(Tensor::<Wgpu, 1>::from_data(TensorData::new(values, [len]), (device, dtype)))
}

pub fn upload_u32(values: Vec<u32>, device: &Device) -> Tensor<Wgpu, 1, Int> {
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), (device, DType::U32))
}

pub fn upload_words(values: Vec<u32>, device: &Device) -> CubeT {
    let t = upload_u32(values, device).into_primitive();
    t.client.clone().resolve_tensor_int::<Cube>(t)
}

/// The device's compute dtype (`--dtype`), read from Burn's settings: no tensor is made for it.
pub fn compute_dtype(device: &Device) -> DType {
    burn::tensor::get_device_settings::<Wgpu>(device).float_dtype.into()
}

/// f16 where the device has it (half the bytes), else f32.
pub fn half_dtype(device: &Device) -> DType {
    if Wgpu::supports_dtype(device, DType::F16) { DType::F16 } else { DType::F32 }
}

pub fn upload_halves(values: Vec<f16>, device: &Device) -> CubeT {
    match half_dtype(device) {
        DType::F16 => upload_float(values, DType::F16, device),
        _ => upload_float(values.into_iter().map(f32::from).collect(), DType::F32, device),
    }
}

pub fn rows_per_chunk(row_bytes: usize, rows: usize, device: &Device) -> usize {
    (max_chunk_bytes(device) / row_bytes.max(1)).clamp(1, rows.max(1))
}
