//! Hugging Face model directories: the ones transformers made from the default model
//! (scripts/make_hf_model.py, run by `cargo xtask setup`), and broken ones written here.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::checks::assert_like_llamacpp;
use super::harness::{default_model, expect_error, greedy_json, max_logit_delta, reference, run};
use llama_app::cli::models_dir;

/// Largest |Δlogit| accepted between the BF16 directory and llama.cpp on the F32 weights, at the
/// first generated position. BF16 keeps 8 bits of mantissa; docs/correctness.md has the
/// measured values and transformers' own BF16-against-F32 difference.
pub const BF16_LOGIT_TOLERANCE: f32 = 0.25;

/// `models/hf/<name>`, made by set-up.
pub fn hf_dir(name: &str) -> PathBuf {
    let dir = models_dir().join("hf").join(name);
    assert!(dir.join("config.json").is_file(), "{} is missing: run `cargo xtask setup` first", dir.display());
    dir
}

/// `fixtures/smollm2_transformers_greedy.json`, written by `scripts/make_hf_model.py --reference`.
#[derive(Debug, Deserialize)]
pub struct TransformersReference {
    pub source: String,
    pub cases: Vec<TransformersCase>,
}

#[derive(Debug, Deserialize)]
pub struct TransformersCase {
    pub prompt: String,
    pub prompt_tokens: Vec<u32>,
    pub generated_tokens: Vec<u32>,
}

pub fn transformers_reference() -> TransformersReference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smollm2_transformers_greedy.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The F32 directory, one file and sharded, gives llama.cpp's ids and logits on the GGUF's
/// weights and transformers' own greedy ids; the BF16 directory runs and agrees within
/// [`BF16_LOGIT_TOLERANCE`] at the first generated token.
pub fn check_hf_directories(binary: &str) {
    let llamacpp = reference();
    let transformers = transformers_reference();
    // Every case on the one-file directory; the first on the shards (the same weights, found
    // through the index).
    for (name, cases) in [("smollm2-f32", llamacpp.cases.len()), ("smollm2-f32-sharded", 1)] {
        let dir = hf_dir(name);
        let mut worst = 0.0f32;
        for (case, theirs) in llamacpp.cases.iter().zip(&transformers.cases).take(cases) {
            assert_eq!(case.prompt, theirs.prompt, "the two fixtures list the same prompts in the same order");
            let ours = greedy_json(binary, &dir, &case.prompt, theirs.generated_tokens.len(), &[]);
            assert_eq!(ours.prompt_tokens, theirs.prompt_tokens, "{name}: prompt ids differ from transformers'");
            assert_eq!(ours.generated_tokens, theirs.generated_tokens, "{name}: greedy ids differ from transformers'");
            worst = worst.max(assert_like_llamacpp(case, &ours));
        }
        eprintln!("{binary} on {name}: transformers' and llama.cpp's ids, max |Δlogit| {worst:.2e} against llama.cpp");
    }
    let bf16 = hf_dir("smollm2-bf16");
    for case in &llamacpp.cases {
        let ours = greedy_json(binary, &bf16, &case.prompt, 1, &[]);
        assert_eq!(ours.prompt_tokens, case.prompt_tokens);
        let delta = max_logit_delta(&ours.top_logits[0], &case.top_logits[0]);
        assert!(delta <= BF16_LOGIT_TOLERANCE, "bf16 {:?}: |Δlogit| {delta} > {BF16_LOGIT_TOLERANCE}", case.prompt);
        eprintln!("{binary} on smollm2-bf16 {:?}: first-token |Δlogit| {delta:.3} against F32 llama.cpp", case.prompt);
    }
    // --half on a BF16 checkpoint: 16-bit compute still counts on (wide greedy margins).
    let counting = llamacpp.cases.iter().find(|c| c.prompt == "1, 2, 3, 4,").expect("counting case");
    let half = greedy_json(binary, &bf16, &counting.prompt, 6, &["--half", "--top-logits", "0"]);
    assert_eq!(half.generated_tokens, counting.generated_tokens[..6], "--half on BF16: {:?}", half.text);
}

