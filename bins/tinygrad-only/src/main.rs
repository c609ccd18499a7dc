//! tinygrad-only: the Llama model of llama-core on burn-wgpu with fusion and autotune, the
//! "JIT and fuse everything" stack.

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, bail};
use burn::tensor::backend::Backend as _;
use burn_wgpu::{RuntimeOptions, WgpuDevice, WgpuSetup, graphics::AutoGraphicsApi};
use llama_app::cli::{Args, Quantize};
use llama_app::{Framework, HostWork};
use tinygrad_only::kernels::Quantize as Storage;
use tinygrad_only::{Wgpu, WgpuKernels, host_threads, host_work, noop};

#[derive(Default)]
struct TinygradOnly {
    adapter: Mutex<Option<String>>,
    /// The adapter is a CPU Vulkan driver (lavapipe): the kernels pick thread layouts for it.
    on_cpu: AtomicBool,
    /// `--device noop`: wgpu's backend that runs no shader (src/noop.rs).
    noop: AtomicBool,
    /// `--quantize`: how float weights are stored.
    quantize: Mutex<Option<Storage>>,
}

impl Framework for TinygradOnly {
    type Backend = Wgpu;
    type Kernels = WgpuKernels;

    fn name(&self) -> &'static str {
        "tinygrad-only"
    }

    fn stack(&self) -> &'static str {
        "burn-wgpu 0.21 (fusion, autotune) + our CubeCL kernels"
    }

    fn device(&self, spec: &str) -> anyhow::Result<WgpuDevice> {
        if spec == noop::DEVICE_NAME {
            let (device, setup) = noop::create()?;
            // noop calls itself a CPU device; it stands in for a GPU, so the GPU layout is kept.
            self.describe(&setup, "no shader runs; GPU kernel layout, NVIDIA limits");
            self.noop.store(true, Ordering::Relaxed);
            return Ok(device);
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
        self.describe(&setup, "");
        let on_cpu = setup.adapter.get_info().device_type == wgpu::DeviceType::Cpu;
        self.on_cpu.store(on_cpu, Ordering::Relaxed);
        if on_cpu {
            // A sync starts the device's threads, so they can be found; it makes no tensor, which
            // would fix the device's dtype before `--dtype` is applied.
            Wgpu::sync(&device).map_err(|err| anyhow!("the wgpu device failed its first sync: {err:?}"))?;
            match host_threads::yield_cores_to_driver() {
                Ok(0) => tracing::debug!("no burn-fusion stream thread found: only this thread yields to the driver"),
                Ok(found) => tracing::debug!("{found} stream thread(s) and this one lowered to nice 19"),
                Err(err) => tracing::warn!("could not lower the host threads' priority ({err}): decode may be slower"),
            }
        }
        Ok(device)
    }

    fn device_info(&self, device: &WgpuDevice) -> String {
        self.adapter.lock().expect("adapter lock").clone().unwrap_or_else(|| format!("{device:?}"))
    }

    fn set_quantize(&self, quantize: Option<Quantize>) -> anyhow::Result<()> {
        *self.quantize.lock().expect("quantize lock") = quantize.map(|q| match q {
            Quantize::Int8 => Storage::Int8,
            Quantize::Nf4 => Storage::Nf4,
            Quantize::Float16 => Storage::Float16,
        });
        Ok(())
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

    fn check_args(&self, args: &Args) -> anyhow::Result<()> {
        if args.device == noop::DEVICE_NAME && !args.benchmark {
            bail!(
                "--device noop runs no shaders, so every output is zero: it serves --benchmark only (the host's share of decode); use another --device for --prompt or chat"
            );
        }
        Ok(())
    }

    fn runs_no_kernels(&self) -> bool {
        self.noop.load(Ordering::Relaxed)
    }

    fn kernels(&self) -> WgpuKernels {
        let kernels = if self.on_cpu.load(Ordering::Relaxed) { WgpuKernels::cpu_driver() } else { WgpuKernels::gpu() };
        let kernels = if self.runs_no_kernels() { kernels.without_pipelining() } else { kernels };
        kernels.with_quantize(*self.quantize.lock().expect("quantize lock"))
    }
}

impl TinygradOnly {
    /// Keeps the adapter's description (name, backend, type, driver) for `device_info`, and logs
    /// the device's compute limits.
    fn describe(&self, setup: &WgpuSetup, note: &str) {
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
        *self.adapter.lock().expect("adapter lock") = Some(text);
    }
}

fn main() -> ExitCode {
    // Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid" on headless machines where it is
    // unset; any writable folder silences that. Set before any thread exists.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: single-threaded here, at the very start of main.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    llama_app::main(TinygradOnly::default())
}
