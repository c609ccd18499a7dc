//! What a framework binary provides, and the run loop every binary shares.
//!
//! A binary implements [`Framework`] (its backend type, kernel provider, how to parse `--device`
//! and describe the device) and calls [`main`]. Everything else — loading, tokenizing, the chat
//! template, generation, output — lives here once, so adding a framework is one small bin crate.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use clap::{CommandFactory, FromArgMatches};
use serde::Serialize;
use serde_json::json;

use crate::cli::{Args, FloatType};
use crate::config::LlamaConfig;
use crate::gguf::GgufFile;
use crate::kernels::Kernels;
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

pub type Device<F> = burn::tensor::Device<<F as Framework>::Backend>;

/// The KV cache length used when `--ctx-size` is not given (capped at the model's own).
pub const DEFAULT_CONTEXT: usize = 4096;

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
    fn set_quantize(&self, quantize: Option<crate::cli::Quantize>) -> anyhow::Result<()> {
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

    fn load_model(
        &self,
        gguf: &GgufFile,
        config: LlamaConfig,
        context: usize,
        device: &Device<Self>,
    ) -> anyhow::Result<Llama<Self::Backend, Self::Kernels>> {
        Ok(Llama::from_gguf(gguf, config, self.kernels(), context, device)?)
    }

    /// `--tokenizer`, else `tokenizer.json` beside the model, else the GGUF's own vocabulary.
    fn load_tokenizer(&self, args: &Args, gguf: &GgufFile) -> anyhow::Result<Tokenizer> {
        let beside_model = gguf.path().parent().map(|dir| dir.join("tokenizer.json")).filter(|p| p.is_file());
        Ok(match args.tokenizer.clone().or(beside_model) {
            Some(path) => Tokenizer::from_file(&path, Some(gguf))?,
            None => Tokenizer::from_gguf(gguf)?,
        })
    }

    fn model_info(&self, gguf: &GgufFile, config: &LlamaConfig) -> serde_json::Value {
        let name = gguf.get("general.name").and_then(|v| match v {
            crate::gguf::Value::String(s) => Some(s.clone()),
            _ => None,
        });
        json!({
            "path": gguf.path().display().to_string(),
            "name": name,
            "layers": config.n_layers,
            "dim": config.dim,
            "heads": config.n_heads,
            "kv_heads": config.n_kv_heads,
            "ffn_dim": config.ffn_dim,
            "vocab": config.vocab_size,
            "context_length": config.context_length,
        })
    }

    /// `--benchmark` measures, `--prompt` answers once, and anything else opens a chat.
    fn run(&self, args: Args) -> anyhow::Result<()> {
        self.check_args(&args)?;
        self.set_quantize(args.quantize)?;
        if args.benchmark {
            crate::benchmark::run(self, &args)
        } else if let Some(prompt) = &args.prompt {
            crate::one_shot::run(self, &args, prompt)
        } else {
            crate::interactive::run(self, &args)
        }
    }
}

/// Sets the device's float dtype from `--dtype`/`--half`, before any tensor exists on it (Burn
/// fixes a device's dtype at its first tensor). `--half` takes the framework's half type for the
/// device, falling back to bf16 where f16 is unsupported. Returns the dtype in use and, when
/// `--half` did not give f16, a note saying why.
pub fn apply_dtype<F: Framework>(
    fw: &F,
    device: &Device<F>,
    args: &Args,
) -> anyhow::Result<(FloatType, Option<String>)> {
    let int = <burn::tensor::ops::IntElem<F::Backend> as burn::tensor::Element>::dtype();
    let set = |t: FloatType| burn::tensor::set_default_dtypes::<F::Backend>(device, t.dtype(), int);
    let (wanted, why) = if args.half { fw.half_dtype(device) } else { (args.dtype, None) };
    match set(wanted) {
        Ok(()) => Ok((wanted, why.map(|why| format!("--half: using {}: {why}", format!("{wanted:?}").to_lowercase())))),
        Err(e) if args.half => {
            set(FloatType::Bf16).map_err(|e2| {
                anyhow::anyhow!("--half: neither {wanted:?} ({e}) nor bf16 ({e2}) works on this device")
            })?;
            Ok((FloatType::Bf16, Some(format!("f16 is not supported on this device ({e}); using bf16"))))
        }
        Err(e) => bail!("--dtype {wanted:?}: {e}"),
    }
}