/// One tensor of a safetensors file as written here.
struct Tensor {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Tensor {
    fn f32(name: &str, shape: &[usize]) -> Self {
        let n: usize = shape.iter().product();
        let bytes = (0..n).flat_map(|i| ((i % 7) as f32 * 0.01).to_le_bytes()).collect();
        Self { name: name.into(), dtype: "F32", shape: shape.to_vec(), bytes }
    }
}

/// A safetensors file: u64 header length, the JSON header (padded with spaces to 8 bytes), data.
fn write_safetensors(path: &Path, header: &Json, data: &[u8]) {
    let mut text = header.to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text.as_bytes());
    out.extend(data);
    std::fs::write(path, out).expect("write safetensors");
}

/// `tensors` laid end to end, each header entry as its offsets say.
fn write_tensors(path: &Path, tensors: &[Tensor]) {
    let (mut header, mut data) = (serde_json::Map::new(), Vec::new());
    for t in tensors {
        let offsets = [data.len(), data.len() + t.bytes.len()];
        header.insert(t.name.clone(), json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": offsets}));
        data.extend(&t.bytes);
    }
    write_safetensors(path, &Json::Object(header), &data);
}

/// A one-layer Llama (dim 64, 2 heads, 1 KV head) with SmolLM2's tokenizer, tied head.
fn tiny_tensors() -> Vec<Tensor> {
    let (dim, kv, ffn, vocab) = (64, 32, 128, 49152);
    let layer = |part: &str| format!("model.layers.0.{part}.weight");
    vec![
        Tensor::f32("model.embed_tokens.weight", &[vocab, dim]),
        Tensor::f32("model.norm.weight", &[dim]),
        Tensor::f32(&layer("input_layernorm"), &[dim]),
        Tensor::f32(&layer("post_attention_layernorm"), &[dim]),
        Tensor::f32(&layer("self_attn.q_proj"), &[dim, dim]),
        Tensor::f32(&layer("self_attn.k_proj"), &[kv, dim]),
        Tensor::f32(&layer("self_attn.v_proj"), &[kv, dim]),
        Tensor::f32(&layer("self_attn.o_proj"), &[dim, dim]),
        Tensor::f32(&layer("mlp.gate_proj"), &[ffn, dim]),
        Tensor::f32(&layer("mlp.up_proj"), &[ffn, dim]),
        Tensor::f32(&layer("mlp.down_proj"), &[dim, ffn]),
    ]
}

fn tiny_config(architecture: &str) -> Json {
    json!({
        "architectures": [architecture], "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 128, "vocab_size": 49152,
        "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "hidden_act": "silu", "torch_dtype": "float32"
    })
}

/// A fresh directory `name` under `scratch` with the tiny model's config and tokenizer (not its
/// weights).
fn tiny_dir(scratch: &Path, name: &str, architecture: &str) -> PathBuf {
    let dir = scratch.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(dir.join("config.json"), tiny_config(architecture).to_string()).expect("config.json");
    std::fs::copy(hf_dir("smollm2-f32").join("tokenizer.json"), dir.join("tokenizer.json")).expect("tokenizer.json");
    dir
}

/// Every broken directory the issue lists is refused with its cause named and exit 1, and the
/// well-formed tiny one beside them runs (so each refusal is for the reason named).
pub fn check_bad_directories(binary: &str, scratch: &Path) {
    let one_shot = |model: &Path| {
        let model = model.to_str().expect("utf-8 path").to_string();
        vec!["--model".into(), model, "--raw".into(), "--prompt".into(), "hi".into(), "--max-tokens".into(), "1".into()]
    };
    let check = |model: &Path, expected: &str| {
        let args = one_shot(model);
        expect_error(binary, &args.iter().map(String::as_str).collect::<Vec<_>>(), expected);
    };

    let good = tiny_dir(scratch, "good", "LlamaForCausalLM");
    write_tensors(&good.join("model.safetensors"), &tiny_tensors());
    let out = run(binary, &one_shot(&good).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "the well-formed tiny directory failed: {}", String::from_utf8_lossy(&out.stderr));

    let no_config = tiny_dir(scratch, "no-config", "LlamaForCausalLM");
    std::fs::remove_file(no_config.join("config.json")).unwrap();
    check(&no_config, "holds no model: expected config.json");

    let mistral = tiny_dir(scratch, "mistral", "MistralForCausalLM");
    write_tensors(&mistral.join("model.safetensors"), &tiny_tensors());
    check(&mistral, "[\"MistralForCausalLM\"] is not supported");

    let sharded = tiny_dir(scratch, "missing-shard", "LlamaForCausalLM");
    let mut first = tiny_tensors();
    let second = first.split_off(5);
    write_tensors(&sharded.join("model-00001-of-00002.safetensors"), &first);
    let weight_map: serde_json::Map<String, Json> = first
        .iter()
        .map(|t| (t.name.clone(), json!("model-00001-of-00002.safetensors")))
        .chain(second.iter().map(|t| (t.name.clone(), json!("model-00002-of-00002.safetensors"))))
        .collect();
    let index = json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(sharded.join("model.safetensors.index.json"), index.to_string()).unwrap();
    check(&sharded, "model-00002-of-00002.safetensors (listed in model.safetensors.index.json) is missing");

    let with = |name: &str, edit: &dyn Fn(&mut Vec<Tensor>)| {
        let dir = tiny_dir(scratch, name, "LlamaForCausalLM");
        let mut tensors = tiny_tensors();
        edit(&mut tensors);
        write_tensors(&dir.join("model.safetensors"), &tensors);
        dir
    };
    let down = "model.layers.0.mlp.down_proj.weight";
    check(&with("missing-tensor", &|t| t.retain(|t| t.name != down)), &format!("tensor `{down}` is missing"));
    let q = "model.layers.0.self_attn.q_proj.weight";
    let reshaped = with("wrong-shape", &|t| t.iter_mut().filter(|t| t.name == q).for_each(|t| t.shape = vec![32, 128]));
    check(&reshaped, &format!("tensor `{q}` has shape [32, 128], the model config needs [64, 64]"));
    for dtype in ["I8", "F8_E4M3"] {
        let v = "model.layers.0.self_attn.v_proj.weight";
        let retyped = with(&format!("dtype-{dtype}"), &|t| {
            let t = t.iter_mut().find(|t| t.name == v).expect("v_proj");
            (t.dtype, t.bytes) = (dtype, vec![1u8; 32 * 64]);
        });
        check(&retyped, &format!("tensor `{v}` is {dtype}; supported dtypes are F32, F16 and BF16"));
    }

    let past_end = tiny_dir(scratch, "offsets-past-end", "LlamaForCausalLM");
    let header = json!({"model.norm.weight": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}});
    write_safetensors(&past_end.join("model.safetensors"), &header, &[0u8; 256]);
    check(&past_end, "model.safetensors: not a valid safetensors file: its tensors end at data byte 4096");
    let overlap = tiny_dir(scratch, "offsets-overlap", "LlamaForCausalLM");
    let header = json!({
        "model.norm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]},
        "model.layers.0.input_layernorm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [128, 384]},
    });
    write_safetensors(&overlap.join("model.safetensors"), &header, &[0u8; 384]);
    check(&overlap, "not a valid safetensors file: invalid offset");

    let meta = tiny_dir(scratch, "meta-original", "LlamaForCausalLM");
    std::fs::remove_file(meta.join("config.json")).unwrap();
    std::fs::create_dir_all(meta.join("original")).unwrap();
    std::fs::write(meta.join("original/params.json"), "{\"dim\": 64}").unwrap();
    std::fs::write(meta.join("original/consolidated.00.pth"), b"PK\x03\x04 not unpickled").unwrap();
    check(&meta, "consolidated.00.pth is a PyTorch pickle checkpoint");
    check(&meta.join("original/consolidated.00.pth"), "use the model's safetensors");

    let ggufs = scratch.join("two-ggufs");
    let _ = std::fs::remove_dir_all(&ggufs);
    std::fs::create_dir_all(&ggufs).unwrap();
    for name in ["a.gguf", "b.gguf"] {
        std::os::unix::fs::symlink(default_model(), ggufs.join(name)).unwrap();
    }
    check(&ggufs, "holds several GGUF files (a.gguf, b.gguf)");
    std::fs::remove_file(ggufs.join("b.gguf")).unwrap();
    let out = run(binary, &one_shot(&ggufs).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "a folder with one GGUF failed: {}", String::from_utf8_lossy(&out.stderr));
}
