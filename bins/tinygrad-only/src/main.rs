//! tinygrad-only: the Llama model of llama-core on burn-wgpu with fusion and autotune, the
//! "JIT and fuse everything" stack.

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use burn::tensor::backend::Backend as _;
use burn_wgpu::{RuntimeOptions, WgpuDevice, WgpuSetup, graphics::AutoGraphicsApi};
use llama_app::cli::{BackendOptions, FloatType, Quantize};
use llama_app::framework::{Framework, HostWork, Opened, apply_dtype};
use tinygrad_only::kernels::Quantize as Storage;
use tinygrad_only::{Wgpu, WgpuKernels, host_threads, host_work, noop};

struct TinygradOnly;

impl Framework for TinygradOnly {
    type Backend = Wgpu;
    type Kernels = WgpuKernels;

    fn name(&self) -> &'static str {
        "tinygrad-only"
    }

    fn stack(&self) -> &'static str {
        "burn-wgpu 0.21 (fusion, autotune) + our CubeCL kernels"
    }

    fn open(&self, options: &BackendOptions) -> anyhow::Result<Opened<Self>> {
        if options.compile {
            bail!("--compile is not supported by tinygrad-only: it is pytorch-only's option");
        }
        let (device, setup, kind) = device(&options.device, options.measuring)?;
        let (dtype, note) = apply_dtype::<Wgpu>(&device, options, (FloatType::F16, None))?;
        let kernels = match kind {
            Kind::Gpu => WgpuKernels::gpu(),
            Kind::CpuDriver => WgpuKernels::cpu_driver(),
            // It stands in for a GPU, so the GPU layout is kept; it runs nothing, so there is no
            // device time to hide behind a pipelined read, and its poll returns at once.
            Kind::Noop => WgpuKernels::gpu().without_pipelining(),
        };
        let storage = options.quantize.map(|q| match q {
            Quantize::Int8 => Storage::Int8,
            Quantize::Nf4 => Storage::Nf4,
            Quantize::Float16 => Storage::Float16,
        });
        let note_on_noop = if kind == Kind::Noop { "no shader runs; GPU kernel layout, NVIDIA limits" } else { "" };
        let mut opened = Opened::new(device, dtype, kernels.with_quantize(storage), describe(&setup, note_on_noop));
        opened.notes.extend(note);
        opened.runs_no_kernels = kind == Kind::Noop;
        opened.memory = device_memory;
        Ok(opened)
    }

    fn kernel_launches(&self) -> Option<u64> {
        Some(tinygrad_only::kernels::launches())
    }

    fn count_host_work<R>(&self, work: impl FnOnce() -> R) -> (R, Option<HostWork>) {
        let (result, counted) = host_work::count(work);
        (result, Some(counted))
    }

    fn tracing_layer(&self) -> Option<Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>> {
        Some(Box::new(host_work::layer()))
    }
}

/// What the adapter is, for the kernels' thread layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gpu,
    /// A CPU Vulkan driver (lavapipe).
    CpuDriver,
    /// wgpu's backend that runs no shader (src/noop.rs).
    Noop,
}

/// `--device`: `auto`, `cpu`, `gpu`, `gpu:N`, or `noop` (only where the mode measures).
fn device(spec: &str, measuring: bool) -> anyhow::Result<(WgpuDevice, WgpuSetup, Kind)> {
    if spec == noop::DEVICE_NAME {
        if !measuring {
            bail!(
                "--device noop runs no shaders, so every output is zero: it serves --benchmark only (the host's share of decode); use another --device for --prompt or chat"
            );
        }
        let (device, setup) = noop::create()?;
        return Ok((device, setup, Kind::Noop));
    }
    let index = |rest: &str| rest.parse::<usize>().map_err(|_| anyhow!("unknown --device `{spec}`"));
    let device = match spec {
        "auto" => WgpuDevice::DefaultDevice,
        "cpu" => WgpuDevice::Cpu,
        "gpu" => WgpuDevice::DiscreteGpu(0),
        _ => match spec.strip_prefix("gpu:") {
            Some(rest) => WgpuDevice::DiscreteGpu(index(rest)?),
            None => bail!("unknown --device `{spec}`: use auto, cpu, gpu, gpu:N or noop"),
        },
    };
    // wgpu panics when no adapter matches; turn that into an error the user can act on.
    let quiet = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let setup = panic::catch_unwind(AssertUnwindSafe(|| {
        burn_wgpu::init_setup::<AutoGraphicsApi>(&device, RuntimeOptions::default())
    }));
    panic::set_hook(quiet);
    let setup = setup.map_err(|_| {
        anyhow!("no wgpu adapter for --device {spec}: install a Vulkan driver (`cargo xtask setup` installs Mesa's software one) or pick another device")
    })?;
    if setup.adapter.get_info().device_type != wgpu::DeviceType::Cpu {
        return Ok((device, setup, Kind::Gpu));
    }
    // A sync starts the device's threads, so they can be found; it makes no tensor, which would
    // fix the device's dtype before `--dtype` is applied.
    Wgpu::sync(&device).map_err(|err| anyhow!("the wgpu device failed its first sync: {err:?}"))?;
    match host_threads::yield_cores_to_driver() {
        Ok(0) => tracing::debug!("no burn-fusion stream thread found: only this thread yields to the driver"),
        Ok(found) => tracing::debug!("{found} stream thread(s) and this one lowered to nice 19"),
        Err(err) => tracing::warn!("could not lower the host threads' priority ({err}): decode may be slower"),
    }
    Ok((device, setup, Kind::CpuDriver))
}

/// The adapter in one line (name, backend, type, driver), after logging the device's compute
/// limits.
fn describe(setup: &WgpuSetup, note: &str) -> String {
    let info = setup.adapter.get_info();
    let mut text = format!(
        "{} ({:?}, {:?}, driver {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    );
    if !note.is_empty() {
        text = format!("{text}: {note}");
    }
    // The device's limits: the adapter's own where cubecl made the device, ours on noop.
    let l = setup.device.limits();
    tracing::info!(
        "device limits: workgroup storage {} B, invocations {}, size {}x{}x{}, workgroups per dimension {}, storage binding {} B, buffer {} B, uniform/storage offset alignment {}/{}",
        l.max_compute_workgroup_storage_size,
        l.max_compute_invocations_per_workgroup,
        l.max_compute_workgroup_size_x,
        l.max_compute_workgroup_size_y,
        l.max_compute_workgroup_size_z,
        l.max_compute_workgroups_per_dimension,
        l.max_storage_buffer_binding_size,
        l.max_buffer_size,
        l.min_uniform_buffer_offset_alignment,
        l.min_storage_buffer_offset_alignment
    );
    text
}

/// The bytes cubecl's memory pools hold on the device.
fn device_memory(device: &WgpuDevice) -> Option<u64> {
    let client = <burn_wgpu::WgpuRuntime as cubecl::Runtime>::client(device);
    client.memory_usage().ok().map(|usage| usage.bytes_reserved)
}

fn main() -> ExitCode {
    // Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid" on headless machines where it is
    // unset; any writable folder silences that. Set before any thread exists.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: single-threaded here, at the very start of main.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    llama_app::run::main(TinygradOnly)
}
