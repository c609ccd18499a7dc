//! Set-up shared by every mode: open the model file and its tokenizer, prepare the device with
//! the dtype the flags ask for, load the weights.

use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use llama_core::chat_template::ChatTemplate;
use llama_core::checkpoint::Checkpoint;
use llama_core::config::LlamaConfig;
use llama_core::model::Llama;
use llama_core::tokenizer::Tokenizer;
use serde_json::json;

use crate::cli::{Args, FloatType};
use crate::framework::{Device, Framework, FrameworkLlama};

/// The KV cache length used when `--ctx-size` is not given (capped at the model's own).
pub const DEFAULT_CONTEXT: usize = 4096;

/// A model (GGUF file or Hugging Face directory) and its tokenizer, checked against the flags but
/// not yet on the device: errors in the files or the flags are reported before the slow part.
pub struct ModelFile {
    pub path: std::path::PathBuf,
    pub checkpoint: Checkpoint,
    pub config: LlamaConfig,
    /// Shared with the server's HTTP side, which tokenizes requests while the model loads.
    pub tokenizer: std::sync::Arc<Tokenizer>,
    /// KV cache length: `--ctx-size`, else the model's capped at [`DEFAULT_CONTEXT`].
    pub context: usize,
}

pub fn open_model_file(args: &Args) -> anyhow::Result<ModelFile> {
    let path = args.model_path();
    if args.model.is_none() && !path.exists() {
        bail!(
            "the default model {} is missing: run `cargo xtask setup` to fetch it, or pass --model FILE",
            path.display()
        );
    }
    let checkpoint = Checkpoint::open(&path)?;
    let config = checkpoint.config()?;
    if let Some(size) = args.size {
        config.check_size(size, &path.display().to_string())?;
    }
    let tokenizer = checkpoint.tokenizer(args.tokenizer.as_deref())?;
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
    Ok(ModelFile { path, checkpoint, config, tokenizer: std::sync::Arc::new(tokenizer), context })
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

/// A seed from the clock, for runs without `--seed`.
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Loads the model file's weights onto `device` with the framework's provider.
pub fn load_model<F: Framework>(fw: &F, file: &ModelFile, device: &Device<F>) -> anyhow::Result<FrameworkLlama<F>> {
    Ok(Llama::from_tensors(file.checkpoint.tensors(), file.config.clone(), fw.kernels(), file.context, device)?)
}

/// The chat template: `--chat-template`, else the model's own, else Llama 3's.
pub fn chat_template(args: &Args, file: &ModelFile) -> anyhow::Result<ChatTemplate> {
    let embedded = file.checkpoint.chat_template()?;
    Ok(ChatTemplate::for_model(embedded.as_deref(), &file.tokenizer, args.chat_template.as_deref())?)
}

/// The model's name and shape, for `--json` output.
pub fn model_info(checkpoint: &Checkpoint, config: &LlamaConfig) -> serde_json::Value {
    json!({
        "path": checkpoint.path().display().to_string(),
        "name": checkpoint.name(),
        "layers": config.n_layers,
        "dim": config.dim,
        "heads": config.n_heads,
        "kv_heads": config.n_kv_heads,
        "ffn_dim": config.ffn_dim,
        "vocab": config.vocab_size,
        "context_length": config.context_length,
    })
}
