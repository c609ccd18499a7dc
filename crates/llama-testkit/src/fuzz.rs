//! The fuzz targets' bodies (cargo-fuzz's `fuzz/` calls them; `tests/fuzz_regressions.rs` replays
//! the committed inputs through them). Each writes its input where the reader under test looks
//! for it, since the readers take paths and the real open-map-parse path is what should run,
//! then exercises what a loaded value offers. A body may return early on an error; a panic, a
//! hang or unbounded memory is a finding.

use std::path::{Path, PathBuf};

use llama_core::chat_template::{ChatTemplate, Message};
use llama_core::config::LlamaConfig;
use llama_core::dequant::{GgmlType, dequantize};
use llama_core::gguf::GgufFile;
use llama_core::hf::HfModel;
use llama_core::tensor_file::{LayerTensor, ModelTensor, TensorFile};
use llama_core::tokenizer::Tokenizer;

/// A target's body: one input, run through a reader and what its result offers.
pub type Body = fn(&[u8]);

/// Every target: its name (the file under fuzz/fuzz_targets/) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("gguf", gguf),
    ("dequant", dequant),
    ("safetensors", safetensors),
    ("shard_index", shard_index),
    ("hf_config", hf_config),
    ("tokenizer_json", tokenizer_json),
    ("tiktoken", tiktoken),
    ("chat_template", chat_template),
];

/// A GGUF file: header, metadata, tensor directory; then what the program reads from it: the
/// config, the tokenizer, every tensor dequantized.
pub fn gguf(data: &[u8]) {
    let path = put(&scratch(), "model.gguf", data);
    let Ok(gguf) = GgufFile::open(&path) else { return };
    for info in gguf.tensors() {
        if let Ok(bytes) = gguf.tensor_bytes(info) {
            let ty = info.ggml_type().expect("tensor_bytes checked the type");
            let _ = dequantize(ty, bytes, info.n_elements() as usize);
        }
    }
    if let Ok(config) = LlamaConfig::from_gguf(&gguf) {
        read_every_tensor(&gguf, &config);
    }
    if let Ok(tokenizer) = Tokenizer::from_gguf(&gguf)
        && let Ok(ids) = tokenizer.encode("Hello world <|im_start|>user\n 123 ", true)
    {
        let _ = tokenizer.decode(&ids);
    }
}

/// Every ggml block format from arbitrary bytes: the first byte picks the type, the next two
/// an element count (often not what the bytes hold, to exercise the length checks).
pub fn dequant(data: &[u8]) {
    let [pick, lo, hi, bytes @ ..] = data else { return };
    let ty = GgmlType::ALL[*pick as usize % GgmlType::ALL.len()];
    let asked = u16::from_le_bytes([*lo, *hi]) as usize;
    let _ = dequantize(ty, bytes, asked);
    // The count the bytes would hold in whole blocks, as a file's tensor would be sized.
    let whole = bytes.len() / ty.block_bytes() * ty.block_elements();
    if let Ok(values) = dequantize(ty, &bytes[..whole / ty.block_elements() * ty.block_bytes()], whole) {
        assert_eq!(values.len(), whole);
    }
}

/// A safetensors file (header lengths, JSON directory, offsets, dtypes) as a model directory's
/// `model.safetensors`, then every tensor the model asks for read from it.
pub fn safetensors(data: &[u8]) {
    let fixed = || vec![("config.json", TINY_CONFIG.as_bytes().to_vec())];
    hf_folder("safetensors", fixed, ("model.safetensors", data));
}

/// `model.safetensors.index.json` beside two well-formed shards: names that are not file
/// names, missing shards, tensors listed where they are not.
pub fn shard_index(data: &[u8]) {
    let fixed = || {
        let tensors = tiny_tensors();
        let (first, second) = tensors.split_at(5);
        vec![
            ("model-00001-of-00002.safetensors", safetensors_file(first)),
            ("model-00002-of-00002.safetensors", safetensors_file(second)),
            ("config.json", TINY_CONFIG.as_bytes().to_vec()),
        ]
    };
    hf_folder("shards", fixed, ("model.safetensors.index.json", data));
}

/// `config.json` (shape, RoPE parameters and scaling, architecture) beside a tiny
/// `model.safetensors`; a config that passes has its tensors read at the shapes it implies.
pub fn hf_config(data: &[u8]) {
    let fixed = || vec![("model.safetensors", safetensors_file(&tiny_tensors()))];
    hf_folder("config", fixed, ("config.json", data));
}

