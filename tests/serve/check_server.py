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

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
FINISH_REASONS = {"stop", "length"}
# The error `type` each status must carry (docs/serve.md, "Errors").
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    503: "unavailable_error",
}
METRICS = [
    "llama_requests_total",
    "llama_requests_rejected_total",
    "llama_client_disconnects_total",
    "llama_prompt_tokens_total",
    "llama_generated_tokens_total",
    "llama_queue_depth",
    "llama_active_slots",
    "llama_slots",
    "llama_decode_tokens_per_second",
]
# Prompts used when --expected gives fewer cases than a check needs. Short, ordinary requests
# that any small instruct model continues for a few dozen tokens.
BUILTIN_CHAT = [
    "Write one sentence about the sea.",
    "Name three colours and say why you like them.",
    "What is the capital of France? Answer in a full sentence.",
    "Describe a cat in a few words.",
]
BUILTIN_COMPLETIONS = [
    "Once upon a time, in a small village by the river,",
    "The three most important things about cooking pasta are",
    "Here is a short list of fruits: apples,",
    "The history of the bicycle begins",
]
# A prompt that keeps a model generating for a long time (disconnect and queue checks).
LONG_ANSWER = "Count from 1 to 1000, one number per line."
DEFAULT_MAX_TOKENS = 24
# Seconds by which a client may see a stream's end after the server ended it (queue check).
LAG = 0.25


# --------------------------------------------------------------------------------------------
# Outcomes


class CheckFailed(Exception):
    """A check's failure: the request sent, what was expected, what came back."""

    def __init__(self, request: str, expected: str, got: str):
        self.request, self.expected, self.got = request, expected, got
        super().__init__(f"request:  {request}\n  expected: {expected}\n  got:      {got}")


class Skip(Exception):
    """The check cannot run with what the script was given (not a server fault)."""


def short(value: Any, limit: int = 300) -> str:
    """A one-line, bounded rendering of a body or value for messages."""
    if isinstance(value, (bytes, bytearray)):
        text = repr(bytes(value[:limit]))
    elif isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def first_difference(a: str, b: str) -> str:
    """Where two texts part, so a mismatch message points at it."""
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first difference at char {i}: {a[i:i + 20]!r} vs {b[i:i + 20]!r}"


# --------------------------------------------------------------------------------------------
# Session state shared by the checks


class Ctx:
    def __init__(self, args: argparse.Namespace):
        self.base = args.url.rstrip("/")
        self.api_key: str | None = args.api_key
        self.context: int | None = args.context
        self.timeout: float = args.timeout
        self.expected = load_expected(args.expected)
        # Authorization goes on every request when a key is given; a server without --api-key
        # ignores it. The client must not retry: a retried 503 or 5xx would hide the fault.
        self.client = openai.OpenAI(
            base_url=self.base + "/v1",
            api_key=self.api_key or "no-key",
            max_retries=0,
            timeout=self.timeout,
        )
        self.http = self.new_http()
        self._local = threading.local()  # the request in flight, per thread
        self._model: str | None = None

    def new_http(self, with_key: bool = True) -> httpx.Client:
        """A raw HTTP client; its own connection pool, so closing it closes its sockets."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if (with_key and self.api_key) else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=self.timeout)

    # The request each failure message names: set by the helpers below as they send.
    @property
    def request(self) -> str:
        return getattr(self._local, "request", "(no request yet)")

    @request.setter
    def request(self, value: str) -> None:
        self._local.request = value

    def fail(self, expected: str, got: str) -> None:
        raise CheckFailed(self.request, expected, got)

    def expect(self, condition: bool, expected: str, got: Any) -> None:
        if not condition:
            self.fail(expected, got if isinstance(got, str) else short(got))

    @property
    def model(self) -> str:
        """The served model's id (any id is accepted; sending the real one is the polite thing)."""
        if self._model is None:
            try:
                self._model = self.client.models.list().data[0].id
            except Exception:  # noqa: BLE001 - basic.models reports it; keep the others going
                self._model = "default"
        return self._model

    # Raw HTTP -------------------------------------------------------------------------------

    def get(self, path: str, client: httpx.Client | None = None) -> httpx.Response:
        self.request = f"GET {path}"
        return (client or self.http).get(path)

    def post(self, path: str, body: Any, client: httpx.Client | None = None) -> httpx.Response:
        """POST a JSON value, or bytes sent as they are (with a JSON content type)."""
        client = client or self.http
        if isinstance(body, (bytes, bytearray)):
            self.request = f"POST {path} {short(body, 120)}"
            return client.post(path, content=body, headers={"Content-Type": "application/json"})
        self.request = f"POST {path} {short(body)}"
        return client.post(path, json=body)

    def json_of(self, r: httpx.Response) -> Any:
        try:
            return r.json()
        except ValueError:
            self.fail("a JSON body", f"HTTP {r.status_code} {short(r.text)}")

    def expect_ok(self, r: httpx.Response) -> Any:
        self.expect(r.status_code == 200, "HTTP 200", f"HTTP {r.status_code} {short(r.text)}")
        return self.json_of(r)


