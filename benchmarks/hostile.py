"""Hostile and careless clients against `mstsb-onnx serve` (defaults) on 127.0.0.1: what holds.

    python -m benchmarks.hostile --data ../shared/data/mstsb/sentences-unscored.csv

Each attack runs against a fresh server with the default limits (``ServeConfig``) on the
XLM-R-base-shaped int8 export, while one well-behaved client keeps sending 1-4 real sentences;
recorded per attack: how long the server kept the hostile connections, what it answered them,
the bytes of request bodies it held (``mstsb_body_bytes_reserved``, peak), its RSS before and at
the end, and the well-behaved client's answers. Writes ``benchmarks/results/hostile.{json,md}``.
Loopback only; every loop bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOLD_LIMIT_S = 45.0  # an attack's connections are watched this long at most


def _attacks() -> dict[str, tuple[int, list[bytes], float]]:
    """name -> (connections, what each sends in order, seconds between the parts)."""
    big = 8 * 1024 * 1024
    head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return {
        "silent connections": (30, [], 0.0),
        "half a request line": (30, [b"POST /v1/embe"], 0.0),
        "headers without the blank line": (30, [head + b"Content-Length: 20\r\n"], 0.0),
        "half a body": (30, [head + b"Content-Length: 40\r\n\r\n{\"input\": "], 0.0),
        "body trickled, 1 byte / 2 s": (4, [head + b"Content-Length: 30\r\n\r\n"] + [b" "] * 30, 2.0),
        "8 MiB announced, all but 1 KiB sent": (30, [head + b"Content-Length: %d\r\n\r\n" % big, b" " * (big - 1024)],
                                                0.0),
    }


async def _hostile(port: int, parts: list[bytes], pause: float) -> dict:
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
    except ConnectionError:
        pass  # the server ended it while we were still sending; what it said is still to be read
    try:
        answer = await asyncio.wait_for(reader.read(200), max(0.1, HOLD_LIMIT_S - (time.monotonic() - start)))
        ended = True  # an answer, or the connection closed
    except asyncio.TimeoutError:
        answer, ended = b"", False
    except ConnectionError:
        answer, ended = b"", True
    finally:
        writer.close()
    status = answer.split(b"\r\n", 1)[0].decode("latin-1") if answer else ("closed without an answer" if ended
                                                                            else f"still open at {HOLD_LIMIT_S:g} s")
    return {"held_s": time.monotonic() - start, "closed_by_server": ended, "answer": status}


async def _polite(base: str, texts: list[list[str]], stop: asyncio.Event) -> list[int]:
    import httpx

    codes: list[int] = []
    async with httpx.AsyncClient(timeout=30) as http:
        for chosen in texts:
            if stop.is_set():
                break
            try:
                codes.append((await http.post(base + "/v1/embeddings", json={"input": chosen})).status_code)
            except httpx.HTTPError:
                codes.append(0)
            await asyncio.sleep(0.2)
    return codes


async def _peak_reserved(base: str, stop: asyncio.Event) -> float:
    import httpx

    peak = 0.0
    async with httpx.AsyncClient(timeout=5) as http:
        while not stop.is_set():
            for line in (await http.get(base + "/metrics")).text.splitlines():
                if line.startswith("mstsb_body_bytes_reserved "):
                    peak = max(peak, float(line.split()[1]))
            await asyncio.sleep(0.2)
    return peak


async def attack(base: str, pid: int, conns: int, parts: list[bytes], pause: float, polite: list[list[str]]) -> dict:
    from benchmarks.common import proc_status_mib

    port = int(base.rsplit(":", 1)[1])
    rss_before = proc_status_mib("VmRSS", pid)
    stop = asyncio.Event()
    watcher = asyncio.create_task(_peak_reserved(base, stop))
    friend = asyncio.create_task(_polite(base, polite, stop))
    results = await asyncio.gather(*(_hostile(port, parts, pause) for _ in range(conns)))
    stop.set()
    codes, peak = await friend, await watcher
    answers: dict[str, int] = {}
    for r in results:
        answers[r["answer"]] = answers.get(r["answer"], 0) + 1
    return {"connections": conns, "closed_by_server": sum(r["closed_by_server"] for r in results),
            "longest_held_s": max(r["held_s"] for r in results), "answers": answers,
            "peak_body_bytes_reserved": peak, "rss_before_mib": rss_before,
            "rss_after_mib": proc_status_mib("VmRSS", pid), "rss_peak_mib": proc_status_mib("VmHWM", pid),
            "polite_requests": len(codes), "polite_ok": codes.count(200)}


def markdown(result: dict) -> str:
    m, code = result["machine"], result["code"]
    lines = ["# Hostile clients against `mstsb-onnx serve` (default limits)", "",
             f"CPU: {m['cpu']}, {m['cores_available']} cores; {m['date']}; commit {str(code.get('commit'))[:12]}"
             f"{' (uncommitted changes)' if code.get('dirty') else ''}. Limits: " +
             ", ".join(f"{k} {v}" for k, v in result["limits"].items()) + ".", "",
             "| attack | connections | closed by the server | longest held, s | answers | body bytes held, peak | "
             "server RSS before -> after (peak), MiB | polite client: 200s / requests |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in result["attacks"].items():
        answers = "; ".join(f"{k} x{v}" for k, v in r["answers"].items())
        lines.append(f"| {name} | {r['connections']} | {r['closed_by_server']} | {r['longest_held_s']:.1f} | {answers} "
                     f"| {r['peak_body_bytes_reserved']:,.0f} | {r['rss_before_mib']:.0f} -> {r['rss_after_mib']:.0f} "
                     f"({r['rss_peak_mib']:.0f}) | {r['polite_ok']} / {r['polite_requests']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import load_sample, machine_info, paths_only, write_results
    from benchmarks.load import make_requests, start_server
    from mstsb_onnx.export.provenance import code_revision
    from mstsb_onnx.serve.config import ServeConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="sentences-unscored.csv")
    p.add_argument("--model", help="exported folder (default: the base-shaped int8 export)")
    args = p.parse_args(argv)
    model = Path(args.model or paths_only(str(HERE.parent / "models"))["int8"])
    d = ServeConfig(model_dir="")
    result = {"code": code_revision(), "machine": machine_info(), "model": str(model), "attacks": {},
              "limits": {"--header-timeout": d.header_timeout_s, "--read-timeout": d.read_timeout_s,
                         "--max-connections": d.max_connections, "--max-body-bytes": d.max_body_bytes,
                         "--max-buffered-bytes": d.max_buffered_bytes}}
    polite = make_requests(load_sample(Path(args.data), 256), 400)
    for name, (conns, parts, pause) in _attacks().items():
        proc, base = start_server(model, [])
        try:
            result["attacks"][name] = asyncio.run(attack(base, proc.pid, conns, parts, pause, polite))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        print(name, json.dumps(result["attacks"][name]), flush=True)
    write_results("hostile", result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