/// A Hugging Face folder `name` of `fixed` files (written once, the first time) and one fuzzed
/// file: opened, then every tensor its config asks for read and its chat template looked up.
fn hf_folder(name: &str, fixed: impl FnOnce() -> Vec<(&'static str, Vec<u8>)>, (file, data): (&str, &[u8])) {
    let dir = scratch().join(name);
    if !dir.exists() {
        std::fs::create_dir_all(&dir).expect("dir");
        for (fixed_name, bytes) in fixed() {
            put(&dir, fixed_name, &bytes);
        }
    }
    put(&dir, file, data);
    if let Ok(model) = HfModel::open(&dir) {
        read_every_tensor(&model, &model.config.llama);
        let _ = model.chat_template();
    }
}

/// A Hugging Face `tokenizer.json`; one that loads encodes (special tokens parsed) and decodes.
pub fn tokenizer_json(data: &[u8]) {
    let path = put(&scratch(), "tokenizer.json", data);
    let Ok(tokenizer) = Tokenizer::from_file(&path, None) else { return };
    for parse_special in [true, false] {
        if let Ok(ids) = tokenizer.encode("Hello world <|im_start|>user\n 123 ünï ", parse_special) {
            let _ = tokenizer.decode(&ids);
        }
    }
}

/// Meta's tiktoken `tokenizer.model` (base64 token, rank per line); one that loads encodes and
/// decodes.
pub fn tiktoken(data: &[u8]) {
    let path = put(&scratch(), "tokenizer.model", data);
    let Ok(tokenizer) = Tokenizer::from_tiktoken(&path) else { return };
    if let Ok(ids) = tokenizer.encode("Hello world <|begin_of_text|> 123 ünï", true) {
        let _ = tokenizer.decode(&ids);
    }
}

/// A chat template from a model file rendered over a short conversation: hostile templates
/// must fail with an error, within bounded work and output.
pub fn chat_template(data: &[u8]) {
    let source = String::from_utf8_lossy(data);
    let template = ChatTemplate::new(&source, "<s>", "</s>");
    let messages =
        [Message::new("system", "Be brief."), Message::new("user", "Hi"), Message::new("assistant", "Hello")];
    let _ = template.render(&messages, true);
}

/// A folder of this thread's own under the temp dir (tests run bodies on several threads);
/// targets overwrite their files each run.
fn scratch() -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let dir = std::env::temp_dir().join(format!("llama-fuzz-{}-{thread}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Writes `bytes` to `dir/name` and returns the path.
fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write fuzz input");
    path
}

/// The config.json of [`tiny_safetensors`]: one layer, dim 8, 2 heads, 1 KV head, FFN 16,
/// vocab 16.
const TINY_CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
    "intermediate_size": 16, "vocab_size": 16, "max_position_embeddings": 32,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": true}"#;

/// Every tensor of [`TINY_CONFIG`]'s model with its shape.
pub fn tiny_tensors() -> Vec<(String, Vec<usize>)> {
    let layer = |part: &str| format!("model.layers.0.{part}.weight");
    vec![
        ("model.embed_tokens.weight".into(), vec![16, 8]),
        ("model.norm.weight".into(), vec![8]),
        (layer("input_layernorm"), vec![8]),
        (layer("post_attention_layernorm"), vec![8]),
        (layer("self_attn.q_proj"), vec![8, 8]),
        (layer("self_attn.k_proj"), vec![4, 8]),
        (layer("self_attn.v_proj"), vec![4, 8]),
        (layer("self_attn.o_proj"), vec![8, 8]),
        (layer("mlp.gate_proj"), vec![16, 8]),
        (layer("mlp.up_proj"), vec![16, 8]),
        (layer("mlp.down_proj"), vec![8, 16]),
    ]
}

/// A valid safetensors file holding `tensors` in F32.
pub fn safetensors_file(tensors: &[(String, Vec<usize>)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut offset = 0;
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let bytes = 4 * shape.iter().product::<usize>();
        let sep = if i == 0 { "" } else { "," };
        header += &format!(
            r#"{sep}"{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{offset},{}]}}"#,
            offset + bytes
        );
        offset += bytes;
    }
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, offset));
    out
}

