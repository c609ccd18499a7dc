//! tinygrad-only: the Llama model of llama-core on burn-wgpu with fusion and autotune, the
//! "JIT and fuse everything" stack.

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, bail};
use burn::tensor::backend::Backend as _;
use burn_wgpu::{RuntimeOptions, WgpuDevice, graphics::AutoGraphicsApi};
use llama_core::cli::Quantize;
use llama_core::framework::{self, Framework};
use tinygrad_only::{Wgpu, WgpuKernels, host_threads};

#[derive(Default)]
struct TinygradOnly {
    adapter: Mutex<Option<String>>,
    /// The adapter is a CPU Vulkan driver (lavapipe): the kernels pick thread layouts for it.
    on_cpu: AtomicBool,
    quantize: Mutex<Option<Quantize>>,
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
        let index = |rest: &str| rest.parse::<usize>().map_err(|_| anyhow!("unknown --device `{spec}`"));
        let device = match spec {
            "auto" => WgpuDevice::DefaultDevice,
            "cpu" => WgpuDevice::Cpu,
            "gpu" => WgpuDevice::DiscreteGpu(0),
            _ => match spec.strip_prefix("gpu:") {
                Some(rest) => WgpuDevice::DiscreteGpu(index(rest)?),
                None => bail!("unknown --device `{spec}`: use auto, cpu, gpu or gpu:N"),
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
        let info = setup.adapter.get_info();
        let text = format!(
            "{} ({:?}, {:?}, driver {} {})",
            info.name, info.backend, info.device_type, info.driver, info.driver_info
        );
        *self.adapter.lock().expect("adapter lock") = Some(text);
        // wgpu's `DeviceType::Cpu`, compared by name: burn-wgpu does not re-export wgpu's types.
        let on_cpu = format!("{:?}", info.device_type) == "Cpu";
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
        *self.quantize.lock().expect("quantize lock") = quantize;
        Ok(())
    }

    fn kernel_launches(&self) -> Option<u64> {
        Some(tinygrad_only::kernels::launches())
    }

    fn kernels(&self) -> WgpuKernels {
        let kernels = if self.on_cpu.load(Ordering::Relaxed) { WgpuKernels::cpu_driver() } else { WgpuKernels::gpu() };
        kernels.with_quantize(*self.quantize.lock().expect("quantize lock"))
    }
}

fn main() -> ExitCode {
    // Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid" on headless machines where it is
    // unset; any writable folder silences that. Set before any thread exists.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: single-threaded here, at the very start of main.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    framework::main(TinygradOnly::default())
}