/// Parses the command line, runs, and turns any error into a message and exit code 1.
pub fn main<F: Framework>(framework: F) -> ExitCode {
    let command = Args::command().name(framework.name()).bin_name(framework.name());
    let args = match Args::from_arg_matches(&command.get_matches()) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    init_tracing(&framework, args.verbose);
    match framework.run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: error: {e:#}", framework.name());
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (`RUST_LOG`, else info with `--verbose`, else warnings), beside the
/// framework's own layer. wgpu's API calls are spans at info level when a framework counts them
/// (tinygrad-only's `host_work`): the default filter keeps them out of the log, where each would
/// cost a span record.
fn init_tracing<F: Framework>(framework: &F, verbose: bool) {
    use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};
    let level = if verbose { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},wgpu_core=warn,wgpu_hal=warn,naga=warn"))
    });
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    tracing_subscriber::registry().with(framework.tracing_layer()).with(log).init();
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

/// A model file and its tokenizer, checked against the flags but not yet on the device: errors
/// in the file or the flags are reported before the slow part.
pub struct ModelFile {
    pub path: std::path::PathBuf,
    pub gguf: GgufFile,
    pub config: LlamaConfig,
    pub tokenizer: Tokenizer,
    /// KV cache length: `--ctx-size`, else the model's capped at [`DEFAULT_CONTEXT`].
    pub context: usize,
}

pub fn open_model_file<F: Framework>(fw: &F, args: &Args) -> anyhow::Result<ModelFile> {
    let path = args.model_path();
    if args.model.is_none() && !path.exists() {
        bail!(
            "the default model {} is missing: run `cargo xtask setup` to fetch it, or pass --model FILE",
            path.display()
        );
    }
    let gguf = GgufFile::open(&path)?;
    let config = LlamaConfig::from_gguf(&gguf)?;
    if let Some(size) = args.size {
        config.check_size(size, &path.display().to_string())?;
    }
    let tokenizer = fw.load_tokenizer(args, &gguf)?;
    if tokenizer.vocab_size() > config.vocab_size {
        bail!("the tokenizer has {} tokens but the model only {}", tokenizer.vocab_size(), config.vocab_size);
    }
    let context = match args.ctx_size {
        Some(n) if n > config.context_length => {
            bail!("--ctx-size {n} exceeds the model's context length of {}", config.context_length)
        }
        Some(0) => bail!("--ctx-size must be at least 1"),
        Some(n) => n,
        None => config.context_length.min(DEFAULT_CONTEXT),
    };
    Ok(ModelFile { path, gguf, config, tokenizer, context })
}

/// The device from `--device` with the dtype from `--dtype`/`--half` applied (a fallback is said
/// on stderr), and a line describing it.
pub fn prepare_device<F: Framework>(fw: &F, args: &Args) -> anyhow::Result<(Device<F>, FloatType, String)> {
    let device = fw.device(&args.device)?;
    let (dtype, note) = apply_dtype(fw, &device, args)?;
    if let Some(note) = &note {
        eprintln!("{}: {note}", fw.name());
    }
    if args.compile {
        eprintln!("{}: --compile: {}", fw.name(), fw.compile_note(&device)?);
    }
    let info = fw.device_info(&device);
    tracing::info!("{} on {info}", fw.stack());
    Ok((device, dtype, info))
}

/// The model as a framework instantiates it.
pub type FrameworkLlama<F> = Llama<<F as Framework>::Backend, <F as Framework>::Kernels>;

/// Builds the model with `build` and waits until its weights are on the device; returns it with
/// the seconds that took.
pub fn timed_load<F: Framework>(
    device: &Device<F>,
    build: impl FnOnce() -> anyhow::Result<FrameworkLlama<F>>,
) -> anyhow::Result<(FrameworkLlama<F>, f64)> {
    let start = Instant::now();
    let model = build()?;
    F::Backend::sync(device).context("waiting for the weights to reach the device")?;
    Ok((model, start.elapsed().as_secs_f64()))
}

/// Writes a piece of generated text to stdout straight away: replies stream as they are made.
pub fn print_streamed(piece: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(piece.as_bytes());
    let _ = out.flush();
}

/// A seed from the clock, for runs without `--seed`.
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
