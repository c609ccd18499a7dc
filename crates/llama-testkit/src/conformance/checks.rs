//! The checks every binary's tests run: greedy ids and logits against llama.cpp (pipelined or
//! not), bad inputs, the benchmark's report, a synthetic Llama 3 model, half precision.

use std::path::Path;

use llama_app::cli::models_dir;
use llama_core::dequant::GgmlType;
use llama_core::gguf::{GgufFile, Value};

use super::harness::{
    EXPECTED_CONTINUATIONS, LOGIT_TOLERANCE, ReferenceCase, RunOutput, default_model, expect_error, greedy_json,
    max_logit_delta, reference, run,
};
use crate::gguf_writer::GgufWriter;

/// Every reference case: same prompt ids, same greedy ids, logits within [`LOGIT_TOLERANCE`].
/// Returns the largest logit difference seen.
pub fn check_against_llamacpp(binary: &str, extra: &[&str]) -> f32 {
    check_model_against_llamacpp(binary, &default_model(), extra)
}

/// [`check_against_llamacpp`] on `model`: another file or directory holding the same weights.
pub fn check_model_against_llamacpp(binary: &str, model: &Path, extra: &[&str]) -> f32 {
    let reference = reference();
    let mut worst = 0.0f32;
    for case in &reference.cases {
        let ours = greedy_json(binary, model, &case.prompt, case.generated_tokens.len(), extra);
        worst = worst.max(assert_like_llamacpp(case, &ours));
    }
    eprintln!(
        "{binary} on {}: {} cases equal to llama.cpp, max |Δlogit| {worst:.2e}",
        model.display(),
        reference.cases.len()
    );
    worst
}

/// One run against its reference case: the same prompt ids and greedy ids, the expected text,
/// logits within [`LOGIT_TOLERANCE`]; returns the largest logit difference.
pub fn assert_like_llamacpp(case: &ReferenceCase, ours: &RunOutput) -> f32 {
    assert_eq!(ours.prompt_tokens, case.prompt_tokens, "prompt ids differ for {:?}", case.prompt);
    assert_eq!(
        ours.generated_tokens, case.generated_tokens,
        "greedy ids differ from llama.cpp for {:?}: ours {:?}, llama.cpp {:?}",
        case.prompt, ours.text, case.text
    );
    // Text is not compared with llama.cpp's: it drops special tokens (the third case meets
    // <|im_end|> under --ignore-eos) where we print them. The ids above are the ground truth.
    if let Some((_, expected)) = EXPECTED_CONTINUATIONS.iter().find(|(prompt, _)| *prompt == case.prompt) {
        assert!(
            ours.text.starts_with(expected),
            "{:?} continued as {:?}, expected {expected:?}",
            case.prompt,
            ours.text
        );
    }
    assert_eq!(ours.top_logits.len(), case.top_logits.len());
    let mut worst = 0.0f32;
    for (step, (a, b)) in ours.top_logits.iter().zip(&case.top_logits).enumerate() {
        let delta = max_logit_delta(a, b);
        assert!(
            delta <= LOGIT_TOLERANCE,
            "{:?} step {step}: |Δlogit| {delta} > {LOGIT_TOLERANCE}: ours {a:?}, llama.cpp {b:?}",
            case.prompt
        );
        worst = worst.max(delta);
    }
    worst
}

/// Greedy decoding one step ahead of the host (ids read one step behind) and one step at a
/// time give llama.cpp's ids on every reference case. `--top-logits 0` keeps the run plain
/// greedy, the only kind pipelined; `pipelined` says whether the binary pipelines it here.
pub fn check_pipelined_greedy(binary: &str, pipelined: bool) {
    let model = default_model();
    for case in &reference().cases {
        let max = case.generated_tokens.len();
        let ahead = greedy_json(binary, &model, &case.prompt, max, &["--top-logits", "0"]);
        let one_by_one = greedy_json(binary, &model, &case.prompt, max, &["--top-logits", "0", "--no-pipeline"]);
        assert_eq!((ahead.greedy_pipelined, one_by_one.greedy_pipelined), (pipelined, false), "{:?}", case.prompt);
        assert_eq!(
            ahead.generated_tokens, case.generated_tokens,
            "pipelined ids differ from llama.cpp's for {:?}",
            case.prompt
        );
        assert_eq!(
            one_by_one.generated_tokens, case.generated_tokens,
            "ids differ from llama.cpp's for {:?}",
            case.prompt
        );
    }
}

