//! What the conformance checks share: llama.cpp's reference, the default model, running a
//! binary and reading its `--json`, and expecting a clean error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;

use llama_app::cli::{DEFAULT_MODEL_FILE, models_dir};

/// Largest |Δlogit| accepted against llama.cpp on the F32 copy of the model. Both compute in
/// f32; the difference is summation order (measured values are in docs/correctness.md).
pub const LOGIT_TOLERANCE: f32 = 5e-4;

/// What a person checks by eye (the foundation issue's examples), on top of the ids.
pub const EXPECTED_CONTINUATIONS: &[(&str, &str)] =
    &[("1, 2, 3, 4,", " 5, 6, 7, 8, 9, 10, 11, 12, 13,"), ("The capital of France is", " Paris.")];

/// `fixtures/smollm2_llamacpp_greedy.json`, written by scripts/make_llamacpp_reference.py.
#[derive(Debug, Deserialize)]
pub struct Reference {
    pub source: String,
    pub cases: Vec<ReferenceCase>,
}

#[derive(Debug, Deserialize)]
pub struct ReferenceCase {
    pub prompt: String,
    pub prompt_tokens: Vec<u32>,
    pub generated_tokens: Vec<u32>,
    pub text: String,
    /// Per generated token: the 8 largest `(id, logit)` at the position that produced it.
    pub top_logits: Vec<Vec<(u32, f32)>>,
}

/// What a binary prints with `--json` (the fields checked here).
#[derive(Debug, Deserialize)]
pub struct RunOutput {
    pub prompt_tokens: Vec<u32>,
    pub generated_tokens: Vec<u32>,
    pub text: String,
    pub top_logits: Vec<Vec<(u32, f32)>>,
    pub greedy_pipelined: bool,
}

pub fn reference() -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smollm2_llamacpp_greedy.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The default model, or a panic telling the developer how to get it.
pub fn default_model() -> PathBuf {
    let path = models_dir().join(DEFAULT_MODEL_FILE);
    assert!(path.exists(), "{} is missing: run `cargo xtask setup` first", path.display());
    path
}

/// Runs `binary` with `args`, returning its output (never panics on a non-zero exit).
pub fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(binary).args(args).output().unwrap_or_else(|e| panic!("cannot run {binary}: {e}"))
}

/// Greedy run of `prompt` on `model` with `--json`.
pub fn greedy_json(binary: &str, model: &Path, prompt: &str, max_tokens: usize, extra: &[&str]) -> RunOutput {
    let max = max_tokens.to_string();
    let mut args = vec!["--model", model.to_str().expect("utf-8 path"), "--raw", "--temperature", "0"];
    args.extend(["--max-tokens", &max, "--ignore-eos", "--json", "--prompt", prompt]);
    args.extend(extra);
    let out = run(binary, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{binary} failed on {prompt:?}: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{binary}: bad --json output ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Largest difference between two top-k lists compared rank by rank (robust to near-ties
/// swapping places, since sorting is 1-Lipschitz in the max norm).
pub fn max_logit_delta(ours: &[(u32, f32)], theirs: &[(u32, f32)]) -> f32 {
    ours.iter().zip(theirs).map(|(a, b)| (a.1 - b.1).abs()).fold(0.0, f32::max)
}

/// Runs `binary` expecting failure: non-zero exit, no panic, and `expected` in stderr.
/// Returns the stderr, for further checks.
pub fn expect_error(binary: &str, args: &[&str], expected: &str) -> String {
    let out = run(binary, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{binary} {args:?} succeeded but should fail with {expected:?}");
    assert_eq!(out.status.code(), Some(1), "{binary} {args:?}: exit {:?}, stderr: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{binary} {args:?} panicked: {stderr}");
    assert!(stderr.contains(expected), "{binary} {args:?}: stderr lacks {expected:?}: {stderr}");
    stderr
}