/// Reads every tensor a model of `config`'s shape asks for, as the loader would, and
/// dequantizes what is found: lookups, shape checks and dtype mapping on fuzzed entries.
fn read_every_tensor(file: &dyn TensorFile, config: &LlamaConfig) {
    let (dim, kv, ffn, vocab) = (config.dim, config.kv_dim(), config.ffn_dim, config.vocab_size);
    let mut wanted = vec![
        (ModelTensor::TokenEmbedding, vec![vocab, dim]),
        (ModelTensor::Output, vec![vocab, dim]),
        (ModelTensor::OutputNorm, vec![dim]),
    ];
    for i in 0..config.n_layers.min(4) {
        use LayerTensor::*;
        for (part, shape) in [
            (AttentionNorm, vec![dim]),
            (Q, vec![dim, dim]),
            (K, vec![kv, dim]),
            (V, vec![kv, dim]),
            (AttentionOutput, vec![dim, dim]),
            (FeedForwardNorm, vec![dim]),
            (Gate, vec![ffn, dim]),
            (Up, vec![ffn, dim]),
            (Down, vec![dim, ffn]),
        ] {
            wanted.push((ModelTensor::Layer(i, part), shape));
        }
    }
    for (tensor, shape) in wanted {
        if let Ok((ty, bytes)) = file.tensor(&file.name(tensor), &shape) {
            let _ = dequantize(ty, bytes, shape.iter().product());
        }
    }
    let _ = file.rope_frequency_factors(config.head_dim());
}

/// Starting inputs for every target, derived from the real files set-up fetched (the default
/// GGUF, the Hugging Face directories, the Llama 3.2 tokenizer): `(target, name, bytes)`. Kept
/// small, since every input is run at each start and a big one slows every mutation of it.
pub fn seeds(models: &Path) -> std::io::Result<Vec<(&'static str, String, Vec<u8>)>> {
    let read = |path: &str| std::fs::read(models.join(path));
    let mut seeds = Vec::new();
    let gguf_path = models.join(llama_app::cli::DEFAULT_MODEL_FILE);
    let real_gguf = std::fs::read(&gguf_path)?;
    seeds.push(("gguf", "default-model-first-64k".into(), real_gguf[..real_gguf.len().min(64 << 10)].to_vec()));
    seeds.push(("gguf", "small-model".into(), small_gguf(&gguf_path)?));

    let source = GgufFile::open(&gguf_path).map_err(std::io::Error::other)?;
    for (index, ty) in GgmlType::ALL.iter().enumerate() {
        let found = source.tensors().iter().find(|t| t.ggml_type() == Some(*ty));
        let block = match found.and_then(|t| source.tensor_bytes(t).ok()) {
            Some(bytes) => bytes[..bytes.len().min(4 * ty.block_bytes())].to_vec(),
            None => (0..2 * ty.block_bytes()).map(|i| (i * 37 % 251) as u8).collect(),
        };
        let count = (block.len() / ty.block_bytes() * ty.block_elements()) as u16;
        let mut input = vec![index as u8];
        input.extend(count.to_le_bytes());
        input.extend(block);
        seeds.push(("dequant", ty.name().to_string(), input));
    }

    seeds.push(("safetensors", "tiny".into(), safetensors_file(&tiny_tensors())));
    for dir in ["hf/smollm2-f32", "hf/smollm2-bf16"] {
        let file = read(&format!("{dir}/model.safetensors"))?;
        let header_len = 8 + u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
        seeds.push((
            "safetensors",
            format!("{}-header", dir.replace('/', "-")),
            file[..header_len.min(file.len())].to_vec(),
        ));
    }

    seeds.push(("shard_index", "real".into(), read("hf/smollm2-f32-sharded/model.safetensors.index.json")?));
    let tensors = tiny_tensors();
    let map: Vec<String> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!("\"{name}\": \"model-0000{}-of-00002.safetensors\"", 1 + usize::from(i >= 5)))
        .collect();
    seeds.push(("shard_index", "tiny".into(), format!("{{\"weight_map\": {{{}}}}}", map.join(", ")).into_bytes()));

    seeds.push(("hf_config", "real".into(), read("hf/smollm2-f32/config.json")?));
    seeds.push(("hf_config", "tiny".into(), TINY_CONFIG.as_bytes().to_vec()));
    let llama3 = TINY_CONFIG.replace(
        "\"tie_word_embeddings\": true",
        "\"tie_word_embeddings\": true, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32.0, \
         \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}",
    );
    seeds.push(("hf_config", "tiny-llama3-rope".into(), llama3.into_bytes()));

    for (name, path) in [("smollm2", "hf/smollm2-f32/tokenizer.json"), ("llama-3.2", "llama-3.2/tokenizer.json")] {
        seeds.push(("tokenizer_json", name.into(), small_tokenizer_json(&read(path)?, 300)?));
    }
    let tiktoken = read("llama-3.2/tokenizer.model")?;
    let lines: Vec<&[u8]> = tiktoken.split(|&b| b == b'\n').take(300).collect();
    seeds.push(("tiktoken", "llama-3.2-first-300".into(), lines.join(&b'\n')));

    seeds.push(("chat_template", "smollm2".into(), read("hf/smollm2-f32/chat_template.jinja")?));
    seeds.push(("chat_template", "llama3".into(), llama_core::chat_template::LLAMA3_TEMPLATE.as_bytes().to_vec()));
    Ok(seeds)
}

