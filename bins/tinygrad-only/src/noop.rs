//! `--device noop`: a wgpu device that does everything but run shaders.
//!
//! wgpu's `noop` backend accepts every call and really allocates, copies and maps buffers, but its
//! dispatches do nothing. Decoding on it therefore costs exactly the host's share of GPU decode:
//! our recording, burn-fusion, cubecl's server thread and wgpu's validation and encoding. That is
//! the floor host issue puts under decode on a real GPU, measurable on a machine without one.
//!
//! The device is built by hand and handed to cubecl (`init_device`), asking for what cubecl's own
//! WGSL device request asks for, on a real NVIDIA card's Vulkan limits rather than noop's "all
//! maximal" ones (the values and where they come from: docs/gpu.md, "The noop device"). The
//! binary picks the GPU kernel layout for it, not lavapipe's.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use anyhow::{Context as _, anyhow};
use burn_wgpu::{RuntimeOptions, WgpuDevice, WgpuSetup};

/// The `--device` value that selects this device.
pub const DEVICE_NAME: &str = "noop";

/// What an NVIDIA card's Vulkan driver offers that cubecl's WGSL path uses: f16 and 64-bit
/// integer arithmetic, subgroups, f32 atomics, and timestamp queries (cubecl decides from the
/// adapter, which on noop has them all, to time its autotune candidates with them).
fn features() -> wgpu::Features {
    wgpu::Features::SHADER_F16
        | wgpu::Features::SHADER_INT64
        | wgpu::Features::SUBGROUP
        | wgpu::Features::SHADER_FLOAT32_ATOMIC
        | wgpu::Features::TIMESTAMP_QUERY
}

/// An NVIDIA data-centre card's compute limits as Vulkan reports them (docs/gpu.md), on wgpu's
/// defaults for everything compute does not read.
pub fn nvidia_limits() -> wgpu::Limits {
    wgpu::Limits {
        max_compute_workgroup_storage_size: 49_152,
        max_compute_invocations_per_workgroup: 1024,
        max_compute_workgroup_size_x: 1024,
        max_compute_workgroup_size_y: 1024,
        max_compute_workgroup_size_z: 64,
        max_compute_workgroups_per_dimension: 65_535,
        max_storage_buffers_per_shader_stage: 1_048_576,
        max_bindings_per_bind_group: 1000,
        // NVIDIA's 4 GiB binding range and far larger buffers, capped at noop's own ceiling.
        max_storage_buffer_binding_size: i32::MAX as u64,
        max_buffer_size: i32::MAX as u64,
        min_uniform_buffer_offset_alignment: 64,
        min_storage_buffer_offset_alignment: 32,
        ..wgpu::Limits::default()
    }
}

/// Polls a future that is ready at once (noop's adapter and device requests are).
fn ready<T>(future: impl Future<Output = T>) -> anyhow::Result<T> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => Err(anyhow!("wgpu's noop backend did not answer at once")),
    }
}

/// Creates the noop device and registers it with cubecl; returns it with its wgpu setup.
pub fn create() -> anyhow::Result<(WgpuDevice, WgpuSetup)> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::NOOP,
        backend_options: wgpu::BackendOptions { noop: wgpu::NoopBackendOptions { enable: true }, ..Default::default() },
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = ready(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?
        .context("wgpu's noop backend offered no adapter")?;
    let descriptor = wgpu::DeviceDescriptor {
        label: Some("noop (no shader runs)"),
        required_features: features(),
        required_limits: nvidia_limits(),
        // As cubecl's own request: it pools its allocations itself.
        memory_hints: wgpu::MemoryHints::MemoryUsage,
        trace: wgpu::Trace::Off,
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
    };
    let (device, queue) =
        ready(adapter.request_device(&descriptor))?.context("wgpu's noop backend refused the device request")?;
    let setup = WgpuSetup { instance, adapter, device, queue, backend: wgpu::Backend::Noop };
    let device = burn_wgpu::init_device(setup.clone(), RuntimeOptions::default());
    Ok((device, setup))
}