def load_expected(path: str | None) -> dict:
    if not path:
        return {"chat": [], "completions": []}
    data = json.loads(Path(path).read_text())
    for kind, key in (("chat", "messages"), ("completions", "prompt")):
        for case in data.setdefault(kind, []):
            if key not in case or "text" not in case:
                raise SystemExit(f"--expected {path}: every {kind} case needs {key!r} and 'text'")
            case.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    return data


# --------------------------------------------------------------------------------------------
# Assertion helpers


def expect_error(ctx: Ctx, r: httpx.Response, status: int, param: Any = ...) -> dict:
    """The response is `status` with OpenAI's error object of the documented type.

    param: ... (any value), a str (exactly that field), or a tuple of accepted values (None
    included where the contract does not insist on a field name).
    """
    ctx.expect(r.status_code == status, f"HTTP {status} with an error object", f"HTTP {r.status_code} {short(r.text)}")
    body = ctx.json_of(r)
    shape = '{"error": {"message": str, "type": str, "param": ..., "code": ...}}'
    ctx.expect(isinstance(body, dict) and isinstance(body.get("error"), dict), shape, body)
    err = body["error"]
    ctx.expect(isinstance(err.get("message"), str) and err["message"] != "", f"{shape} with a message", body)
    ctx.expect("param" in err and "code" in err, f"{shape}: 'param' and 'code' present (null allowed)", body)
    ctx.expect(err.get("type") == ERROR_TYPES[status], f"error.type == {ERROR_TYPES[status]!r}", body)
    if param is not ...:
        accepted = param if isinstance(param, tuple) else (param,)
        ctx.expect(err["param"] in accepted, f"error.param in {accepted!r} (the field at fault)", body)
    return err


@dataclass
class Gen:
    """One generation as the client saw it."""

    text: str
    finish_reason: str
    usage: Any  # openai's CompletionUsage, or None (streamed without include_usage)
    seconds: float
    content_chunks: int = 0  # streamed: chunks that carried text


def generate(
    ctx: Ctx,
    kind: str,
    prompt: Any,
    *,
    stream: bool,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    include_usage: bool = True,
    model: str | None = None,
    client: openai.OpenAI | None = None,
    **fields: Any,
) -> Gen:
    """A chat (`kind == "chat"`, prompt = messages) or completions request through the openai
    client, with the response's shape checked against the contract on the way."""
    body: dict[str, Any] = {"model": model or ctx.model, "max_tokens": max_tokens, **fields}
    body["messages" if kind == "chat" else "prompt"] = prompt
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    ctx.request = f"POST {CHAT if kind == 'chat' else COMPLETIONS} {short(body)}"
    api = (client or ctx.client).chat.completions if kind == "chat" else (client or ctx.client).completions
    start = time.perf_counter()
    if stream:
        gen = read_stream(ctx, kind, api.create(**body), include_usage, start)
    else:
        gen = check_response(ctx, kind, api.create(**body), start)
    if gen.usage is not None:
        check_usage(ctx, gen, max_tokens, has_stop="stop" in fields)
    return gen


def check_response(ctx: Ctx, kind: str, resp: Any, start: float) -> Gen:
    want = "chat.completion" if kind == "chat" else "text_completion"
    ctx.expect(resp.object == want, f"object == {want!r}", resp.object)
    ctx.expect(len(resp.choices) == 1, "exactly one choice", len(resp.choices))
    choice = resp.choices[0]
    if kind == "chat":
        ctx.expect(choice.message.role == "assistant", "message.role == 'assistant'", choice.message.role)
        text = choice.message.content
    else:
        text = choice.text
    ctx.expect(isinstance(text, str), "the text as a string", text)
    ctx.expect(choice.finish_reason in FINISH_REASONS, f"finish_reason in {sorted(FINISH_REASONS)}", choice.finish_reason)
    ctx.expect(resp.usage is not None, "a usage object", "none")
    return Gen(text, choice.finish_reason, resp.usage, time.perf_counter() - start)


def read_stream(ctx: Ctx, kind: str, stream: Any, include_usage: bool, start: float) -> Gen:
    """Reads a streamed answer to its end, checking the chunk sequence docs/serve.md lays down:
    the first chat chunk carries role assistant, exactly one chunk carries finish_reason and no
    choice chunk follows it, and (with include_usage) one last chunk has choices == [] and usage."""
    want = "chat.completion.chunk" if kind == "chat" else "text_completion"
    parts: list[str] = []
    finish = usage = None
    n = content_chunks = 0
    with stream:
        for chunk in stream:
            n += 1
            ctx.expect(chunk.object == want, f"every chunk's object == {want!r}", f"chunk {n}: {chunk.object!r}")
            ctx.expect(usage is None, "no chunk after the usage chunk", f"chunk {n}: {short(chunk.model_dump())}")
            if not chunk.choices:
                ctx.expect(
                    include_usage and chunk.usage is not None,
                    "choices == [] only in the usage chunk, and only when include_usage is asked",
                    f"chunk {n}: {short(chunk.model_dump())}",
                )
                ctx.expect(finish is not None, "the usage chunk after the finish_reason chunk", f"chunk {n}")
                usage = chunk.usage
                continue
            ctx.expect(len(chunk.choices) == 1, "one choice per chunk", f"chunk {n}: {short(chunk.model_dump())}")
            ctx.expect(finish is None, "no choice chunk after the finish_reason chunk", f"chunk {n}: {short(chunk.model_dump())}")
            choice = chunk.choices[0]
            if kind == "chat":
                if n == 1:
                    ctx.expect(choice.delta.role == "assistant", "first chunk's delta.role == 'assistant'", short(chunk.model_dump()))
                piece = choice.delta.content or ""
            else:
                piece = choice.text or ""
            if piece:
                content_chunks += 1
                parts.append(piece)
            if choice.finish_reason is not None:
                finish = choice.finish_reason
    ctx.expect(n > 0, "at least one chunk", "an empty stream")
    ctx.expect(finish in FINISH_REASONS, f"a chunk with finish_reason in {sorted(FINISH_REASONS)}", finish)
    if include_usage:
        ctx.expect(usage is not None, "a last chunk with choices == [] and usage (include_usage)", f"{n} chunks, none with usage")
    return Gen("".join(parts), finish, usage, time.perf_counter() - start, content_chunks)


