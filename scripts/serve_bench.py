#!/usr/bin/env python3
"""Load generator for OpenAI-compatible chat servers: ours (`--serve`) and llama.cpp's llama-server.

Command (from the repository root, with the project venv, which has httpx):

    .venv/bin/python scripts/serve_bench.py \
        --server tinygrad=http://127.0.0.1:8080 --server llama-server=http://127.0.0.1:8081 \
        --clients 1,4,8 --requests-per-client 4 --max-tokens 64 --json serve-bench.json

For each server, after one uncounted warm-up request, and for each client count N: N clients run
at once, each sending its requests one after another (a closed loop: a client sends its next
request when the previous one has finished) to `POST {URL}/v1/chat/completions` with
`stream: true`, `temperature: 0`, a fixed `max_tokens` and `ignore_eos: true` (llama-server
honours it; a server that ignores it may stop early, which is why completion tokens are measured
rather than assumed). The servers are measured one after the other, never at the same time: on a
small machine they would compete for the same cores.

Per request: TTFT (request sent -> first content chunk), the gaps between content chunks after the
first (per-token latency; one content chunk is one token on both servers except where text is
held back, e.g. an incomplete UTF-8 character or a possible stop string) and completion tokens
(the `usage` chunk that `stream_options.include_usage` asks for, else the content chunks counted).
Per run: aggregate generated tok/s = completion tokens of the successful requests / wall time of
the run (first request sent -> last request finished).

Prints a table and, with --json, writes the settings, every run's summary and every request's raw
numbers. Exit status: 0 when every request succeeded, 1 when some failed (they are counted in the
table and the JSON, the run goes on), 2 when a server is unreachable or the arguments are wrong
(nothing is measured then).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

try:
    import httpx
except ImportError:
    try:  # openai >= 3 (which set-up installs) depends on httpx2, a fork with the same API
        import httpx2 as httpx  # type: ignore[no-redef]
    except ImportError:  # a clear message rather than a traceback
        sys.exit("error: serve_bench.py needs httpx: run `cargo xtask setup` and use .venv/bin/python")

# Short, varied prompts: a fact, a list, code, a story, an explanation, a translation, arithmetic
# and a rewrite. Client c's request j uses prompt (c + j) % len(PROMPTS): deterministic, every
# client rotates through all of them, and clients running at the same time ask different things
# (identical concurrent prompts would let a server's prefix cache flatter it).
BUILTIN_PROMPTS = [
    "What is the capital of France?",
    "List three fruits that are red.",
    "Write a Python function that reverses a string.",
    "Tell me a very short story about a cat who learns to fly.",
    "Explain in two sentences why the sky is blue.",
    "Translate 'good morning, my friend' into Spanish.",
    "What is 17 multiplied by 23? Show your working.",
    "Rewrite this sentence more politely: give me the report now.",
]


# Seconds a refused connection is retried before the server is declared down (see wait_ready).
CONNECT_GRACE_S = 10.0


@dataclass
class RequestResult:
    """One request's raw numbers; times in milliseconds, `start_ms` from the start of its run."""

    client: int
    index: int  # the request's position in its client's sequence
    prompt_index: int
    ok: bool = False
    error: str | None = None
    http_status: int | None = None
    start_ms: float = 0.0
    ttft_ms: float | None = None
    total_ms: float | None = None
    content_chunks: int = 0
    usage_completion_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int = 0  # usage's count when the server sent one, else content_chunks
    finish_reason: str | None = None
    chunk_gaps_ms: list[float] = field(default_factory=list)


