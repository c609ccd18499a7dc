//! What a framework binary provides: its backend type, its fast-path provider, how it reads
//! `--device` and describes the device, and what it can count. Everything else (loading,
//! tokenizing, the chat template, generation, output) lives once in llama-core and the rest of
//! this crate, so adding a framework is one small bin crate.

use anyhow::bail;
use burn::tensor::backend::Backend;
use llama_core::kernels::Kernels;
use llama_core::model::Llama;
use serde::Serialize;

use crate::cli::{Args, FloatType, Quantize};

pub type Device<F> = burn::tensor::Device<<F as Framework>::Backend>;

pub trait Framework: Sized {
    type Backend: Backend;
    type Kernels: Kernels<Self::Backend>;

    /// The binary's name, as users type it.
    fn name(&self) -> &'static str;

    /// The framework stack in words, e.g. "burn-wgpu 0.21 (fusion, autotune)".
    fn stack(&self) -> &'static str;

    /// Parses `--device`; an unknown or unavailable device is an error that says which are valid.
    fn device(&self, spec: &str) -> anyhow::Result<Device<Self>>;

    /// One line about the device the model runs on (adapter, driver, threads).
    fn device_info(&self, device: &Device<Self>) -> String;

    /// The fast-path provider this binary runs the model with.
    fn kernels(&self) -> Self::Kernels;

    /// Takes `--quantize`; frameworks that cannot store weights that way refuse it.
    fn set_quantize(&self, quantize: Option<Quantize>) -> anyhow::Result<()> {
        match quantize {
            None => Ok(()),
            Some(q) => bail!("--quantize {q:?} is not supported by {}: it is tinygrad-only's option", self.name()),
        }
    }

    /// The dtype `--half` means on `device`, and why when it is not f16.
    fn half_dtype(&self, _device: &Device<Self>) -> (FloatType, Option<&'static str>) {
        (FloatType::F16, None)
    }

    /// Takes `--compile`: says what it does on `device` (printed once on stderr), or refuses.
    fn compile_note(&self, _device: &Device<Self>) -> anyhow::Result<String> {
        bail!("--compile is not supported by {}: it is pytorch-only's option", self.name())
    }

    /// Our own kernel launches so far in this process, where the framework counts them.
    fn kernel_launches(&self) -> Option<u64> {
        None
    }

    /// Runs `work` (which ends with a read that waits for the device) and says what it asked of
    /// the device, where the framework can count that.
    fn count_host_work<R>(&self, work: impl FnOnce() -> R) -> (R, Option<HostWork>) {
        (work(), None)
    }

    /// A tracing layer the process's subscriber needs (installed before any device exists).
    fn tracing_layer(&self) -> Option<Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>> {
        None
    }

    /// Refuses flag combinations the framework cannot serve; called before any mode starts.
    fn check_args(&self, _args: &Args) -> anyhow::Result<()> {
        Ok(())
    }

    /// Whether the device runs no kernels at all (a host-cost measuring device): its outputs are
    /// zeros and its decode time is the host's alone.
    fn runs_no_kernels(&self) -> bool {
        false
    }

    /// Device memory in use, where the framework can tell.
    fn device_memory_bytes(&self, _device: &Device<Self>) -> Option<u64> {
        None
    }

    /// Called once before exit: wait for outstanding device work.
    fn cleanup(&self, device: &Device<Self>) {
        let _ = Self::Backend::sync(device);
    }
}

/// The model as a framework instantiates it.
pub type FrameworkLlama<F> = Llama<<F as Framework>::Backend, <F as Framework>::Kernels>;

/// What the host asked of the device over some work: the counts behind a decode step's host
/// cost. `T` is `u64` for counts, `f64` for averages per step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HostWork<T = u64> {
    /// Kernel dispatches that reached the device, the framework's own and ours.
    pub kernel_launches: T,
    pub queue_submits: T,
    /// Device-to-host reads (buffer maps), each a wait for the device.
    pub device_reads: T,
    /// Host-to-device writes through a staging buffer (kernel metadata, uploads).
    pub staging_writes: T,
    pub buffers_created: T,
}

impl HostWork {
    /// The counts of `self` beyond `base`'s, shared over `steps`.
    pub fn per_step(self, base: HostWork, steps: f64) -> HostWork<f64> {
        let per = |total: u64, base: u64| total.saturating_sub(base) as f64 / steps;
        HostWork {
            kernel_launches: per(self.kernel_launches, base.kernel_launches),
            queue_submits: per(self.queue_submits, base.queue_submits),
            device_reads: per(self.device_reads, base.device_reads),
            staging_writes: per(self.staging_writes, base.staging_writes),
            buffers_created: per(self.buffers_created, base.buffers_created),
        }
    }
}