def check_usage(ctx: Ctx, gen: Gen, max_tokens: int, has_stop: bool) -> None:
    u = gen.usage
    ctx.expect(isinstance(u.prompt_tokens, int) and u.prompt_tokens > 0, "usage.prompt_tokens > 0", u.model_dump())
    ctx.expect(
        isinstance(u.completion_tokens, int) and 0 <= u.completion_tokens <= max_tokens,
        f"0 <= usage.completion_tokens <= max_tokens ({max_tokens})",
        u.model_dump(),
    )
    ctx.expect(u.total_tokens == u.prompt_tokens + u.completion_tokens, "total_tokens == prompt + completion", u.model_dump())
    if gen.text:
        ctx.expect(u.completion_tokens >= 1, "completion_tokens >= 1 when text came", u.model_dump())
    # `length` means max_tokens was reached, unless the context filled first.
    room = ctx.context is None or u.prompt_tokens + max_tokens < ctx.context
    if gen.finish_reason == "length" and room:
        ctx.expect(u.completion_tokens == max_tokens, f"finish_reason 'length' with completion_tokens == max_tokens ({max_tokens})", u.model_dump())
    # Each text chunk is flushed as a token is decoded, so there are no more of them than tokens.
    # (Text held back for a possible stop string may come later in one piece; not counted then.)
    if gen.content_chunks and not has_stop:
        ctx.expect(
            gen.content_chunks <= u.completion_tokens,
            "no more text chunks than completion_tokens",
            f"{gen.content_chunks} text chunks, {short(u.model_dump())}",
        )


def expect_text(ctx: Ctx, got: str, want: str, what: str) -> None:
    ctx.expect(got == want, f"{what}: {want!r}", f"{got!r} ({first_difference(got, want)})")


def sse_events(r: httpx.Response) -> Iterator[Any]:
    """Raw SSE: yields each `data:` payload parsed, and the string "[DONE]" at the end."""
    for line in r.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            yield "[DONE]"
            return
        yield json.loads(data)


def read_metrics(ctx: Ctx, need: tuple[str, ...] = ()) -> dict[str, float]:
    """GET /metrics, Prometheus text format: name{labels} value [timestamp]; label sets summed.
    `need`: metrics that must be there."""
    r = ctx.get("/metrics")
    ctx.expect(r.status_code == 200, "HTTP 200 with Prometheus text", f"HTTP {r.status_code} {short(r.text)}")
    values: dict[str, float] = {}
    for line in r.text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+-?\d+)?", line)
        ctx.expect(m is not None, "Prometheus text lines `name{labels} value`", line)
        try:
            value = float(m.group(3))
        except ValueError:
            ctx.fail("a numeric sample value", line)
        values[m.group(1)] = values.get(m.group(1), 0.0) + value
    missing = [name for name in need if name not in values]
    ctx.expect(not missing, f"the metrics {', '.join(need)}", f"missing {missing}")
    return values


def chat_cases(ctx: Ctx) -> list[dict]:
    return ctx.expected["chat"] or [
        {"messages": [{"role": "user", "content": p}], "max_tokens": DEFAULT_MAX_TOKENS, "text": None} for p in BUILTIN_CHAT[:2]
    ]


def completion_cases(ctx: Ctx) -> list[dict]:
    return ctx.expected["completions"] or [
        {"prompt": p, "max_tokens": DEFAULT_MAX_TOKENS, "text": None} for p in BUILTIN_COMPLETIONS[:2]
    ]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# --------------------------------------------------------------------------------------------
# basic


def basic_health(ctx: Ctx) -> None:
    body = ctx.expect_ok(ctx.get("/health"))
    ctx.expect(body == {"status": "ok"}, '{"status": "ok"}', body)


def basic_models(ctx: Ctx) -> str:
    ctx.request = "GET /v1/models (openai client: models.list())"
    models = ctx.client.models.list().data
    ctx.expect(len(models) == 1, "exactly one model", [m.model_dump() for m in models])
    m = models[0]
    ctx.expect(isinstance(m.id, str) and m.id != "", "a model id", m.model_dump())
    ctx.expect(m.object == "model" and m.owned_by == "llama-burn-bench", "object 'model', owned_by 'llama-burn-bench'", m.model_dump())
    ctx.expect(isinstance(m.created, int), "created: an integer time", m.model_dump())
    ctx._model = m.id
    return f"model {m.id!r}"


