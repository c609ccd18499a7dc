"""check_server.py's fault checks: `errors` (every bad input and its status), `disconnect`,
`queue` (a full queue gets 503) and `auth` (the API key)."""

from __future__ import annotations

from serve_harness import *  # noqa: F403 (the harness is these checks' vocabulary)


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
