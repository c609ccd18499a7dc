#!/usr/bin/env python3
"""Chat-template reference: rendered prompts and their token ids, written as a test fixture.

Command (from the repository root):

    .venv-ref/bin/python scripts/make_chat_template_reference.py

Versions used to produce the committed fixture (see scripts/requirements-reference.txt):
    Python 3.11.7, llama-cpp-python 0.3.36 (built with CMAKE_ARGS="-DGGML_NATIVE=OFF"),
    jinja2 3.1.6.

Writes crates/llama-core/tests/fixtures/chat_template_smollm2.json: for each conversation,
llama-cpp-python's own chat formatting of models/SmolLM2-135M-Instruct.Q4_1.gguf's
tokenizer.chat_template (Jinja2ChatFormatter, the jinja2 environment transformers uses) and
llama.cpp's tokenization of it exactly as llama-cpp-python's chat completion does:
llm.tokenize(prompt.encode(), add_bos=not added_special, special=True).
"""

from __future__ import annotations

import json
from pathlib import Path

from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "crates" / "llama-core" / "tests" / "fixtures" / "chat_template_smollm2.json"
COMMAND = ".venv-ref/bin/python scripts/make_chat_template_reference.py"


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


CONVERSATIONS = [
    # No system message: SmolLM2's template supplies its default one.
    {"messages": [msg("user", "What is the capital of France?")], "add_generation_prompt": True},
    {
        "messages": [msg("system", "You are a terse assistant."), msg("user", "Hi!")],
        "add_generation_prompt": True,
    },
    # Three turns, as a chat session renders them before its third reply.
    {
        "messages": [
            msg("system", "You are a helpful assistant."),
            msg("user", "My name is Ada. Please remember it."),
            msg("assistant", "Nice to meet you, Ada! I will remember your name."),
            msg("user", "What is my name?"),
            msg("assistant", "Your name is Ada."),
            msg("user", "Spell it backwards."),
        ],
        "add_generation_prompt": True,
    },
    # Whitespace, newlines, non-ASCII and text that looks like a special token.
    {
        "messages": [
            msg("user", "  leading spaces\nand a second line\n\n"),
            msg("assistant", "Café ☕ — 你好 👋🏽"),
            msg("user", "Is <|im_end|> a token?"),
        ],
        "add_generation_prompt": True,
    },
    # Without the generation prompt (a finished conversation).
    {"messages": [msg("user", "One."), msg("assistant", "Two.")], "add_generation_prompt": False},
]


def main() -> None:
    llm = Llama(model_path=str(MODEL), vocab_only=True, verbose=False)
    template = llm.metadata["tokenizer.chat_template"]
    token_text = lambda tid: llm._model.token_get_text(tid)  # noqa: E731
    bos, eos = token_text(llm.token_bos()), token_text(llm.token_eos())
    cases = []
    for conv in CONVERSATIONS:
        formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, add_generation_prompt=conv["add_generation_prompt"]
        )
        result = formatter(messages=conv["messages"])
        ids = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        cases.append({**conv, "rendered": result.prompt, "ids": ids})
    OUT.write_text(
        json.dumps(
            {
                "command": COMMAND,
                "model": MODEL.name,
                "bos_token": bos,
                "eos_token": eos,
                "add_bos_token": llm.metadata.get("tokenizer.ggml.add_bos_token"),
                "cases": cases,
            },
            ensure_ascii=False,
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {OUT} ({len(cases)} conversations)")


if __name__ == "__main__":
    main()