/// The default model cut down to a GGUF of a few kilobytes: its tokenizer's first 300 tokens
/// (with the merges among them), part of one layer of dim 32 in several tensor types.
fn small_gguf(path: &Path) -> std::io::Result<Vec<u8>> {
    use crate::gguf_writer::GgufWriter;
    use llama_core::gguf::Value;
    let source = GgufFile::open(path).map_err(std::io::Error::other)?;
    let mut w = GgufWriter::new();
    for (key, value) in source.metadata() {
        let value = match (key.as_str(), value) {
            ("tokenizer.ggml.tokens" | "tokenizer.ggml.token_type", Value::Array(items)) => {
                Value::Array(items[..300].to_vec())
            }
            ("tokenizer.ggml.merges", Value::Array(items)) => {
                let tokens = source.string_array("tokenizer.ggml.tokens").map_err(std::io::Error::other)?;
                let kept: std::collections::HashSet<&str> = tokens[..300].iter().map(String::as_str).collect();
                let inside = |m: &&Value| match m {
                    Value::String(m) => m.split_once(' ').is_some_and(|(l, r)| {
                        kept.contains(l) && kept.contains(r) && kept.contains(format!("{l}{r}").as_str())
                    }),
                    _ => false,
                };
                Value::Array(items.iter().filter(inside).cloned().collect())
            }
            ("llama.embedding_length", _) => Value::U32(32),
            ("llama.feed_forward_length", _) => Value::U32(32),
            ("llama.block_count", _) => Value::U32(1),
            ("llama.attention.head_count", _) => Value::U32(2),
            ("llama.attention.head_count_kv", _) => Value::U32(1),
            ("llama.vocab_size", _) => Value::U32(300),
            ("tokenizer.chat_template", _) => continue,
            _ => value.clone(),
        };
        w.metadata(key, value);
    }
    let pattern = |n: usize| (0..n).map(|i| (i * 31 % 253) as u8).collect::<Vec<u8>>();
    let mut tensor = |name: &str, shape: &[usize], ty: GgmlType| {
        let bytes = ty.bytes_for(shape.iter().product()).expect("whole blocks");
        w.tensor(name, shape, ty, pattern(bytes));
    };
    // Types of 32-element blocks, so that rows of 32 hold whole blocks.
    tensor("token_embd.weight", &[300, 32], GgmlType::Q8_0);
    tensor("output_norm.weight", &[32], GgmlType::F32);
    tensor("blk.0.attn_q.weight", &[32, 32], GgmlType::Q4_1);
    tensor("blk.0.attn_k.weight", &[16, 32], GgmlType::Q4_0);
    tensor("blk.0.ffn_up.weight", &[32, 32], GgmlType::F16);
    tensor("blk.0.ffn_down.weight", &[32, 32], GgmlType::BF16);
    let mut out = Vec::new();
    w.write(&mut out)?;
    Ok(out)
}

/// A tokenizer.json keeping its first `keep` ids: the vocabulary, the added tokens and the merges
/// among them.
fn small_tokenizer_json(text: &[u8], keep: u64) -> std::io::Result<Vec<u8>> {
    use serde_json::Value as Json;
    let mut json: Json = serde_json::from_slice(text).map_err(std::io::Error::other)?;
    let vocab = json["model"]["vocab"].as_object_mut().ok_or_else(|| std::io::Error::other("no model.vocab"))?;
    vocab.retain(|_, id| id.as_u64().is_some_and(|id| id < keep));
    let kept: std::collections::HashSet<String> = vocab.keys().cloned().collect();
    let merge_parts = |m: &Json| match (m.as_str(), m[0].as_str(), m[1].as_str()) {
        (Some(pair), ..) => pair.split_once(' ').map(|(l, r)| (l.to_string(), r.to_string())),
        (None, Some(l), Some(r)) => Some((l.to_string(), r.to_string())),
        _ => None,
    };
    if let Some(merges) = json["model"]["merges"].as_array_mut() {
        merges.retain(|m| {
            merge_parts(m)
                .is_some_and(|(l, r)| kept.contains(&l) && kept.contains(&r) && kept.contains(&(l.clone() + &r)))
        });
    }
    if let Some(added) = json["added_tokens"].as_array_mut() {
        added.retain(|t| t["id"].as_u64().is_some_and(|id| id < keep));
    }
    json["post_processor"] = Json::Null;
    serde_json::to_vec(&json).map_err(std::io::Error::other)
}
