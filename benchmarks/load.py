"""Bounded load and soak test of `mstsb-onnx serve` on 127.0.0.1 (XLM-R-base-shaped int8 model).

    python -m benchmarks.load --data ../shared/data/mstsb/sentences-unscored.csv

1. Load: N requests (default 5,000) from C concurrent clients (default 32), each request 1-4 real
   multilingual sentences; throughput, p50/p99 latency and errors, for the default server
   (micro-batching) and for the same server with batching off (--max-batch-tokens 1: every request
   runs alone).
   Then an open-loop phase on each: requests sent at a fixed rate (default 40/s for 30 s)
   whatever the answers, the traffic of many independent users; latency from the scheduled time.
2. Soak: the default server under the same load for S seconds (default 180), its RSS sampled
   every 5 s: it must level off, not grow without bound.
Writes benchmarks/results/load.json and load.md. Traffic goes to 127.0.0.1 only, and every loop is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, caption, code_revision, load_sample, machine_info, paths_only, proc_status_mib


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, extra: list[str], cores: set[int] | None = None) -> tuple[subprocess.Popen, str]:
    """``mstsb-onnx serve`` in a new process (pinned to ``cores`` from its first instruction)."""
    import httpx

    port = _port()
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    proc = subprocess.Popen([sys.executable, "-m", "mstsb_onnx.cli", "serve", str(model), "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=pin)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start: " + proc.stderr.read().decode()[-2000:])


async def _timed_post(http, base: str, texts: list[str], since: float, latencies: list[float]) -> bool:
    """POST one embeddings request; on success record seconds since ``since``. True if it succeeded."""
    import httpx

    try:
        res = await http.post(base + "/v1/embeddings", json={"model": "m", "input": texts}, timeout=60)
    except httpx.HTTPError:
        return False
    if res.status_code != 200:
        return False
    latencies.append(time.perf_counter() - since)
    return True


async def drive(base: str, requests: list[list[str]], concurrency: int, deadline: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    it = iter(requests)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for texts in it:
            if time.perf_counter() > deadline:
                return
            errors += not await _timed_post(http, base, texts, time.perf_counter(), latencies)

    start = time.perf_counter()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    wall = time.perf_counter() - start
    done = len(latencies)
    return {"requests": done + errors, "errors": errors, "seconds": wall, "requests_per_s": done / wall,
            "sentences_per_s": sum(len(r) for r in requests[: done + errors]) / wall if done else 0.0,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
            "p99_ms": 1000 * float(np.percentile(latencies, 99)) if latencies else None}


async def drive_open(base: str, requests: list[list[str]], rate: float, deadline: float) -> dict:
    """Open loop: request i is sent at ``i / rate`` s whether or not earlier ones have returned.

    Unlike ``drive`` (clients that wait for their answer, so they fall into step with the
    server's batches), arrivals here do not depend on the server -- the traffic of many
    independent users. Latency counts from the scheduled send time, so a client that falls behind
    is billed to the server too (no coordinated omission).
    """
    import httpx

    latencies: list[float] = []
    errors = 0

    async def one(http: httpx.AsyncClient, texts: list[str], scheduled: float) -> None:
        nonlocal errors
        errors += not await _timed_post(http, base, texts, scheduled, latencies)

    start = time.perf_counter()
    tasks = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=512)) as http:
        for i, texts in enumerate(requests):
            scheduled = start + i / rate
            if scheduled > deadline:
                break
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            tasks.append(asyncio.create_task(one(http, texts, scheduled)))
        await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    return {"offered_requests_per_s": rate, "requests": len(tasks), "errors": errors, "seconds": wall,
            "requests_per_s": len(latencies) / wall,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
            "p99_ms": 1000 * float(np.percentile(latencies, 99)) if latencies else None}


def make_requests(sentences: list[str], n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[sentences[int(i)] for i in rng.integers(len(sentences), size=int(rng.integers(1, 5)))] for _ in range(n)]


def write_report(out: dict) -> None:
    head = (caption(out["machine"], out["code"]) if "machine" in out else "Machine and commit not recorded (a run of 2026-11-28).")
    rows = [f"{out['requests']:,} requests from {out['concurrency']} clients of 1-4 real sentences, base-shaped int8; "
            f"client and server share the machine (`benchmarks/load.py`). {head}", "",
            "| server | requests | errors | requests/s | sentences/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for name in ("micro-batching (default)", "batching off"):
        r = out[name]
        rows.append(f"| {name} | {r['requests']} | {r['errors']} | {r['requests_per_s']:.1f} | {r['sentences_per_s']:.1f} "
                    f"| {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    if all("open_loop" in out[n] for n in ("micro-batching (default)", "batching off")):
        rate = out["batching off"]["open_loop"]["offered_requests_per_s"]
        rows += ["", f"Open loop, {rate:.0f} requests/s offered (independent arrivals; latency from the scheduled send):",
                 "", "| server | requests | errors | answered/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
        for name in ("micro-batching (default)", "batching off"):
            o = out[name]["open_loop"]
            rows.append(f"| {name} | {o['requests']} | {o['errors']} | {o['requests_per_s']:.1f} | {o['p50_ms']:.0f} "
                        f"| {o['p99_ms']:.0f} |")
    s = out["soak"]
    rss = s["rss_mib_samples"]
    per_minute = rss[::12]  # one sample every 5 s
    half = rss[len(rss) // 2 :]
    rows += ["", f"Soak: {s['seconds']:.0f} s at 8 concurrent clients, {s['requests']} requests, {s['errors']} errors. "
                 f"Server RSS (MiB): first {rss[0]}, max {max(rss)}, last {rss[-1]}; over the second half "
                 f"{min(half)} -> {half[-1]} (+{half[-1] - min(half):.1f}); one sample a minute: {per_minute}"]
    (RESULTS / "load.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--soak-seconds", type=float, default=180)
    p.add_argument("--open-rate", type=float, default=40.0, help="requests/s of the open-loop phase")
    p.add_argument("--open-seconds", type=float, default=30.0, help="length of the open-loop phase")
    p.add_argument("--max-seconds", type=float, default=600, help="hard bound per load run")
    p.add_argument("--report-only", action="store_true", help="rewrite load.md from load.json, measure nothing")
    args = p.parse_args(argv)
    if args.report_only:
        write_report(json.loads((RESULTS / "load.json").read_text()))
        return 0
    model = paths_only(str(args.models_dir.resolve()))["int8"]
    reqs = make_requests(load_sample(args.data, 2048), args.requests)
    out: dict = {"requests": args.requests, "concurrency": args.concurrency, "code": code_revision(),
                 "machine": machine_info()}
    open_reqs = reqs[: int(args.open_rate * args.open_seconds)]
    for name, extra in (("micro-batching (default)", []), ("batching off", ["--max-batch-tokens", "1"])):
        proc, base = start_server(model, extra)
        try:
            out[name] = asyncio.run(drive(base, reqs, args.concurrency, time.perf_counter() + args.max_seconds))
            out[name]["open_loop"] = asyncio.run(
                drive_open(base, open_reqs, args.open_rate, time.perf_counter() + args.max_seconds))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        print(name, out[name], flush=True)
    proc, base = start_server(model, [])
    rss = []
    try:
        end = time.perf_counter() + args.soak_seconds
        soak_reqs = make_requests(load_sample(args.data, 2048), 10**6, seed=1)
        loop_deadline = end
        import threading

        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss.append(round(proc_status_mib("VmRSS", proc.pid), 1))
                stop.wait(5)

        sampler = threading.Thread(target=sample)
        sampler.start()
        out["soak"] = asyncio.run(drive(base, soak_reqs, 8, loop_deadline))
        stop.set()
        sampler.join()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    out["soak"]["rss_mib_samples"] = rss
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(out, indent=2) + "\n")
    write_report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
