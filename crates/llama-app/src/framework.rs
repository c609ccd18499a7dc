//! What a framework binary provides: its backend type, its fast-path provider, and one call that
//! opens a device from the flags ([`Framework::open`]) and returns everything later calls need
//! ([`Opened`]), so that no binary keeps state to remember what was set. Everything else
//! (loading, tokenizing, the chat template, the engine, output) lives once in llama-core and the
//! rest of this crate, so adding a framework is one small bin crate.

use anyhow::bail;
use burn::tensor::backend::Backend;
use llama_core::kernels::Kernels;
use llama_core::model::Llama;
use llama_core::scheduler::{Eager, StepRunner};
use serde::Serialize;

use crate::cli::{BackendOptions, FloatType, Quantize};

pub type Device<F> = burn::tensor::Device<<F as Framework>::Backend>;

/// A framework's device, opened as the flags say, and what runs on it.
pub struct Opened<F: Framework> {
    pub device: Device<F>,
    /// The float dtype in use (`--half` may have fallen back).
    pub dtype: FloatType,
    /// The provider, set up for this device and `--quantize`.
    pub kernels: F::Kernels,
    /// One line about the device (adapter, driver, threads).
    pub description: String,
    /// What the flags' fallbacks did, said once on stderr (`--half` as bf16, `--compile` on a CPU).
    pub notes: Vec<String>,
    /// The device runs no kernels at all (a host-cost measuring device): its outputs are zeros
    /// and its decode time is the host's alone.
    pub runs_no_kernels: bool,
    /// How a step runs: captured and replayed where `--compile` can, else as it is.
    pub runner: Box<dyn StepRunner<F::Backend, F::Kernels>>,
    /// Device memory in use, where the backend can tell.
    pub memory: fn(&Device<F>) -> Option<u64>,
}

impl<F: Framework> Opened<F> {
    /// A device with every step run as it is, no notes, memory not reported: what a framework
    /// then adjusts.
    pub fn new(device: Device<F>, dtype: FloatType, kernels: F::Kernels, description: String) -> Self {
        Self {
            device,
            dtype,
            kernels,
            description,
            notes: Vec::new(),
            runs_no_kernels: false,
            runner: Box::new(Eager),
            memory: |_| None,
        }
    }

    /// The step runner, for one scheduler (later ones run each step as it is).
    pub fn take_runner(&mut self) -> Box<dyn StepRunner<F::Backend, F::Kernels>> {
        std::mem::replace(&mut self.runner, Box::new(Eager))
    }
}

pub trait Framework: Sized {
    type Backend: Backend;
    type Kernels: Kernels<Self::Backend> + Clone + 'static;

    /// The binary's name, as users type it.
    fn name(&self) -> &'static str;

    /// The framework stack in words, e.g. "burn-wgpu 0.21 (fusion, autotune)".
    fn stack(&self) -> &'static str;

    /// Opens the device `options.device` names (an unknown or unavailable one is an error that
    /// says which are valid), with the dtype, weight storage and step the options ask for (or
    /// an error naming the flag it cannot serve).
    fn open(&self, options: &BackendOptions) -> anyhow::Result<Opened<Self>>;

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
}

/// The model as a framework instantiates it.
pub type FrameworkLlama<F> = Llama<<F as Framework>::Backend, <F as Framework>::Kernels>;

/// Sets `device`'s float dtype from the options, before any tensor exists on it (Burn fixes a
/// device's dtype at its first tensor). `--half` takes `half`, the framework's half type for the
/// device (with why, when it is not f16), falling back to bf16 where that fails. Returns the
/// dtype in use and, when `--half` did not give f16, a note saying why.
pub fn apply_dtype<B: Backend>(
    device: &B::Device,
    options: &BackendOptions,
    half: (FloatType, Option<&str>),
) -> anyhow::Result<(FloatType, Option<String>)> {
    let int = <burn::tensor::ops::IntElem<B> as burn::tensor::Element>::dtype();
    let set = |t: FloatType| burn::tensor::set_default_dtypes::<B>(device, t.dtype(), int);
    let (wanted, why) = if options.half { half } else { (options.dtype, None) };
    match set(wanted) {
        Ok(()) => Ok((wanted, why.map(|why| format!("--half: using {}: {why}", wanted.name())))),
        Err(e) if options.half => {
            set(FloatType::Bf16).map_err(|e2| {
                anyhow::anyhow!("--half: neither {wanted:?} ({e}) nor bf16 ({e2}) works on this device")
            })?;
            Ok((FloatType::Bf16, Some(format!("f16 is not supported on this device ({e}); using bf16"))))
        }
        Err(e) => bail!("--dtype {wanted:?}: {e}"),
    }
}

/// Refuses `--quantize` for a framework that cannot store weights that way.
pub fn refuse_quantize(name: &str, quantize: Option<Quantize>) -> anyhow::Result<()> {
    match quantize {
        None => Ok(()),
        Some(q) => bail!("--quantize {q:?} is not supported by {name}: it is tinygrad-only's option"),
    }
}

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