def basic_metrics(ctx: Ctx) -> None:
    values = read_metrics(ctx, need=tuple(METRICS))
    ctx.expect(values["llama_slots"] >= 1, "llama_slots >= 1", values["llama_slots"])


def tokenize(ctx: Ctx, text: str, add_special: bool = False) -> list[int]:
    body = ctx.expect_ok(ctx.post("/tokenize", {"content": text, "add_special": add_special}))
    tokens = body.get("tokens") if isinstance(body, dict) else None
    ctx.expect(
        isinstance(tokens, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in tokens),
        '{"tokens": [integer ids]}',
        body,
    )
    return tokens


def detokenize(ctx: Ctx, tokens: list[int]) -> str:
    body = ctx.expect_ok(ctx.post("/detokenize", {"tokens": tokens}))
    ctx.expect(isinstance(body, dict) and isinstance(body.get("content"), str), '{"content": str}', body)
    return body["content"]


def basic_tokenize(ctx: Ctx) -> str:
    tokens = tokenize(ctx, "Hello world")
    ctx.expect(len(tokens) >= 1, "at least one token for 'Hello world'", tokens)
    text = detokenize(ctx, tokens)
    ctx.expect(text == "Hello world", "detokenize(tokenize('Hello world')) == 'Hello world'", text)
    return f"{len(tokens)} tokens"


def check_case(ctx: Ctx, kind: str, case: dict) -> str:
    """Greedy, non-streamed and streamed: same text, same usage, and the CLI's text."""
    prompt = case["messages"] if kind == "chat" else case["prompt"]
    n = case["max_tokens"]
    plain = generate(ctx, kind, prompt, stream=False, max_tokens=n, temperature=0)
    streamed = generate(ctx, kind, prompt, stream=True, max_tokens=n, temperature=0)
    expect_text(ctx, streamed.text, plain.text, "the streamed text equal to the non-streamed text")
    ctx.expect(streamed.finish_reason == plain.finish_reason, f"the same finish_reason streamed as not ({plain.finish_reason!r})", streamed.finish_reason)
    same = ("prompt_tokens", "completion_tokens", "total_tokens")
    ctx.expect(
        all(getattr(streamed.usage, k) == getattr(plain.usage, k) for k in same),
        f"the streamed usage equal to the non-streamed usage {short(plain.usage.model_dump())}",
        streamed.usage.model_dump(),
    )
    if kind == "completions":
        # A raw prompt is tokenized as /tokenize does it (with or without the BOS the model adds).
        counts = {len(tokenize(ctx, prompt, False)), len(tokenize(ctx, prompt, True))}
        ctx.expect(plain.usage.prompt_tokens in counts, f"usage.prompt_tokens in {sorted(counts)} (/tokenize's count)", plain.usage.model_dump())
    if case.get("text") is not None:
        expect_text(ctx, plain.text, case["text"], "the one-shot CLI's greedy text (--expected)")
    return f"{plain.usage.completion_tokens} tokens, {plain.finish_reason}, {plain.seconds:.2f} s + {streamed.seconds:.2f} s streamed"


def basic_any_model_name(ctx: Ctx) -> None:
    # One model is served, so the `model` field is accepted whatever it says (as llama-server).
    generate(ctx, "chat", user("Say hi."), stream=False, max_tokens=4, temperature=0, model="not-the-served-model")


def basic_seed(ctx: Ctx) -> str:
    """A seeded sampled request is reproducible, streamed or not (the stream adds no usage chunk
    here: include_usage is not asked)."""
    messages = chat_cases(ctx)[0]["messages"]
    sampling = dict(temperature=0.9, top_p=0.95, seed=1234, max_tokens=DEFAULT_MAX_TOKENS)
    a = generate(ctx, "chat", messages, stream=False, **sampling)
    b = generate(ctx, "chat", messages, stream=True, include_usage=False, **sampling)
    expect_text(ctx, b.text, a.text, "seed 1234 gives the same text streamed as not")
    return f"{len(a.text)} chars"


def token_boundaries(ctx: Ctx, text: str) -> set[int]:
    """Character offsets in `text` where the server's tokenization of it has a boundary."""
    try:
        tokens = tokenize(ctx, text)
        offsets = set()
        for i in range(1, len(tokens)):
            prefix = detokenize(ctx, tokens[:i])
            if text.startswith(prefix):
                offsets.add(len(prefix))
        return offsets
    except CheckFailed:  # tokenize is checked on its own; here it only refines the choice
        return set()


def pick_stop(ctx: Ctx, text: str) -> tuple[int, str] | None:
    """A 4-char stop string S = text[k:k+4] from the middle, first occurring at k, not only
    whitespace, preferably spanning a token boundary (so the server must hold text back)."""
    bounds = token_boundaries(ctx, text)
    mid = len(text) // 2
    candidates = []
    for k in sorted(range(3, len(text) - 4), key=lambda k: abs(k - mid)):
        s = text[k:k + 4]
        if text.find(s) == k and s.strip():
            candidates.append((k, s))
    spanning = [(k, s) for k, s in candidates if any(k < b < k + 4 for b in bounds)]
    return (spanning or candidates or [None])[0]


