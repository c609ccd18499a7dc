#!/usr/bin/env python3
"""Greedy-decoding reference numbers from llama.cpp, written as a test fixture.

Command (from the repository root):

    .venv-ref/bin/python scripts/make_llamacpp_reference.py

Versions used to produce the committed fixture (see scripts/requirements-reference.txt):
    Python 3.11.7, llama-cpp-python 0.3.36 (built from source with
    CMAKE_ARGS="-DGGML_NATIVE=OFF"), gguf 0.19.0, numpy 2.4.6.

Setup of the venv:

    python3 -m venv .venv-ref
    CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv-ref/bin/pip install -r scripts/requirements-reference.txt

(-DGGML_NATIVE=OFF matters: llama.cpp's native AMX path crashes on some CPUs.)

What it does:

1. Creates models/SmolLM2-135M-Instruct.F32.gguf (if missing) from the Q4_1 file:
   every tensor dequantized to F32 with gguf.quants.dequantize, all metadata copied
   unchanged except general.file_type = 0 (ALL_F32). Our Rust implementation
   dequantizes to f32 and computes in f32, while llama.cpp on the Q4_1 file quantizes
   activations to 8 bits inside matmuls (and keeps an f16 KV cache), so the F32 copy
   gives a much tighter reference.
2. Runs llama.cpp on the F32 copy with an f32 KV cache (type_k = type_v = GGML_TYPE_F32),
   flash attention off, n_threads=2, n_ctx=512, seed 0, logits for every position.
   For each prompt (raw text, no chat template, tokenized with add_bos from the
   model metadata - false for SmolLM2 - and special tokens parsed): one batched
   eval of the whole prompt, then 32 greedy steps (argmax, ties to the lowest id),
   one token per eval. Records the 8 largest raw logits at each position that
   produced a generated token.
3. Writes crates/llama-testkit/fixtures/smollm2_llamacpp_greedy.json.
4. Repeats the greedy decoding on the original Q4_1 file with default llama.cpp
   settings and prints (does not write) a comparison against the F32 run.
   Observed with 0.3.36: same 16 ids for "1, 2, 3, 4,"; "The capital of France is"
   diverges after 5 tokens, the long prompt after 11; max |logit diff| over the full
   vocabulary 0.83-1.30 (Q8 activation rounding in matmuls + f16 KV cache).
   The F32-copy logits matched an independent float64 numpy forward pass to < 2e-5.

Pitfalls handled here:
- GGUFReader's tensor.shape is in ggml order (ne0 first); the tensor's numpy data is
  row-major (reverse of ne). GGUFWriter.add_tensor takes the row-major numpy array and
  reverses its shape into ne itself, so we pass the dequantized array reshaped to
  reversed(ne) and then check the written file's tensor shapes against the original.
- Per-position logits: Llama(..., logits_all=True) makes llm.eval() keep a row in
  llm.scores for every evaluated position (scores[i] = logits after token i).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import gguf

ROOT = Path(__file__).resolve().parent.parent
MODEL_Q4 = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_F32 = ROOT / "models" / "SmolLM2-135M-Instruct.F32.gguf"
FIXTURE = ROOT / "crates" / "llama-testkit" / "fixtures" / "smollm2_llamacpp_greedy.json"

PROMPTS = [
    "1, 2, 3, 4,",
    "The capital of France is",
    (
        "The old lighthouse keeper climbed the narrow stairs every evening to light the lamp, "
        "while the storm rolled in from the sea and the fishing boats hurried back to the "
        "harbor before dark."
    ),
]
N_GEN = 32  # "1, 2, 3, 4," needs 31 tokens to reach " 13," (SmolLM2 splits digits)
TOP_K = 8
N_CTX = 512
N_THREADS = 2
GGML_TYPE_F32 = 0


# --------------------------------------------------------------------------- F32 copy


def make_f32_copy(src: Path, dst: Path) -> None:
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    tmp = dst.with_suffix(".gguf.tmp")
    writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
    align = reader.fields.get(gguf.Keys.General.ALIGNMENT)
    if align is not None:
        writer.data_alignment = align.contents()

    for field in reader.fields.values():
        # GGUF.* are virtual header fields; general.architecture is written by GGUFWriter.
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType.ALL_F32)  # 0
        writer.add_key_value(field.name, value, vtype, sub_type=sub_type)

    for t in reader.tensors:
        ne = [int(x) for x in t.shape]  # ggml order, ne0 first
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        arr = np.ascontiguousarray(arr, dtype=np.float32).reshape(list(reversed(ne)))
        writer.add_tensor(t.name, arr)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    # Verify: same tensor names/shapes (ggml order), all F32, same metadata.
    check = gguf.GGUFReader(tmp)
    assert len(check.tensors) == len(reader.tensors)
    for a, b in zip(reader.tensors, check.tensors):
        assert a.name == b.name, (a.name, b.name)
        assert list(a.shape) == list(b.shape), (a.name, list(a.shape), list(b.shape))
        assert b.tensor_type == gguf.GGMLQuantizationType.F32, b.name
    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or name == gguf.Keys.General.FILE_TYPE:
            continue
        assert check.fields[name].contents() == f.contents(), name
    assert check.fields[gguf.Keys.General.FILE_TYPE].contents() == 0
    os.replace(tmp, dst)
    print(f"wrote {dst} ({dst.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


# --------------------------------------------------------------------------- greedy decode


def load(path: Path, f32: bool):
    from llama_cpp import Llama

    kwargs = dict(
        model_path=str(path),
        n_ctx=N_CTX,
        n_batch=N_CTX,
        n_ubatch=N_CTX,
        n_threads=N_THREADS,
        n_threads_batch=N_THREADS,
        seed=0,
        logits_all=True,
        verbose=False,
    )
    if f32:
        kwargs.update(type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, flash_attn=False)
    return Llama(**kwargs)


def argmax_lowest(row: np.ndarray) -> int:
    # np.argmax returns the first (lowest-index) maximum.
    return int(np.argmax(row))


def top_k(row: np.ndarray, k: int) -> list[list]:
    # Descending logit, ties broken by lowest id.
    order = np.lexsort((np.arange(row.shape[0]), -row.astype(np.float64)))[:k]
    return [[int(i), round(float(row[i]), 5)] for i in order]


def greedy(llm, prompt: str) -> dict:
    add_bos = bool(llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true")
    toks = llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
    llm.reset()
    llm.eval(toks)  # one batched prompt eval (n_batch = n_ctx)
    n = len(toks)
    gen, tops, raw_rows = [], [], []
    row = np.array(llm.scores[n - 1], dtype=np.float32)
    for step in range(N_GEN):
        tok = argmax_lowest(row)
        gen.append(tok)
        tops.append(top_k(row, TOP_K))
        raw_rows.append(row.copy())
        if step + 1 == N_GEN:
            break
        llm.eval([tok])
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    text = llm.detokenize(gen).decode("utf-8", errors="replace")
    return {
        "prompt": prompt,
        "prompt_tokens": [int(t) for t in toks],
        "generated_tokens": gen,
        "text": text,
        "top_logits": tops,
        "_rows": raw_rows,
    }


def main() -> None:
    import llama_cpp

    if not MODEL_F32.exists():
        make_f32_copy(MODEL_Q4, MODEL_F32)

    llm = load(MODEL_F32, f32=True)
    f32_cases = [greedy(llm, p) for p in PROMPTS]
    del llm

    out = {
        "source": (
            f"llama.cpp via llama-cpp-python {llama_cpp.__version__} on an F32 copy of "
            "SmolLM2-135M-Instruct.Q4_1.gguf, f32 KV cache, flash attention off"
        ),
        "command": ".venv-ref/bin/python scripts/make_llamacpp_reference.py",
        "model": MODEL_Q4.name,
        "cases": [{k: v for k, v in c.items() if not k.startswith("_")} for c in f32_cases],
    }
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    with open(FIXTURE, "w", encoding="utf-8") as f:
        f.write(dump_json(out))
    print(f"wrote {FIXTURE}", file=sys.stderr)
    for c in f32_cases:
        print(f"F32  {c['prompt']!r} -> {c['generated_tokens']} {c['text']!r}")

    # Comparison against the original Q4_1 file with default settings (not written).
    llm = load(MODEL_Q4, f32=False)
    for c in f32_cases:
        q = greedy(llm, c["prompt"])
        same = q["generated_tokens"] == c["generated_tokens"]
        n_same = 0
        for a, b in zip(q["generated_tokens"], c["generated_tokens"]):
            if a != b:
                break
            n_same += 1
        # Logit rows are comparable while the decoded prefixes agree (incl. the row that
        # produced the first differing token).
        m = min(n_same + 1, N_GEN)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(q["_rows"][:m], c["_rows"][:m]))
        print(
            f"Q4_1 {c['prompt']!r} -> {q['generated_tokens']} {q['text']!r}\n"
            f"     same ids as F32: {same} (common prefix {n_same}), "
            f"max |logit diff| over {m} rows: {diff:.4f}"
        )


def dump_json(obj) -> str:
    """Compact-ish JSON: one case field per line, one top_logits row per line."""
    lines = ["{"]
    for key in ("source", "command", "model"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(obj[key], ensure_ascii=False)},")
    lines.append('  "cases": [')
    for ci, case in enumerate(obj["cases"]):
        lines.append("    {")
        keys = list(case.keys())
        for ki, key in enumerate(keys):
            sep = "," if ki + 1 < len(keys) else ""
            if key == "top_logits":
                lines.append(f'      "top_logits": [')
                rows = case[key]
                for ri, row in enumerate(rows):
                    rsep = "," if ri + 1 < len(rows) else ""
                    lines.append("        " + json.dumps(row, separators=(",", ":")) + rsep)
                lines.append("      ]" + sep)
            else:
                lines.append(
                    f"      {json.dumps(key)}: {json.dumps(case[key], ensure_ascii=False, separators=(', ', ': '))}{sep}"
                )
        lines.append("    }" + ("," if ci + 1 < len(obj["cases"]) else ""))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # sanity
    return text


if __name__ == "__main__":
    main()