/// A tiny Llama-shaped GGUF (1 layer, dim 64, context 32) with SmolLM2's tokenizer and the
/// given architecture name and `attn_q` type id, for error-path tests.
pub fn write_tiny_model(path: &Path, arch: &str, attn_q_type_id: u32) {
    let source = GgufFile::open(default_model()).expect("default model opens");
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", Value::String(arch.to_string()));
    let (dim, ffn, vocab) = (64usize, 128usize, 49152usize);
    for (key, value) in [
        ("block_count", 1u32),
        ("context_length", 32),
        ("embedding_length", dim as u32),
        ("feed_forward_length", ffn as u32),
        ("attention.head_count", 2),
        ("attention.head_count_kv", 1),
    ] {
        w.metadata(&format!("llama.{key}"), Value::U32(value));
    }
    w.metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    for (key, value) in source.metadata() {
        if key.starts_with("tokenizer.") {
            w.metadata(key, value.clone());
        }
    }
    let f32_bytes = |n: usize| (0..n).flat_map(|i| ((i % 7) as f32 * 0.01).to_le_bytes()).collect::<Vec<u8>>();
    let kv = dim / 2;
    let matrix = |w: &mut GgufWriter, name: &str, rows: usize, cols: usize| {
        w.tensor(name, &[rows, cols], GgmlType::F32, f32_bytes(rows * cols));
    };
    matrix(&mut w, "token_embd.weight", vocab, dim);
    for name in ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"] {
        w.tensor(name, &[dim], GgmlType::F32, f32_bytes(dim));
    }
    match GgmlType::from_id(attn_q_type_id) {
        Some(ty) => {
            let bytes = ty.bytes_for(dim * dim).expect("whole blocks");
            w.tensor("blk.0.attn_q.weight", &[dim, dim], ty, vec![0u8; bytes])
        }
        None => w.tensor_with_type_id(
            "blk.0.attn_q.weight",
            vec![dim as u64, dim as u64],
            attn_q_type_id,
            vec![0u8; dim * dim],
        ),
    };
    matrix(&mut w, "blk.0.attn_k.weight", kv, dim);
    matrix(&mut w, "blk.0.attn_v.weight", kv, dim);
    matrix(&mut w, "blk.0.attn_output.weight", dim, dim);
    matrix(&mut w, "blk.0.ffn_gate.weight", ffn, dim);
    matrix(&mut w, "blk.0.ffn_up.weight", ffn, dim);
    matrix(&mut w, "blk.0.ffn_down.weight", dim, ffn);
    w.write_new_file(path).expect("write tiny model");
}