def basic_stop(ctx: Ctx, kind: str) -> str:
    """Greedy with stop=S, where S appears in the greedy text T first at k: the answer is T[:k],
    finish_reason 'stop', and S is never sent (also when streamed, where it spans chunks)."""
    for case in chat_cases(ctx) if kind == "chat" else completion_cases(ctx):
        prompt = case["messages"] if kind == "chat" else case["prompt"]
        text = case["text"]
        if text is None:  # no --expected: the server's own greedy text is T
            text = generate(ctx, kind, prompt, stream=False, max_tokens=case["max_tokens"], temperature=0).text
        picked = pick_stop(ctx, text)
        if picked:
            break
    else:
        raise Skip(f"no {kind} case has greedy text long enough (>= 8 chars) to cut a stop string from")
    k, stop = picked
    never = "\x07never-in-text\x07"
    variants = (
        (False, [stop]),
        (True, [stop]),
        (False, stop),  # a plain string
        (True, [never, stop]),  # one of several
    )
    for stream, stop_field in variants:
        gen = generate(ctx, kind, prompt, stream=stream, max_tokens=case["max_tokens"], temperature=0, stop=stop_field)
        ctx.expect(stop not in gen.text, f"the stop string {stop!r} not in the text", gen.text)
        expect_text(ctx, gen.text, text[:k], f"the greedy text cut just before {stop!r}")
        ctx.expect(gen.finish_reason == "stop", "finish_reason 'stop'", gen.finish_reason)
    return f"stop {stop!r} at char {k} of {len(text)}"


# --------------------------------------------------------------------------------------------
# concurrency


def concurrency(ctx: Ctx) -> str:
    """8 greedy streams at once: each completes with the text it gives alone (batching must not
    change results), and the batch should take less than the requests one after another."""
    # 8 different prompts: --expected's first, then built-ins.
    candidates = [("chat", c["messages"]) for c in ctx.expected["chat"]]
    candidates += [("completions", c["prompt"]) for c in ctx.expected["completions"]]
    candidates += [("chat", user(p)) for p in BUILTIN_CHAT] + [("completions", p) for p in BUILTIN_COMPLETIONS]
    jobs: list[tuple[str, Any]] = []
    for job in candidates:
        if job not in jobs and len(jobs) < 8:
            jobs.append(job)

    def run(job: tuple[str, Any]) -> Gen:
        return generate(ctx, job[0], job[1], stream=True, max_tokens=DEFAULT_MAX_TOKENS, temperature=0)

    alone = [run(job) for job in jobs]
    sum_alone = sum(g.seconds for g in alone)

    barrier = threading.Barrier(len(jobs))

    def run_together(job: tuple[str, Any]) -> Gen | CheckFailed:
        barrier.wait()
        try:
            return run(job)
        except CheckFailed as e:
            return e
        except Exception as e:  # noqa: BLE001 - reported with the others below
            return CheckFailed(ctx.request, "the stream to complete", describe_exception(e))

    start = time.perf_counter()
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(run_together, jobs))
    batch = time.perf_counter() - start

    problems = []
    for i, (job, a, t) in enumerate(zip(jobs, alone, together)):
        if isinstance(t, CheckFailed):
            problems.append(f"[{i}] {t}")
        elif t.text != a.text:
            problems.append(f"[{i}] {job[0]} {short(job[1], 100)}: alone {a.text!r}, together {t.text!r} ({first_difference(t.text, a.text)})")
    if problems:
        raise CheckFailed(
            f"{len(jobs)} concurrent streams, greedy, max_tokens {DEFAULT_MAX_TOKENS}",
            "every stream completes with the text it gives alone",
            "\n    " + "\n    ".join(problems),
        )
    return f"{len(jobs)} streams together {batch:.2f} s vs {sum_alone:.2f} s one after another ({sum_alone / batch:.1f}x)"


# --------------------------------------------------------------------------------------------
# errors


def chat_body(**fields: Any) -> dict:
    body = {"model": "any", "messages": user("Hi"), "max_tokens": 4}
    body.update(fields)
    return body


# (name, path, body: a JSON value or raw bytes, status, param: ... = any, str = exactly, tuple = one of)
ERROR_CASES: list[tuple[str, str, Any, int, Any]] = [
    ("not_json", CHAT, b'{"messages": [{"role": "user", "content": "Hi"}', 400, ...),
    ("body_not_object", CHAT, [1, 2, 3], 400, ...),
    ("messages_wrong_type", CHAT, chat_body(messages="hi"), 400, "messages"),
    ("messages_empty", CHAT, chat_body(messages=[]), 400, ("messages", None)),
    ("max_tokens_zero", CHAT, chat_body(max_tokens=0), 400, "max_tokens"),
    ("temperature_5", CHAT, chat_body(temperature=5), 400, "temperature"),
    ("top_p_0", CHAT, chat_body(top_p=0), 400, "top_p"),
    ("n_2", CHAT, chat_body(n=2), 400, "n"),
    ("min_p_2", CHAT, chat_body(min_p=2), 400, ("min_p", None)),
    ("detokenize_strings", "/detokenize", {"tokens": ["a"]}, 400, ("tokens", "tokens[0]", None)),
    ("prompt_missing", COMPLETIONS, {"model": "any", "max_tokens": 4}, 400, "prompt"),
]


