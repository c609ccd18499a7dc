#!/usr/bin/env python3
"""Conformance checks for the OpenAI-compatible server (`--serve`), against docs/serve.md.

A Rust integration test starts a real server and runs this script against it; the script never
starts a server itself. It talks to the server the way users will: through the official `openai`
Python client, and through raw HTTP (httpx) where the client cannot express the case (malformed
bodies, status codes, headers, dropped connections).

    python tests/serve/check_server.py --url http://127.0.0.1:PORT \
        --checks basic,concurrency,errors,disconnect [--expected FILE] [--api-key KEY] [--context N]

Check groups (--checks, comma-separated):
  basic        health, models, metrics, tokenize round trip, chat and completions (streamed and
               not) against each other and against --expected, usage, seeds, stop strings
  concurrency  8 greedy streams at once give the same text as each one alone
  errors       every documented 400/404/413 case, with OpenAI's error object and `param`
  disconnect   a client that goes away mid-stream frees its slot and is counted
  queue        server started with --parallel 1 --queue 1: the request past the queue gets 503
  auth         server started with --api-key KEY, script given --api-key KEY

--expected FILE is what the Rust test wrote from the one-shot CLI (greedy, same max_tokens):
  {"chat": [{"messages": [...], "max_tokens": 24, "text": "..."}],
   "completions": [{"prompt": "...", "max_tokens": 24, "text": "..."}]}
--context N is the server's --ctx-size; without it the prompt-too-long check is skipped.

Prints one line per check (`ok`, `FAIL` or `skip`, with its time), each failure with the request,
what was expected and what came, and exits 0 only when every requested check passed.

Needs the PyPI packages `openai` and `httpx` (openai 3.x ships the fork `httpx2`, same API; either
is used).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import httpx
except ImportError:  # openai >= 3 depends on httpx2, a fork of httpx with the same API
    import httpx2 as httpx  # type: ignore[no-redef]

import openai

from serve_harness import *  # noqa: F403
from checks_answers import *  # noqa: F403
from checks_faults import *  # noqa: F403


# --------------------------------------------------------------------------------------------
# Running


def check_groups(ctx: Ctx) -> dict[str, list[tuple[str, Callable[[Ctx], Any]]]]:
    return {
        "basic": [
            ("health", basic_health),
            ("models", basic_models),
            ("metrics", basic_metrics),
            ("tokenize", basic_tokenize),
            *[(f"chat[{i}]", lambda c, case=case: check_case(c, "chat", case)) for i, case in enumerate(chat_cases(ctx))],
            *[(f"completions[{i}]", lambda c, case=case: check_case(c, "completions", case)) for i, case in enumerate(completion_cases(ctx))],
            ("any_model_name", basic_any_model_name),
            ("seed", basic_seed),
            ("stop.chat", lambda c: basic_stop(c, "chat")),
            ("stop.completions", lambda c: basic_stop(c, "completions")),
        ],
        "concurrency": [("streams", concurrency)],
        "errors": [
            *[(name, error_case(path, body, status, param)) for name, path, body, status, param in ERROR_CASES],
            ("unknown_path", errors_unknown_path),
            ("body_too_large", errors_body_too_large),
            ("context.chat", lambda c: errors_context(c, "chat")),
            ("context.completions", lambda c: errors_context(c, "completions")),
            ("still_serving", errors_still_serving),
        ],
        "disconnect": [("mid_stream", disconnect)],
        "queue": [("full", queue)],
        "auth": [
            ("open_endpoints", auth_open_endpoints),
            ("missing_key", auth_missing_key),
            ("wrong_key", auth_wrong_key),
            ("client_with_key", auth_client_with_key),
        ],
    }



def run_step(ctx: Ctx, name: str, step: Callable[[Ctx], Any], failures: list[str]) -> None:
    ctx.request = "(no request yet)"
    start = time.perf_counter()
    try:
        detail = step(ctx)
    except Skip as e:
        print(f"skip {name:<34} {e}", flush=True)
        return
    except CheckFailed as e:
        message = str(e)
    except Exception as e:  # noqa: BLE001 - any other exception is a failure of this check
        message = f"request:  {ctx.request}\n  expected: an answer\n  got:      {describe_exception(e)}"
        if not isinstance(e, (openai.APIError, httpx.HTTPError)):
            message += "\n  " + "".join(traceback.format_exception(e)[-3:]).strip().replace("\n", "\n  ")
    else:
        seconds = time.perf_counter() - start
        print(f"ok   {name:<34} {seconds:7.3f} s" + (f"  {detail}" if detail else ""), flush=True)
        return
    seconds = time.perf_counter() - start
    print(f"FAIL {name:<34} {seconds:7.3f} s\n  {message}", flush=True)
    failures.append(name)


def wait_ready(ctx: Ctx, seconds: float) -> bool:
    """/health 200: the model is loaded (it answers 503 while loading)."""
    deadline = time.perf_counter() + seconds
    while True:
        try:
            if ctx.http.get("/health").status_code == 200:
                return True
        except httpx.TransportError:
            pass
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--checks", default="basic,concurrency,errors,disconnect", help="comma-separated groups: basic, concurrency, errors, disconnect, queue, auth")
    parser.add_argument("--expected", help="JSON of the one-shot CLI's greedy texts")
    parser.add_argument("--api-key", help="the server's --api-key (sent on every request)")
    parser.add_argument("--context", type=int, help="the server's context size (--ctx-size)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for any one request (default 120)")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for /health 200 first (default 10)")
    args = parser.parse_args()

    ctx = Ctx(args)
    groups = check_groups(ctx)
    wanted = [g.strip() for g in args.checks.split(",") if g.strip()]
    unknown = [g for g in wanted if g not in groups]
    if unknown:
        parser.error(f"unknown check group(s) {unknown}; known: {', '.join(groups)}")
    if "auth" in wanted and not args.api_key:
        parser.error("the auth checks need --api-key KEY, the key the server was started with")
    if not wait_ready(ctx, args.wait):
        print(f"FAIL server not ready: GET {ctx.base}/health gave no 200 within {args.wait:g} s", flush=True)
        return 1

    failures: list[str] = []
    start = time.perf_counter()
    for group in wanted:
        group_start, failed_before = time.perf_counter(), len(failures)
        for name, step in groups[group]:
            run_step(ctx, f"{group}.{name}", step, failures)
        status = "PASS" if len(failures) == failed_before else "FAIL"
        print(f"{status} {group} ({time.perf_counter() - group_start:.2f} s)", flush=True)
    total = time.perf_counter() - start
    if failures:
        print(f"\n{len(failures)} check(s) failed in {total:.2f} s: {', '.join(failures)}", flush=True)
        return 1
    print(f"\nall checks passed ({', '.join(wanted)}) in {total:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
