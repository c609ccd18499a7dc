//! `cargo xtask synth-model` writes files llama.cpp's own reader (PyPI `gguf`) accepts, and
//! never overwrites. (That both binaries load and run one is in their conformance tests.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn synth(out: &Path, dtype: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["synth-model", "--size", "1B", "--layers", "1", "--dtype", dtype, "--out"])
        .arg(out)
        .output()
        .expect("run xtask")
}

#[test]
fn gguf_python_reader_accepts_synthetic_models() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("synth-model-test");
    std::fs::create_dir_all(&dir).unwrap();
    for dtype in ["q4_0", "f16"] {
        let out = dir.join(format!("llama-1b-1layer-{dtype}.gguf"));
        let _ = std::fs::remove_file(&out);
        let run = synth(&out, dtype);
        assert!(run.status.success(), "synth-model failed: {}", String::from_utf8_lossy(&run.stderr));

        let check = "import sys, gguf\n\
r = gguf.GGUFReader(sys.argv[1])\n\
names = {t.name: t for t in r.tensors}\n\
assert r.fields['general.architecture'].contents() == 'llama'\n\
assert r.fields['llama.embedding_length'].contents() == 2048\n\
assert len(r.fields['tokenizer.ggml.tokens'].data) == 128256\n\
q = names['blk.0.attn_q.weight']\n\
assert q.tensor_type.name == sys.argv[2].upper(), q.tensor_type.name\n\
w = gguf.quants.dequantize(q.data, q.tensor_type)\n\
assert w.shape == (2048, 2048), w.shape\n\
assert 0.015 < float(w.std()) < 0.025, float(w.std())\n\
assert 'output.weight' not in names\n\
print(len(r.tensors), 'tensors ok')\n";
        let py = Command::new(root().join(".venv/bin/python"))
            .args(["-c", check])
            .arg(&out)
            .arg(dtype)
            .output()
            .expect("run python");
        assert!(
            py.status.success(),
            "gguf reader rejected {}: {}{}",
            out.display(),
            String::from_utf8_lossy(&py.stdout),
            String::from_utf8_lossy(&py.stderr)
        );

        let again = synth(&out, dtype);
        assert!(!again.status.success(), "overwrote {}", out.display());
        assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
        std::fs::remove_file(&out).unwrap();
    }
}
