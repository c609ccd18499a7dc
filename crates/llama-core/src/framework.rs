//! What a framework binary provides, and the run loop every binary shares.
//!
//! A binary implements [`Framework`] (its backend type, kernel provider, how to parse `--device`
//! and describe the device) and calls [`main`]. Everything else — loading, tokenizing, the chat
//! template, generation, output — lives here once, so adding a framework is one small bin crate.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use clap::{CommandFactory, FromArgMatches};
use serde_json::json;

use crate::chat_template::{self, Message};
use crate::cli::{Args, FloatType};
use crate::config::LlamaConfig;
use crate::generation::{self, GenerationParams};
use crate::gguf::GgufFile;
use crate::kernels::Kernels;
use crate::model::Llama;
use crate::sampling::Sampler;
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

    fn run(&self, args: Args) -> anyhow::Result<()> {
        if args.benchmark { crate::benchmark::run(self, &args) } else { run_one_shot(self, &args) }
    }
}

/// Sets the device's float dtype from `--dtype`/`--half`, before any tensor exists on it (Burn
/// fixes a device's dtype at its first tensor). `--half` falls back to bf16 where f16 is
/// unsupported. Returns the dtype in use and, for a fallback, a note saying so.
pub fn apply_dtype<F: Framework>(device: &Device<F>, args: &Args) -> anyhow::Result<(FloatType, Option<String>)> {
    let int = <burn::tensor::ops::IntElem<F::Backend> as burn::tensor::Element>::dtype();
    let set = |t: FloatType| burn::tensor::set_default_dtypes::<F::Backend>(device, t.dtype(), int);
    let wanted = if args.half { FloatType::F16 } else { args.dtype };
    match set(wanted) {
        Ok(()) => Ok((wanted, None)),
        Err(e) if args.half => {
            set(FloatType::Bf16)
                .map_err(|e2| anyhow::anyhow!("--half: neither f16 ({e}) nor bf16 ({e2}) works on this device"))?;
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
    let level = if args.verbose { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match framework.run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: error: {e:#}", framework.name());
            ExitCode::FAILURE
        }
    }
}

fn run_one_shot<F: Framework>(fw: &F, args: &Args) -> anyhow::Result<()> {
    let Some(prompt_text) = &args.prompt else {
        bail!("no --prompt given: interactive chat is not available yet; pass --prompt TEXT");
    };
    let model_path = args.model_path();
    if args.model.is_none() && !model_path.exists() {
        bail!(
            "the default model {} is missing: run `cargo xtask setup` to fetch it, or pass --model FILE",
            model_path.display()
        );
    }
    let gguf = GgufFile::open(&model_path)?;
    let config = LlamaConfig::from_gguf(&gguf)?;
    if let Some(size) = args.size {
        config.check_size(size, &model_path.display().to_string())?;
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
    let prompt = encode_prompt(args, prompt_text, &gguf, &tokenizer)?;
    if prompt.is_empty() {
        bail!("the prompt is empty after tokenization; give some text");
    }
    if prompt.len() > context {
        bail!(
            "the prompt is {} tokens, longer than the context of {context} tokens (raise --ctx-size, up to {})",
            prompt.len(),
            config.context_length
        );
    }

    let device = fw.device(&args.device)?;
    let (dtype, dtype_note) = apply_dtype::<F>(&device, args)?;
    if let Some(note) = &dtype_note {
        eprintln!("{}: {note}", fw.name());
    }
    let device_info = fw.device_info(&device);
    tracing::info!("{} on {device_info}", fw.stack());
    let load_start = Instant::now();
    let model = fw.load_model(&gguf, config.clone(), context, &device)?;
    F::Backend::sync(&device).context("waiting for the weights to reach the device")?;
    let load_s = load_start.elapsed().as_secs_f64();
    tracing::info!("loaded {} in {load_s:.2}s, {} prompt tokens", model_path.display(), prompt.len());

    let seed = args.seed.unwrap_or_else(fresh_seed);
    let mut sampler = Sampler::new(args.temperature, seed);
    let params = GenerationParams {
        max_tokens: args.max_tokens,
        ignore_eos: args.ignore_eos,
        record_top_logits: if args.json { args.top_logits } else { 0 },
    };
    let mut cache = model.new_cache(context);
    let stdout = std::io::stdout();
    let generation =
        generation::generate(&model, &mut cache, Some(&tokenizer), &prompt, &params, &mut sampler, |piece| {
            if !args.json {
                let mut out = stdout.lock();
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            }
        })?;
    fw.cleanup(&device);

    let n = generation.generated_tokens.len();
    let t = &generation.timings;
    let prefill_tok_s = generation::rate(prompt.len(), t.prefill_s);
    let decode_tok_s = generation::rate(t.decode_step_s.len(), t.decode_s);
    if args.json {
        let out = json!({
            "framework": fw.name(),
            "stack": fw.stack(),
            "kernels": model.kernels().name(),
            "device": device_info,
            "model": fw.model_info(&gguf, &config),
            "dtype": dtype,
            "seed": seed,
            "temperature": args.temperature,
            "prompt_tokens": prompt,
            "generated_tokens": generation.generated_tokens,
            "text": generation.text,
            "stop_reason": generation.stop_reason,
            "top_logits": generation.top_logits,
            "timings": {
                "load_s": load_s,
                "time_to_first_token_s": t.time_to_first_token_s,
                "prefill_s": t.prefill_s,
                "decode_s": t.decode_s,
                "prefill_tok_s": prefill_tok_s,
                "decode_tok_s": decode_tok_s,
                "decode_step_s": t.decode_step_s,
            },
        });
        println!("{out}");
    } else {
        println!();
        if std::io::stderr().is_terminal() || args.verbose {
            eprintln!(
                "[{} tokens, {:?}; TTFT {:.0} ms, prefill {prefill_tok_s:.1} tok/s, decode {decode_tok_s:.1} tok/s, seed {seed}]",
                n,
                generation.stop_reason,
                t.time_to_first_token_s * 1e3,
            );
        }
    }
    Ok(())
}

/// `--raw`: the text as is. Otherwise the model's chat template (or Llama 3's) around one user
/// message. Special-token text is parsed in both, as llama.cpp does for prompts.
fn encode_prompt(args: &Args, text: &str, gguf: &GgufFile, tokenizer: &Tokenizer) -> anyhow::Result<Vec<u32>> {
    if args.raw {
        return Ok(tokenizer.encode(text, true)?);
    }
    let template = match gguf.get("tokenizer.chat_template") {
        Some(crate::gguf::Value::String(t)) => t.as_str(),
        _ => chat_template::LLAMA3_TEMPLATE,
    };
    let token_text = |id: Option<u32>| id.and_then(|id| tokenizer.token_text(id)).unwrap_or_default();
    let bos = token_text(tokenizer.bos_id());
    let eos = token_text(tokenizer.end_of_generation_ids().first().copied());
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::new("system", system));
    }
    messages.push(Message::new("user", text));
    let rendered = chat_template::render(template, &messages, &bos, &eos, true)?;
    let mut ids = tokenizer.encode(&rendered, true)?;
    // Templates that write `{{ bos_token }}` themselves would otherwise get a second BOS.
    if let (Some(bos), [first, second, ..]) = (tokenizer.bos_id(), ids.as_slice())
        && *first == bos
        && *second == bos
    {
        ids.remove(0);
    }
    Ok(ids)
}

fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