def error_case(path: str, body: Any, status: int, param: Any) -> Callable[[Ctx], None]:
    def check(ctx: Ctx) -> None:
        expect_error(ctx, ctx.post(path, body), status, param)

    return check


def errors_unknown_path(ctx: Ctx) -> None:
    expect_error(ctx, ctx.get("/v1/no-such-endpoint"), 404)
    expect_error(ctx, ctx.post("/no-such-endpoint", {"x": 1}), 404)


def errors_body_too_large(ctx: Ctx) -> None:
    # 2 MiB of valid JSON: the size alone is the fault. The server may answer before reading it
    # all and close the connection; httpx still reads the answer it sent.
    body = json.dumps(chat_body(messages=user("a " * (1 << 20)))).encode()
    ctx.request = f"POST {CHAT} (a valid chat body of {len(body)} bytes)"
    try:
        r = ctx.http.post(CHAT, content=body, headers={"Content-Type": "application/json"})
    except httpx.TransportError as e:
        ctx.fail("HTTP 413 (the server may close the connection after answering)", f"no answer: {describe_exception(e)}")
    expect_error(ctx, r, 413)


def long_prompt(words: int) -> str:
    vocab = "the cat sat on a mat and we ran to it all day by sea".split()
    return " ".join(vocab[i % len(vocab)] for i in range(words))


def errors_context(ctx: Ctx, kind: str) -> str:
    """A prompt of ~2N words (so > N tokens) for a context of N: 400, and the message gives both
    numbers, the context and the prompt's token count."""
    if not ctx.context:
        raise Skip("no --context given")
    n = ctx.context
    words = 2 * n
    # Stay under the 1 MiB body limit (else this is the 413 case); ~4 bytes a word.
    if words * 4 > 900_000:
        words = 900_000 // 4
        if words <= n * 1.2:
            raise Skip(f"--context {n} is too large to exceed under the 1 MiB body limit")
    prompt = long_prompt(words)
    if kind == "chat":
        body = chat_body(messages=user(prompt))
        counts = None
    else:
        body = {"model": "any", "prompt": prompt, "max_tokens": 4}
        counts = {len(tokenize(ctx, prompt, False)), len(tokenize(ctx, prompt, True))}
    r = ctx.post(CHAT if kind == "chat" else COMPLETIONS, body)
    ctx.request = f"POST {CHAT if kind == 'chat' else COMPLETIONS} (a prompt of {words} words, context {n})"
    err = expect_error(ctx, r, 400)
    numbers = [int(x) for x in re.findall(r"\d+", err["message"])]
    ctx.expect(len(numbers) >= 2 and n in numbers, f"a message giving the context size {n} and the prompt's token count", err["message"])
    if counts is None:
        ctx.expect(any(x > n for x in numbers), f"a prompt token count > {n} in the message", err["message"])
    else:
        ctx.expect(bool(counts & set(numbers)), f"the prompt's token count (/tokenize: {sorted(counts)}) in the message", err["message"])
    return err["message"]


def errors_still_serving(ctx: Ctx) -> None:
    # None of the bad requests above may have taken the server down or leaked a slot.
    body = ctx.expect_ok(ctx.get("/health"))
    ctx.expect(body == {"status": "ok"}, '{"status": "ok"}', body)
    generate(ctx, "chat", user("Say hi."), stream=False, max_tokens=8, temperature=0)


# --------------------------------------------------------------------------------------------
# disconnect


