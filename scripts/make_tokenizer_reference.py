#!/usr/bin/env python3
"""Tokenizer reference ids, written as test fixtures.

Command (from the repository root):

    .venv-ref/bin/python scripts/make_tokenizer_reference.py

Versions used to produce the committed fixtures (see scripts/requirements-reference.txt):
    Python 3.11.7, llama-cpp-python 0.3.36 (built with CMAKE_ARGS="-DGGML_NATIVE=OFF"),
    tokenizers 0.23.3.

Writes:
- crates/llama-core/tests/fixtures/tokenizer_smollm2_llamacpp.json
    llama.cpp's tokenizer on models/SmolLM2-135M-Instruct.Q4_1.gguf (gpt2 BPE,
    pre="smollm"), loaded vocab-only:
    llm.tokenize(text.encode(), add_bos=False, special=True).
- crates/llama-core/tests/fixtures/tokenizer_llama32_hf.json
    Hugging Face `tokenizers` on models/llama-3.2/tokenizer.json:
    Tokenizer.from_file(...).encode(text, add_special_tokens=False).ids, plus
    "decoded" = decode(ids, skip_special_tokens=False).

Both use the same strings, except that the special-token cases use each model's own
special tokens (ChatML <|im_start|>/<|im_end|> for SmolLM2, <|begin_of_text|>,
<|start_header_id|>, <|eot_id|> for Llama 3.2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates" / "llama-core" / "tests" / "fixtures"
SMOLLM_GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA32_TOKENIZER = ROOT / "models" / "llama-3.2" / "tokenizer.json"
COMMAND = ".venv-ref/bin/python scripts/make_tokenizer_reference.py"

COMMON = [
    "",
    " ",
    "Hello world",
    " Hello world",
    "Hello world ",
    "Hello    world",
    "   leading and trailing   ",
    "\t\ttab\tseparated\t",
    "\n\n\n",
    " \n ",
    "line one\nline two\r\n\r\nline three",
    "1234567",
    "3.14159",
    "1,000,000",
    "I'm sure DON'T you'll they've we'd it's",
    "...!!!???",
    "café naïve façade Ångström",
    "你好，世界",
    "👋🏽 hi",
    "👨‍👩‍👧",
    "🇫🇷🇯🇵",
    'fn main() { println!("hi"); }',
    "https://example.com/path?query=1&x=y#frag",
]
SMOLLM_SPECIAL = [
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start",
    "<|im_start|><|im_end|>\n<|endoftext|>",
]
LLAMA32_SPECIAL = [
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "<|begin_of_text",
    "<|eot_id|><|eot_id|>\nend",
]
LONG = (
    "In 2024, the café's API returned HTTP 503 (x3!) — retrying @ 10:45am; "
    "see https://status.example.org/#/incidents?id=42 for 日本語 notes 🙂."
)


def dump(obj: dict) -> str:
    lines = ["{"]
    for key in ("source", "command", "add_bos"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(obj[key], ensure_ascii=False)},")
    lines.append('  "cases": [')
    for i, case in enumerate(obj["cases"]):
        sep = "," if i + 1 < len(obj["cases"]) else ""
        lines.append("    " + json.dumps(case, ensure_ascii=False, separators=(", ", ": ")) + sep)
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == obj
    return text


def smollm_fixture() -> dict:
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(model_path=str(SMOLLM_GGUF), vocab_only=True, verbose=False)
    assert llm.metadata.get("tokenizer.ggml.add_bos_token") == "false"
    cases = []
    for text in COMMON + SMOLLM_SPECIAL + [LONG]:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        cases.append({"text": text, "ids": [int(i) for i in ids]})
    return {
        "source": (
            f"llama.cpp via llama-cpp-python {llama_cpp.__version__}: "
            "Llama(SmolLM2-135M-Instruct.Q4_1.gguf, vocab_only=True)"
            ".tokenize(text.encode(), add_bos=False, special=True)"
        ),
        "command": COMMAND,
        "add_bos": False,
        "cases": cases,
    }


def llama32_fixture() -> dict:
    import tokenizers
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(LLAMA32_TOKENIZER))
    cases = []
    for text in COMMON + LLAMA32_SPECIAL + [LONG]:
        ids = tok.encode(text, add_special_tokens=False).ids
        decoded = tok.decode(ids, skip_special_tokens=False)
        cases.append({"text": text, "ids": list(ids), "decoded": decoded})
    return {
        "source": (
            f"Hugging Face tokenizers {tokenizers.__version__}: "
            "Tokenizer.from_file(models/llama-3.2/tokenizer.json)"
            ".encode(text, add_special_tokens=False).ids; decoded = decode(ids, skip_special_tokens=False)"
        ),
        "command": COMMAND,
        "add_bos": False,
        "cases": cases,
    }


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    which = sys.argv[1:] or ["smollm2", "llama32"]
    if "llama32" in which:
        path = FIXTURES / "tokenizer_llama32_hf.json"
        path.write_text(dump(llama32_fixture()), encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    if "smollm2" in which:
        path = FIXTURES / "tokenizer_smollm2_llamacpp.json"
        path.write_text(dump(smollm_fixture()), encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