/// Every bad input the foundation issue lists, each with the words its error must contain.
pub fn check_bad_inputs(binary: &str, scratch: &Path) {
    std::fs::create_dir_all(scratch).expect("scratch dir");
    let p = |name: &str| scratch.join(name);
    let arg = |path: &Path| path.to_str().expect("utf-8 path").to_string();
    let one_shot = |model: &Path, extra: &[&str]| {
        let mut args =
            vec!["--model".to_string(), arg(model), "--prompt".into(), "hi".into(), "--max-tokens".into(), "1".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let check = |args: Vec<String>, expected: &str| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_error(binary, &refs, expected)
    };

    let stderr = check(one_shot(&p("does-not-exist.gguf"), &[]), "cannot open model file");
    // Each cause said once (a source error printed by its wrapper was once repeated after it).
    assert_eq!(stderr.matches("os error 2").count(), 1, "a cause said twice: {stderr}");

    std::fs::write(p("notes.gguf"), "just some text, not a model\n").unwrap();
    check(one_shot(&p("notes.gguf"), &[]), "is not a GGUF file");

    let real = std::fs::read(default_model()).expect("read default model");
    std::fs::write(p("header-cut.gguf"), &real[..4096]).unwrap();
    check(one_shot(&p("header-cut.gguf"), &[]), "is truncated");
    std::fs::write(p("data-cut.gguf"), &real[..real.len() / 2]).unwrap();
    check(one_shot(&p("data-cut.gguf"), &[]), "is truncated: the data of tensor");

    let fresh = |name: &str| {
        let path = p(name);
        let _ = std::fs::remove_file(&path);
        path
    };
    let iq2 = GgmlType::from_id(16).expect("IQ2_XXS is id 16");
    let unsupported = fresh("iq2.gguf");
    write_tiny_model(&unsupported, "llama", iq2.id());
    check(one_shot(&unsupported, &[]), "blk.0.attn_q.weight");
    check(one_shot(&unsupported, &[]), iq2.name());

    let unknown = fresh("unknown-type.gguf");
    write_tiny_model(&unknown, "llama", 999);
    check(one_shot(&unknown, &[]), "type id 999");

    let qwen = fresh("qwen.gguf");
    write_tiny_model(&qwen, "qwen2", GgmlType::F32.id());
    check(one_shot(&qwen, &[]), "architecture `qwen2` is not supported");

    let long_prompt = "one two three four five six seven eight nine ten ".repeat(8);
    let tiny = fresh("tiny.gguf");
    write_tiny_model(&tiny, "llama", GgmlType::F32.id());
    let mut args = one_shot(&tiny, &["--raw"]);
    args[3] = long_prompt.clone();
    check(args, "longer than the context of 32 tokens");
    let mut args = one_shot(&default_model(), &["--raw", "--ctx-size", "16"]);
    args[3] = long_prompt;
    check(args, "longer than the context of 16 tokens");

    check(one_shot(&default_model(), &["--size", "8B"]), "--size 8B");
    check(one_shot(&default_model(), &["--device", "tpu"]), "unknown --device `tpu`");
}

/// `--benchmark --json` on the default model reports every figure, each a positive number.
pub fn check_benchmark_json(binary: &str) {
    let model = default_model();
    let args = ["--benchmark", "--model", model.to_str().expect("utf-8 path"), "--json"];
    let out = run(binary, &[&args[..], &["--iterations", "2", "--prompt-tokens", "5", "--gen-tokens", "3"]].concat());
    assert!(out.status.success(), "{binary} --benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["runs"].as_array().map(Vec::len), Some(2), "{report}");
    assert_eq!(report["generated_tokens"].as_array().map(Vec::len), Some(3), "the last run's tokens in {report}");
    for key in ["load_s", "weight_bytes_per_token", "peak_host_rss_bytes"] {
        assert!(report[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {report}");
    }
    let summary = &report["summary"];
    for key in ["time_to_first_token_s", "prefill_tok_s", "decode_tok_s", "weight_gb_s"] {
        assert!(summary[key].as_f64().is_some_and(|v| v > 0.0), "summary.{key} in {report}");
    }
    for key in ["mean_ms", "median_ms", "p10_ms", "p90_ms"] {
        assert!(summary["decode_latency"][key].as_f64().is_some_and(|v| v > 0.0), "decode_latency.{key} in {report}");
    }
}

/// A synthetic Llama 3.2 1B-shaped model (one layer, Q8_0, real Llama 3 tokenizer) written by
/// [`crate::synth`] loads and generates: the prompt tokenizes as Hugging Face's tokenizer does.
pub fn check_synthetic_model(binary: &str, scratch: &Path) {
    std::fs::create_dir_all(scratch).expect("scratch dir");
    let path = scratch.join("synthetic-1b-1layer-q8_0.gguf");
    let _ = std::fs::remove_file(&path);
    let root = models_dir().join("..");
    let opts = crate::synth::SynthOptions {
        size: llama_core::config::ModelSize::B1,
        weights: llama_core::random::WeightType::Q8_0,
        out: path.clone(),
        tokenizer: "models/llama-3.2/tokenizer.json".into(),
        seed: 7,
        layers: Some(1),
    };
    crate::synth::write(&root, &opts).expect("write synthetic model");
    let out = greedy_json(binary, &path, "Hello there", 3, &[]);
    std::fs::remove_file(&path).expect("remove synthetic model");
    // <|begin_of_text|> "Hello" " there", as Hugging Face's Llama 3.2 tokenizer gives.
    assert_eq!(out.prompt_tokens, [128000, 9906, 1070]);
    assert_eq!(out.generated_tokens.len(), 3);
}

/// `--half` runs in 16-bit and still counts "1, 2, 3, 4," on (its greedy margins are wide).
pub fn check_half_precision(binary: &str) {
    let model = default_model();
    let case = reference().cases.into_iter().find(|c| c.prompt == "1, 2, 3, 4,").expect("counting case");
    let out = run(
        binary,
        &["--model", model.to_str().expect("utf-8 path"), "--half", "--raw", "--temperature", "0"]
            .into_iter()
            .chain(["--max-tokens", "12", "--ignore-eos", "--json", "--prompt", &case.prompt])
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{binary} --half failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(matches!(report["dtype"].as_str(), Some("f16" | "bf16")), "{report}");
    let ids: Vec<u32> = serde_json::from_value(report["generated_tokens"].clone()).expect("ids");
    assert_eq!(ids, case.generated_tokens[..12], "{binary} --half: {}", report["text"]);
}