def disconnect(ctx: Ctx) -> str:
    """A client that closes its connection mid-stream stops its generation: the slot is freed
    and llama_client_disconnects_total counts it, within 15 s."""
    need = ("llama_active_slots", "llama_client_disconnects_total")
    before = read_metrics(ctx, need)
    body = {
        "model": ctx.model,
        "messages": user(LONG_ANSWER),
        "max_tokens": 200,
        "temperature": 0,
        "stream": True,
    }
    chunks = 0
    with ctx.new_http() as client:
        ctx.request = f"POST {CHAT} {short(body)} (raw stream, closed after 2 text chunks)"
        with client.stream("POST", CHAT, json=body) as r:
            if r.status_code != 200:  # (read the body only then: reading it is waiting to the end)
                ctx.fail("HTTP 200 text/event-stream", f"HTTP {r.status_code} {short(r.read())}")
            for event in sse_events(r):
                ctx.expect(event != "[DONE]", "a stream still going after 2 text chunks (max_tokens 200)", f"[DONE] after {chunks}")
                ctx.expect("error" not in event, "content chunks", event)
                if event.get("choices") and event["choices"][0].get("delta", {}).get("content"):
                    chunks += 1
                if chunks == 2:
                    break
        # Leaving both blocks mid-body closes the socket: the client has gone away.
    ctx.expect(chunks == 2, "2 text chunks before the stream ended", f"{chunks}")
    closed = time.perf_counter()
    want = before["llama_client_disconnects_total"] + 1
    while True:
        m = read_metrics(ctx, need)
        if m["llama_active_slots"] == 0 and m["llama_client_disconnects_total"] >= want:
            break
        if time.perf_counter() - closed > 15:
            # If the model's answer ends by itself right after the 2 chunks, the server may
            # rightly finish before it sees the close: say how long the answer is, to tell.
            try:
                whole = generate(ctx, "chat", body["messages"], stream=False, max_tokens=200, temperature=0)
                note = f" (note: this prompt's whole greedy answer is {whole.usage.completion_tokens} tokens, finish {whole.finish_reason!r})"
            except Exception:  # noqa: BLE001 - only a note
                note = ""
            ctx.request = "GET /metrics (polled for 15 s after the client closed its stream)"
            ctx.fail(
                f"llama_active_slots == 0 and llama_client_disconnects_total >= {want:g}",
                f"llama_active_slots {m['llama_active_slots']:g}, llama_client_disconnects_total {m['llama_client_disconnects_total']:g}{note}",
            )
        time.sleep(0.1)
    freed = time.perf_counter() - closed
    generate(ctx, "chat", user("Say hi."), stream=False, max_tokens=8, temperature=0)
    return f"slot freed {freed:.2f} s after the close"


# --------------------------------------------------------------------------------------------
# queue


class StreamReader(threading.Thread):
    """Reads one raw chat stream to its end in the background, noting when it ends."""

    def __init__(self, ctx: Ctx, body: dict):
        super().__init__(daemon=True)
        self.ctx, self.body = ctx, body
        self.first_text = threading.Event()  # set at the first text chunk, or at the end
        self.status: int | None = None
        self.error: str | None = None
        self.text = ""
        self.finish: str | None = None
        self.done = False  # saw [DONE]
        self.ended_at = float("inf")

    def run(self) -> None:
        try:
            with self.ctx.new_http() as client, client.stream("POST", CHAT, json=self.body) as r:
                self.status = r.status_code
                if r.status_code != 200:
                    self.error = f"HTTP {r.status_code} {short(r.read())}"
                    return
                for event in sse_events(r):
                    if event == "[DONE]":
                        self.done = True
                        break
                    if "error" in event:
                        self.error = f"error chunk {short(event)}"
                    for choice in event.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") or ""
                        if piece:
                            self.text += piece
                            self.first_text.set()
                        self.finish = choice.get("finish_reason") or self.finish
        except Exception as e:  # noqa: BLE001 - reported by the check
            self.error = describe_exception(e)
        finally:
            self.ended_at = time.perf_counter()
            self.first_text.set()

    def problem(self) -> str | None:
        """Why this stream did not complete normally, or None."""
        if self.is_alive():
            return "still running"
        if self.error:
            return self.error
        if not self.done or self.finish not in FINISH_REASONS:
            return f"ended without finish_reason/[DONE] (finish {self.finish!r}, [DONE] {self.done})"
        return None


QUEUE_METRICS = ("llama_requests_rejected_total", "llama_queue_depth", "llama_active_slots")


def queue(ctx: Ctx) -> str:
    """With --parallel 1 --queue 1: A holds the slot, B waits in the queue, so C is refused at
    once with 503, Retry-After and the error object; A and B still complete.

    On a fast server A may end before C arrives, making the case moot (B takes the slot, C
    rightly waits and succeeds); that is told from when A's stream ended, and the attempt is
    repeated with a longer A. A C that is not refused although A's stream went on well after C
    was sent is the server's fault."""
    rejected_before = read_metrics(ctx, QUEUE_METRICS)["llama_requests_rejected_total"]
    for max_tokens in (64, 256, 1024):
        result = queue_attempt(ctx, max_tokens, rejected_before)
        if result is not None:
            return result
    raise Skip("request A (max_tokens 1024) kept ending about when C was sent; cannot fill the queue")


