#!/usr/bin/env python3
"""Hugging Face model directories made from the project's GGUF by transformers itself,
and transformers' greedy ids on them as a test fixture.

Commands (from the repository root):

    .venv/bin/python scripts/make_hf_model.py               # the three directories
    .venv/bin/python scripts/make_hf_model.py --reference   # ... and the fixture

Options: --out DIR (default models/hf), --force (rebuild directories that exist).

Versions used to produce the committed fixture:
    Python 3.11.7, torch 2.9.0 (CPU), transformers 5.25.0, accelerate 1.16.0 (transformers
    needs it to load a GGUF), tokenizers 0.23.3, safetensors 0.8.0, gguf 0.19.0, numpy 2.4.6.

What it does:

1. Loads models/SmolLM2-135M-Instruct.Q4_1.gguf with
   AutoModelForCausalLM.from_pretrained(models/, gguf_file=..., dtype=float32) and
   AutoTokenizer.from_pretrained(same). No network: HF_HUB_OFFLINE=1, everything (config,
   tokenizer, chat template) comes from the GGUF metadata. transformers dequantizes the Q4_1
   tensors with gguf-py and undoes llama.cpp's q/k row permutation.
2. save_pretrained into <out>/smollm2-f32 (F32, one model.safetensors), <out>/smollm2-bf16
   (the same weights cast to bfloat16, one file) and <out>/smollm2-f32-sharded (F32 in
   200 MB shards + model.safetensors.index.json). Each directory also gets config.json,
   generation_config.json, tokenizer.json, tokenizer_config.json and chat_template.jinja.
   A directory that already has config.json is skipped unless --force. Each is written to
   <name>.tmp and renamed, so an interrupted run never leaves a config.json without weights.
3. --reference: loads <out>/smollm2-f32 back from disk (float32, eager attention, CPU,
   torch.manual_seed(0)) and, for each prompt of crates/llama-testkit/fixtures/
   smollm2_llamacpp_greedy.json, tokenizes the raw text (add_special_tokens=False; the ids
   must equal that file's prompt_tokens) and runs generate(do_sample=False,
   max_new_tokens=32) with EOS stopping turned off (llama.cpp's fixture runs all 32 steps
   through <|im_end|>). It also loads <out>/smollm2-bf16 upcast to float32 and in bfloat16,
   and records the max |logit diff| against the F32 logits at every prompt position and
   where its greedy ids part from the F32 ones. Writes
   crates/llama-testkit/fixtures/smollm2_transformers_greedy.json.
   Observed: F32 ids equal the llama.cpp fixture's on all 3 x 32 tokens, its top-8 logits within
   3e-5. BF16 upcast: max |logit diff| 0.13-0.19, same ids. BF16 compute: 0.68-1.37, ids part
   at token 26 ("The capital of France is") and 11 (the long prompt).

transformers 5.x specifics handled here:
- A GGUF load attaches a GgufHfQuantizer even when, as for llama (the legacy GGUF loader),
  the weights end up as plain dense float32 nn.Linear; save_pretrained then refuses ("not
  serializable"). The quantizer's own remove_quantization_config() detaches it.
- config.json says "dtype" (not "torch_dtype") and "rope_parameters": {"rope_theta",
  "rope_type"} (not top-level "rope_theta"/"rope_scaling" as 4.x and the Hub's SmolLM2 do).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before importing transformers: huggingface.co is not reachable

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
FIXTURES = ROOT / "crates" / "llama-testkit" / "fixtures"
LLAMACPP_FIXTURE = FIXTURES / "smollm2_llamacpp_greedy.json"
FIXTURE = FIXTURES / "smollm2_transformers_greedy.json"
COMMAND = ".venv/bin/python scripts/make_hf_model.py --reference"
N_GEN = 32

# directory -> (dtype, max_shard_size). "50GB" (transformers' default) keeps one file.
VARIANTS = {
    "smollm2-f32": (torch.float32, "50GB"),
    "smollm2-bf16": (torch.bfloat16, "50GB"),
    "smollm2-f32-sharded": (torch.float32, "200MB"),  # 538 MB of F32 -> 3 shards
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- directories


def build(out: Path, force: bool) -> None:
    todo = [n for n in VARIANTS if force or not (out / n / "config.json").exists()]
    for name in VARIANTS:
        if name not in todo:
            log(f"skip {out / name} (has config.json; --force rebuilds)")
    if not todo:
        return
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(GGUF.parent, gguf_file=GGUF.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name)
    model.hf_quantizer.remove_quantization_config(model)  # see the docstring: else save refuses
    log(f"loaded {GGUF.name} in {time.time() - t0:.1f} s")

    for name in todo:
        dtype, shard = VARIANTS[name]
        dst, tmp = out / name, out / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.time()
        # deepcopy keeps the tied embedding/lm_head sharing and leaves `model` in F32.
        m = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
        m.save_pretrained(tmp, max_shard_size=shard)
        tok.save_pretrained(tmp)
        for f in tmp.iterdir():
            f.chmod(0o644)  # the *.safetensors come out 0600 (seen with 5.25.0), the rest 0644
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)
        log(f"wrote {dst} in {time.time() - t0:.1f} s")
    for name in VARIANTS:
        verify(out / name)


def verify(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    gen = json.loads((d / "generation_config.json").read_text())
    shards = sorted(d.glob("*.safetensors"))
    dtypes, names = {}, []
    for s in shards:
        with safe_open(s, "pt") as f:
            for k in f.keys():
                names.append(k)
                dtypes[k] = f.get_slice(k).get_dtype()
    assert (len(shards) > 1) == (d / "model.safetensors.index.json").exists(), d
    log(
        f"{d.name}: files {sorted(p.name for p in d.iterdir())}\n"
        f"  architectures={cfg['architectures']} rope_parameters={cfg.get('rope_parameters')} "
        f"rope_theta={cfg.get('rope_theta')} rope_scaling={cfg.get('rope_scaling', '<absent>')}\n"
        f"  tie_word_embeddings={cfg['tie_word_embeddings']} dtype={cfg.get('dtype')} "
        f"torch_dtype={cfg.get('torch_dtype', '<absent>')} generation eos_token_id={gen.get('eos_token_id')}\n"
        f"  {len(names)} tensors in {len(shards)} file(s), dtypes {sorted(set(dtypes.values()))}, "
        f"lm_head.weight saved: {'lm_head.weight' in names}\n"
        + "".join(f"    {k}: {dtypes[k]}\n" for k in sorted(names)[:4])
    )


# --------------------------------------------------------------------------- reference


def load(d: Path, dtype: torch.dtype):
    return AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager").eval()


@torch.no_grad()
def greedy(model, ids: list[int]) -> tuple[list[int], list[torch.Tensor]]:
    x = torch.tensor([ids])
    # eos_token_id=None overrides generation_config's 2 = <|im_end|>, so all N_GEN steps run
    # like llama.cpp's fixture ("The capital of France is" reaches <|im_end|> after 30).
    r = model.generate(
        x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=N_GEN,
        eos_token_id=None, pad_token_id=2, output_logits=True, return_dict_in_generate=True,
    )
    gen = r.sequences[0, len(ids):].tolist()
    assert len(gen) == N_GEN, len(gen)
    return gen, [row[0].float() for row in r.logits]


@torch.no_grad()
def prompt_logits(model, ids: list[int]) -> torch.Tensor:
    return model(torch.tensor([ids])).logits[0].float()  # [positions, vocab]


def parts_at(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing id (both lists hold N_GEN ids), None if equal."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)


def reference(out: Path) -> None:
    torch.manual_seed(0)  # greedy needs no randomness; set anyway so any sampling default is fixed
    ref = json.loads(LLAMACPP_FIXTURE.read_text())["cases"]
    f32_dir, bf16_dir = out / "smollm2-f32", out / "smollm2-bf16"
    tok = AutoTokenizer.from_pretrained(f32_dir)
    f32 = load(f32_dir, torch.float32)
    bf16 = {"as_float32": load(bf16_dir, torch.float32), "as_bfloat16": load(bf16_dir, torch.bfloat16)}

    cases, bf16_stats = [], {k: [] for k in bf16}
    for c in ref:
        ids = tok(c["prompt"], add_special_tokens=False).input_ids
        assert ids == c["prompt_tokens"], (c["prompt"], ids, c["prompt_tokens"])
        t0 = time.time()
        gen, step_logits = greedy(f32, ids)
        log(f"{c['prompt'][:30]!r}: F32 greedy {time.time() - t0:.1f} s")
        # llama.cpp's fixture has its top-8 logits at each step; compare while the ids agree.
        p = parts_at(gen, c["generated_tokens"])
        n_same = N_GEN if p is None else p
        top_diff = max(abs(float(step_logits[i][t]) - v) for i in range(n_same) for t, v in c["top_logits"][i])
        log(f"  vs llama.cpp F32: parts at {p}, max |top-8 logit diff| over {n_same} steps {top_diff:.5f}")
        cases.append({
            "prompt": c["prompt"], "prompt_tokens": ids, "generated_tokens": gen,
            "text": tok.decode(gen),  # keeps special tokens' text, unlike llama.cpp's fixture
            "llamacpp_parts_at": p,
            "llamacpp_max_abs_top8_logit_diff": round(top_diff, 5),
        })
        base = prompt_logits(f32, ids)
        for k, m in bf16.items():
            per_pos = (prompt_logits(m, ids) - base).abs().amax(dim=-1).tolist()
            g, _ = greedy(m, ids)
            st = {
                "prompt": c["prompt"],
                "max_abs_logit_diff_per_position": [round(v, 5) for v in per_pos],
                "max_abs_logit_diff": round(max(per_pos), 5),
                "greedy_equal": g == gen, "parts_at": parts_at(g, gen), "generated_tokens": g,
            }
            bf16_stats[k].append(st)
            log(f"  bf16 {k}: max |logit diff| {st['max_abs_logit_diff']} (per position "
                f"{st['max_abs_logit_diff_per_position']}), greedy parts at {st['parts_at']}")

    fixture = {
        "source": (
            f"transformers {transformers.__version__}, torch {torch.__version__}, CPU, float32, "
            f"eager attention, on {os.path.relpath(f32_dir, ROOT)} (save_pretrained of from_pretrained(gguf_file={GGUF.name})); greedy, EOS stop off"
        ),
        "command": COMMAND,
        "model": GGUF.name,
        "cases": cases,
        "bf16": {
            "note": "smollm2-bf16 loaded as float32 (upcast) and as bfloat16, against the F32 "
                    "directory: max |logit diff| over the vocabulary at each prompt position, and "
                    "its greedy ids (parts_at = first index differing from the F32 ids, null if equal)",
            **bf16_stats,
        },
    }
    FIXTURE.write_text(to_json(fixture) + "\n")
    log(f"wrote {FIXTURE}")


def to_json(o, ind: str = "") -> str:
    """JSON with one line per list of numbers (json.dumps(indent=...) gives one per number)."""
    inner = ind + "  "
    if isinstance(o, dict):
        body = ",\n".join(f"{inner}{json.dumps(k)}: {to_json(v, inner)}" for k, v in o.items())
        return "{\n" + body + "\n" + ind + "}"
    if isinstance(o, list) and any(isinstance(x, (dict, list)) for x in o):
        return "[\n" + ",\n".join(inner + to_json(x, inner) for x in o) + "\n" + ind + "]"
    return json.dumps(o, ensure_ascii=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "hf")
    ap.add_argument("--force", action="store_true", help="rebuild directories that already exist")
    ap.add_argument("--reference", action="store_true", help=f"also write {FIXTURE.relative_to(ROOT)}")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log(f"transformers {transformers.__version__}, torch {torch.__version__}")
    build(out, args.force)
    if args.reference:
        reference(out)


if __name__ == "__main__":
    main()