def die(message: str) -> None:
    """A fatal setup problem (bad arguments, a server that is down): say so, measure nothing, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it.

    Nearest-rank (rather than interpolation) so every reported number is one that was measured;
    with few samples p99 is simply the maximum, which is what it should say.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def parse_servers(specs: list[str]) -> list[tuple[str, str]]:
    servers = []
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            die(f"--server wants NAME=http://HOST:PORT, got {spec!r}")
        if name in (n for n, _ in servers):
            die(f"--server name {name!r} given twice")
        servers.append((name, url.rstrip("/")))
    return servers


def parse_clients(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        die(f"--clients wants a comma-separated list of integers, got {text!r}")
    if not counts or min(counts) < 1:
        die(f"--clients wants counts >= 1, got {text!r}")
    return counts


def load_prompts(spec: str) -> list[str]:
    """`builtin`, a .json file holding a list of strings, or a text file with one prompt a line."""
    if spec == "builtin":
        return list(BUILTIN_PROMPTS)
    path = Path(spec)
    if not path.is_file():
        die(f"--prompts: {spec!r} is neither 'builtin' nor a file")
    if path.suffix == ".json":
        prompts = json.loads(path.read_text())
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            die(f"--prompts: {spec} must hold a JSON list of strings")
    else:
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        die(f"--prompts: {spec} holds no prompts")
    return prompts


class Bench:
    def __init__(self, args: argparse.Namespace, prompts: list[str]):
        self.args = args
        self.prompts = prompts
        self.headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    def body(self, model: str, prompt: str) -> dict:
        return {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            # Ask for the usage chunk: the server's own token count beats counting chunks.
            "stream_options": {"include_usage": True},
            "max_tokens": self.args.max_tokens,
            # Greedy, so every server and every run generates the same kind of text.
            "temperature": 0,
            # llama-server's extension: generate max_tokens even past an end-of-generation token,
            # so every request does the same amount of work. Servers without it ignore the field.
            "ignore_eos": True,
        }

    async def wait_ready(self, client: httpx.AsyncClient, name: str, url: str) -> str:
        """Wait for /health to say 200 (503 means still loading); return the served model's id.

        Exits (status 2) naming the server when it cannot be reached or is not ready in time.
        """
        start = time.monotonic()
        deadline = start + self.args.ready_timeout
        # A refused connection is retried only briefly: a server started a moment ago may not
        # have bound its port yet, but one that is down will not come up while we wait, and
        # saying so at once beats waiting out --ready-timeout. A 503 (model loading) is waited on.
        connect_deadline = start + min(self.args.ready_timeout, CONNECT_GRACE_S)
        last = "no answer"
        while True:
            try:
                response = await client.get(f"{url}/health", headers=self.headers, timeout=5.0)
                if response.status_code == 200:
                    break
                last = f"/health answered {response.status_code}: {response.text[:200]!r}"
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}: {error}"
                if isinstance(error, httpx.ConnectError) and time.monotonic() > connect_deadline:
                    die(f"server {name!r} at {url} is not reachable ({last})")
            if time.monotonic() > deadline:
                die(f"server {name!r} at {url} not ready after {self.args.ready_timeout}s ({last})")
            await asyncio.sleep(0.5)
        # The request's `model` field: both servers accept anything, but sending the id they
        # report keeps the requests valid for a stricter server too.
        try:
            response = await client.get(f"{url}/v1/models", headers=self.headers, timeout=5.0)
            return response.json()["data"][0]["id"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            return "default"

    async def one_request(
        self, client: httpx.AsyncClient, url: str, model: str, result: RequestResult, run_start: float
    ) -> RequestResult:
        prompt = self.prompts[result.prompt_index]
        sent = time.perf_counter()
        result.start_ms = (sent - run_start) * 1000.0
        chunk_times: list[float] = []
        saw_done = False
        try:
            async with asyncio.timeout(self.args.timeout):
                async with client.stream(
                    "POST", f"{url}/v1/chat/completions", json=self.body(model, prompt), headers=self.headers
                ) as response:
                    result.http_status = response.status_code
                    if response.status_code != 200:
                        text = (await response.aread()).decode(errors="replace")
                        raise RuntimeError(f"HTTP {response.status_code}: {text[:300]}")
                    async for line in response.aiter_lines():
                        # Server-sent events: only `data:` lines matter (blank separators,
                        # comments and `event:` lines are skipped).
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            saw_done = True
                            break
                        chunk = json.loads(data)
                        if not isinstance(chunk, dict):
                            raise RuntimeError(f"not a JSON object: {data[:300]}")
                        if chunk.get("error"):
                            raise RuntimeError(f"error chunk: {json.dumps(chunk['error'])[:300]}")
                        for choice in chunk.get("choices") or []:
                            content = (choice.get("delta") or {}).get("content")
                            # The opening role chunk has "" (ours) or null (llama-server):
                            # only text counts as a token's arrival.
                            if isinstance(content, str) and content:
                                chunk_times.append(time.perf_counter())
                            if choice.get("finish_reason"):
                                result.finish_reason = choice["finish_reason"]
                        usage = chunk.get("usage")
                        if usage:
                            result.usage_completion_tokens = usage.get("completion_tokens")
                            result.prompt_tokens = usage.get("prompt_tokens")
            if not saw_done:
                raise RuntimeError("stream ended without data: [DONE]")
            if not chunk_times:
                raise RuntimeError("stream carried no content")
            result.ok = True
        except TimeoutError:
            result.error = f"timed out after {self.args.timeout}s"
        except (httpx.HTTPError, RuntimeError, ValueError) as error:  # ValueError: bad JSON
            result.error = f"{type(error).__name__}: {error}" if not isinstance(error, RuntimeError) else str(error)
        finished = time.perf_counter()
        result.total_ms = (finished - sent) * 1000.0
        result.content_chunks = len(chunk_times)
        if chunk_times:
            result.ttft_ms = (chunk_times[0] - sent) * 1000.0
            result.chunk_gaps_ms = [(b - a) * 1000.0 for a, b in zip(chunk_times, chunk_times[1:])]
        result.completion_tokens = (
            result.usage_completion_tokens if result.usage_completion_tokens is not None else result.content_chunks
        )
        return result

    async def run_clients(self, client: httpx.AsyncClient, url: str, model: str, n_clients: int) -> dict:
        run_start = time.perf_counter()

        async def one_client(c: int) -> list[RequestResult]:
            results = []
            for j in range(self.args.requests_per_client):
                result = RequestResult(client=c, index=j, prompt_index=(c + j) % len(self.prompts))
                results.append(await self.one_request(client, url, model, result, run_start))
            return results

        per_client = await asyncio.gather(*(one_client(c) for c in range(n_clients)))
        requests = [r for results in per_client for r in results]
        # Wall time: the first request sent -> the last one finished (failed ones included:
        # the time they took was spent all the same).
        first = min(r.start_ms for r in requests)
        last = max(r.start_ms + (r.total_ms or 0.0) for r in requests)
        wall_s = (last - first) / 1000.0
        ok = [r for r in requests if r.ok]
        # Only successful requests' tokens count: a failed stream's partial output is not the
        # work that was asked for.
        tokens = sum(r.completion_tokens for r in ok)
        ttfts = [r.ttft_ms for r in ok if r.ttft_ms is not None]
        gaps = [g for r in ok for g in r.chunk_gaps_ms]
        return {
            "clients": n_clients,
            "wall_s": wall_s,
            "completion_tokens": tokens,
            "aggregate_tok_s": tokens / wall_s if wall_s > 0 else 0.0,
            "mean_completion_tokens": tokens / len(ok) if ok else None,
            "ttft_ms": {"p50": percentile(ttfts, 50), "p99": percentile(ttfts, 99), "n": len(ttfts)},
            "per_token_ms": {"p50": percentile(gaps, 50), "p99": percentile(gaps, 99), "n": len(gaps)},
            "ok": len(ok),
            "failed": len(requests) - len(ok),
            "errors": sorted({r.error for r in requests if r.error}),
            "requests": [asdict(r) for r in requests],
        }

    async def bench_server(self, name: str, url: str) -> dict:
        max_clients = max(self.args.clients)
        # One connection per client, kept alive between its requests, as a real client would.
        limits = httpx.Limits(max_connections=max_clients, max_keepalive_connections=max_clients)
        # The read timeout is the longest silence within a stream; asyncio.timeout bounds the whole.
        timeout = httpx.Timeout(self.args.timeout, connect=10.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            model = await self.wait_ready(client, name, url)
            print(f"{name}: {url} serves {model!r}", file=sys.stderr)
            # Warm-up: the first request pays for page faults, lazy allocation and compilation
            # (our tinygrad backend compiles kernels on first use); it is not counted.
            warm = await self.one_request(
                client, url, model, RequestResult(client=-1, index=0, prompt_index=0), time.perf_counter()
            )
            if not warm.ok:
                print(f"{name}: warm-up request failed: {warm.error}", file=sys.stderr)
            runs = []
            for n_clients in self.args.clients:
                run = await self.run_clients(client, url, model, n_clients)
                print(
                    f"{name}: {n_clients} client(s): {run['aggregate_tok_s']:.1f} tok/s, "
                    f"{run['ok']} ok, {run['failed']} failed, {run['wall_s']:.1f} s",
                    file=sys.stderr,
                )
                for error in run["errors"]:
                    print(f"{name}:   error: {error}", file=sys.stderr)
                runs.append(run)
        # Scaling: each run's aggregate over the 1-client run's (or the smallest count's when 1
        # was not asked for), the number that says what concurrency buys.
        base = min(runs, key=lambda r: r["clients"])
        for run in runs:
            run["scaling"] = run["aggregate_tok_s"] / base["aggregate_tok_s"] if base["aggregate_tok_s"] else None
            run["scaling_base_clients"] = base["clients"]
        return {"name": name, "url": url, "model": model, "warmup": asdict(warm), "runs": runs}


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(servers: list[dict]) -> None:
    headers = ["server", "clients", "tok/s", "TTFT p50", "TTFT p99", "tok p50", "tok p99", "tok/req", "ok", "fail"]
    headers.append("scaling")
    rows = []
    for server in servers:
        for run in server["runs"]:
            ttft, gap = run["ttft_ms"], run["per_token_ms"]
            rows.append(
                [server["name"], str(run["clients"]), fmt(run["aggregate_tok_s"]), fmt(ttft["p50"]), fmt(ttft["p99"])]
                + [fmt(gap["p50"], 2), fmt(gap["p99"], 2), fmt(run["mean_completion_tokens"])]
                + [str(run["ok"]), str(run["failed"]), fmt(run["scaling"], 2)]
            )
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers] + rows:  # the name left-aligned, the numbers right-aligned
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    bases = sorted({run["scaling_base_clients"] for server in servers for run in server["runs"]})
    print(
        "tok/s: completion tokens of the successful requests / the run's wall time. TTFT and tok (the gap "
        "between content chunks) in ms, nearest-rank percentiles. tok/req: mean completion tokens. "
        f"scaling: tok/s / the same server's tok/s with {'/'.join(map(str, bases))} client(s)."
    )


async def main_async(args: argparse.Namespace) -> int:
    servers = parse_servers(args.server)
    prompts = load_prompts(args.prompts)
    bench = Bench(args, prompts)
    # Check every server before measuring any, so a typo in the last URL does not waste the
    # minutes spent on the first ones.
    async with httpx.AsyncClient() as client:
        for name, url in servers:
            await bench.wait_ready(client, name, url)
    started = time.time()
    results = []
    for name, url in servers:
        results.append(await bench.bench_server(name, url))
    print_table(results)
    failed = sum(run["failed"] for server in results for run in server["runs"])
    if args.json:
        report = {
            "settings": {
                "argv": sys.argv,
                "servers": [{"name": n, "url": u} for n, u in servers],
                "clients": args.clients,
                "requests_per_client": args.requests_per_client,
                "max_tokens": args.max_tokens,
                "temperature": 0,
                "ignore_eos": True,
                "timeout_s": args.timeout,
                "prompts": prompts,
                "prompt_rotation": "client c's request j uses prompts[(c + j) % len(prompts)]",
                "percentiles": "nearest-rank",
                "started_unix": started,
                "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
            },
            "servers": results,
            "failed_requests": failed,
        }
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if failed:
        print(f"warning: {failed} request(s) failed (see the table and the errors above)", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", action="append", required=True, metavar="NAME=URL", help="a server to measure (repeatable)"
    )
    parser.add_argument("--clients", type=parse_clients, default=[1, 4, 8], help="concurrent client counts (1,4,8)")
    parser.add_argument("--requests-per-client", type=int, default=4, help="requests each client sends in turn (4)")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request (64)")
    parser.add_argument("--prompts", default="builtin", help="'builtin', a .json list of strings, or one per line")
    parser.add_argument("--json", metavar="OUT", help="write settings, summaries and raw numbers here")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take (300)")
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for /health 200 (60)")
    parser.add_argument("--api-key", default=os.environ.get("SERVE_BENCH_API_KEY"), help="sent as a Bearer token")
    args = parser.parse_args()
    if args.requests_per_client < 1 or args.max_tokens < 1:
        parser.error("--requests-per-client and --max-tokens must be >= 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