def queue_attempt(ctx: Ctx, max_tokens: int, rejected_before: float) -> str | None:
    def body(text: str, n: int) -> dict:
        return {"model": ctx.model, "messages": user(text), "max_tokens": n, "temperature": 0, "stream": True}

    a = StreamReader(ctx, body(LONG_ANSWER, max_tokens))
    a.start()
    ctx.request = f"POST {CHAT} {short(a.body)} (request A)"
    ctx.expect(a.first_text.wait(ctx.timeout) and a.error is None, "A streams text", a.error or "no text in time")
    b = StreamReader(ctx, body("Name three colours.", 16))
    b.start()
    # Give B up to 0.5 s to reach the queue; send C as soon as the gauge shows it there, so a
    # fast server's A is still running.
    deadline = time.perf_counter() + 0.5
    while True:
        gauges_sent = time.perf_counter()
        gauges = read_metrics(ctx, QUEUE_METRICS)
        if gauges["llama_queue_depth"] >= 1 or gauges_sent > deadline:
            break
        time.sleep(0.02)
    c_body = {"model": ctx.model, "messages": user("Say hi."), "max_tokens": 4, "temperature": 0}
    c_sent = time.perf_counter()
    r = ctx.post(CHAT, c_body)
    ctx.request = f"POST {CHAT} {short(c_body)} (request C, while A {short(a.body, 80)} runs and B waits)"
    # B holds its place (C was refused) but may reach the engine's queue a step later than its
    # place was taken: while A still runs, the gauges must come to show one slot busy and one
    # request waiting.
    waiting, polled = None, time.perf_counter()
    give_up = polled + 2.0
    while r.status_code == 503 and polled < give_up:
        polled = time.perf_counter()
        gauges = read_metrics(ctx, QUEUE_METRICS)
        if gauges["llama_active_slots"] == 1 and gauges["llama_queue_depth"] == 1:
            waiting = gauges
            break
        time.sleep(0.02)
    a.join(ctx.timeout)
    b.join(ctx.timeout)
    # A's end as the client saw it lags the server's by the delivery time: only an end well
    # after a moment proves A was still running at that moment.
    if r.status_code != 503:
        if a.ended_at > c_sent + LAG:
            ctx.fail(
                "HTTP 503 at once (slot busy with A, queue full with B)",
                f"HTTP {r.status_code} {short(r.text)}, although A's stream went on {a.ended_at - c_sent:.2f} s after C was sent",
            )
        return None  # A may have ended first: B took the slot and C rightly queued; longer A
    expect_error(ctx, r, 503)
    retry = r.headers.get("Retry-After", "")
    ctx.expect(retry.isdigit() and int(retry) >= 1, "a Retry-After header of whole seconds (>= 1)", f"Retry-After: {retry!r}")
    if waiting is None and a.ended_at > polled + LAG:  # A ran all the while the gauges were read
        ctx.request = "GET /metrics (while A ran and B waited)"
        ctx.fail(
            "llama_active_slots 1 and llama_queue_depth 1 within 2 s",
            f"llama_active_slots {gauges['llama_active_slots']:g}, llama_queue_depth {gauges['llama_queue_depth']:g}",
        )
    for name, reader in (("A", a), ("B", b)):
        ctx.request = f"POST {CHAT} {short(reader.body)} (request {name})"
        problem = reader.problem()
        ctx.expect(problem is None, f"request {name} completes normally after C's 503", problem or "")
    rejected = read_metrics(ctx, QUEUE_METRICS)["llama_requests_rejected_total"]
    ctx.expect(rejected >= rejected_before + 1, f"llama_requests_rejected_total >= {rejected_before + 1:g}", f"{rejected:g}")
    return f"503 with Retry-After: {retry} (A max_tokens {max_tokens})"


# --------------------------------------------------------------------------------------------
# auth


def auth_open_endpoints(ctx: Ctx) -> None:
    # The key guards /v1/*, /tokenize and /detokenize only: health and metrics stay open.
    with ctx.new_http(with_key=False) as bare:
        body = ctx.expect_ok(ctx.get("/health", bare))
        ctx.expect(body == {"status": "ok"}, '{"status": "ok"} without a key', body)
        r = ctx.get("/metrics", bare)
        ctx.expect(r.status_code == 200, "HTTP 200 without a key", f"HTTP {r.status_code} {short(r.text)}")


def auth_missing_key(ctx: Ctx) -> None:
    with ctx.new_http(with_key=False) as bare:
        expect_error(ctx, ctx.post(CHAT, chat_body(), bare), 401)
        expect_error(ctx, ctx.get("/v1/models", bare), 401)
        expect_error(ctx, ctx.post("/tokenize", {"content": "Hello"}, bare), 401)
        expect_error(ctx, ctx.post("/detokenize", {"tokens": [1]}, bare), 401)


def auth_wrong_key(ctx: Ctx) -> None:
    key = ctx.api_key
    with httpx.Client(base_url=ctx.base, timeout=ctx.timeout, headers={"Authorization": f"Bearer {key}x"}) as wrong:
        expect_error(ctx, ctx.post(CHAT, chat_body(), wrong), 401)
    ctx.request = "openai client with a wrong api_key: chat.completions.create"
    bad = openai.OpenAI(base_url=ctx.base + "/v1", api_key="wrong-" + key, max_retries=0, timeout=ctx.timeout)
    try:
        bad.chat.completions.create(model=ctx.model, messages=user("Hi"), max_tokens=4)
    except openai.AuthenticationError as e:
        ctx.expect(e.status_code == 401, "HTTP 401", e.status_code)
    else:
        ctx.fail("openai.AuthenticationError (401)", "a completion")


def auth_client_with_key(ctx: Ctx) -> None:
    generate(ctx, "chat", user("Say hi."), stream=False, max_tokens=8, temperature=0)
    generate(ctx, "chat", user("Say hi."), stream=True, max_tokens=8, temperature=0)


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


def describe_exception(e: BaseException) -> str:
    if isinstance(e, openai.APIStatusError):
        return f"HTTP {e.status_code} {short(e.response.text)}"
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e.__context__
        return f"{type(e).__name__}: {e}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
    if isinstance(e, openai.APIError):  # e.g. an error chunk inside a stream
        return f"{type(e).__name__}: {e} {short(getattr(e, 'body', None))}"
    return f"{type(e).__name__}: {e}"


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
