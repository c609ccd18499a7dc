"""check_server.py's answer checks: `basic` (each endpoint, the CLI's replies, seeds, stop
strings) and `concurrency` (eight streams at once give what each gives alone)."""

from __future__ import annotations

from serve_harness import *  # noqa: F403 (the harness is these checks' vocabulary)


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
