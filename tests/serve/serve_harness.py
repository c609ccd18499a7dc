"""The harness behind check_server.py: the context every check gets (a client, expected
replies, the failure it raises), the calls that make and read requests, and the shapes they check
against docs/serve.md."""

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


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]




def describe_exception(e: BaseException) -> str:
    if isinstance(e, openai.APIStatusError):
        return f"HTTP {e.status_code} {short(e.response.text)}"
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e.__context__
        return f"{type(e).__name__}: {e}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
    if isinstance(e, openai.APIError):  # e.g. an error chunk inside a stream
        return f"{type(e).__name__}: {e} {short(getattr(e, 'body', None))}"
    return f"{type(e).__name__}: {e}"
