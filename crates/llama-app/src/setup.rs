//! Set-up shared by every mode, in the order its types impose: open the model file and its
//! tokenizer ([`ModelFile`]), open the framework's device as the flags say ([`Opened`]), load
//! the weights onto it.

use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use llama_core::chat_template::ChatTemplate;
use llama_core::checkpoint::Checkpoint;
use llama_core::config::LlamaConfig;
use llama_core::model::Llama;
use llama_core::tokenizer::Tokenizer;
use serde_json::json;

use crate::cli::Args;
use crate::framework::{Device, Framework, FrameworkLlama, Opened};

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

/// The framework's device, opened as the flags say; what its fallbacks did is said on stderr.
pub fn open_backend<F: Framework>(fw: &F, args: &Args) -> anyhow::Result<Opened<F>> {
    let opened = fw.open(&args.backend_options())?;
    for note in &opened.notes {
        eprintln!("{}: {note}", fw.name());
    }
    tracing::info!("{} on {}", fw.stack(), opened.description);
    Ok(opened)
}

/// Loads the model file's weights onto the opened device and waits until they are there;
/// returns the model with the seconds that took.
pub fn load<F: Framework>(opened: &Opened<F>, file: &ModelFile) -> anyhow::Result<(FrameworkLlama<F>, f64)> {
    timed_load::<F>(&opened.device, || {
        let kernels = opened.kernels.clone();
        Ok(Llama::from_tensors(file.checkpoint.tensors(), file.config.clone(), kernels, file.context, &opened.device)?)
    })
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

/// Waits for outstanding device work before exit.
pub fn finish<F: Framework>(opened: &Opened<F>) {
    let _ = F::Backend::sync(&opened.device);
}

/// A seed from the clock, for runs without `--seed`.
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
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
