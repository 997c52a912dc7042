"""Layouts x cores: what each way of running the engine gets out of N cores, against the capacity.

    python -m benchmarks.many_core --data ../shared/data/mstsb/sentences-unscored.csv [--cores 1,2]

For each core count N (cores 0..N-1), every row is measured in fresh processes pinned to those
cores, round-robin over the rows for ``--rounds`` rounds, medians reported:

- capacity: N processes x 1 thread, each ``encode(batch_size=32)`` on its share of the texts,
  started together; texts / (last end - first start); once with each process held to its own
  core, once with each free on all N. Every ratio in the table is to the larger of the two.
- one session at T threads (T = 1, 2, 4, ... N), one caller: the old ``encode``.
- the three paths with their defaults: ``Embedder(path).encode``, ``mstsb-onnx embed``'s
  embedder over a text file, and ``mstsb-onnx serve`` under 64 clients sending 1-4 texts
  (base64 vectors, as the OpenAI SDK asks). The server is counted server-side
  (``mstsb_inputs_total`` over a window); its load generator shares the N cores, so its own CPU
  share is reported too.
- torch fp32 (sentence-transformers) at N threads.

Peak RSS per row (VmHWM; summed over the capacity's processes). Writes
``benchmarks/results/many_core.{json,md}`` with the CPU and commit. Real multilingual sentences
from the data file; the XLM-R-base-shaped int8 export by default (speed does not depend on
weight values).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CLIENTS = 64
CAPACITY = "capacity: N processes x 1 thread, one core each"
CAPACITY_FREE = "N processes x 1 thread, each free on all N cores"
PEERS_PYTHON = "models/.peers-venv/bin/python"


# --- children: one measurement each, pinned before onnxruntime is imported ----------------------


def _child(argv: list[str]) -> None:
    kind, cores, model, texts_file = argv[0], argv[1], argv[2], argv[3]
    os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
    texts = json.loads(Path(texts_file).read_text())
    from benchmarks.common import proc_status_mib

    if kind == "capacity":  # one of N processes: wait for the common start, then its share
        index, n, start_at = int(argv[4]), int(argv[5]), float(argv[6])
        from mstsb_onnx import Embedder

        emb = Embedder(model, threads=1, runners=1)
        emb.encode(texts[:8])
        time.sleep(max(0.0, start_at - time.time()))
        t0, c0 = time.time(), time.process_time()
        emb.encode(texts[index::n], batch_size=32)
        out = {"start": t0, "end": time.time(), "cpu_s": time.process_time() - c0}
    else:
        run = _runner(kind, model, argv[4:])
        run(texts[:64])  # warm-up: sessions made, arenas grown
        t0, c0 = time.perf_counter(), time.process_time()
        run(texts)
        wall = time.perf_counter() - t0
        # CPU time over wall: a library that escapes the pinned cores shows here as more cores than given.
        out = {"sent_s": len(texts) / wall, "cpu_cores": (time.process_time() - c0) / wall}
    out["rss_mib"] = proc_status_mib("VmHWM")
    print(json.dumps(out))


def _runner(kind: str, model: str, rest: list[str]):
    if kind == "session":  # one session at T threads, one caller
        from mstsb_onnx import Embedder

        emb = Embedder(model, threads=int(rest[0]), runners=1)
        return lambda texts: emb.encode(texts, batch_size=32)
    if kind == "encode":  # the default Embedder
        from mstsb_onnx import Embedder

        emb = Embedder(model)
        return lambda texts: emb.encode(texts, batch_size=32)
    if kind == "embed":  # what `mstsb-onnx embed` runs, on a text file
        import io

        from mstsb_onnx.corpus.bulk import corpus_embedder, embed_file

        emb = corpus_embedder(model)
        tmp = Path(tempfile.mkdtemp())

        def run(texts: list[str]) -> None:
            src = tmp / "in.txt"
            src.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
            (tmp / "out.npy").unlink(missing_ok=True)
            embed_file(emb, str(src), tmp / "out.npy", log=io.StringIO())
        return run
    if kind == "torch":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        st = SentenceTransformer(rest[0], device="cpu")

        def run_torch(texts: list[str]) -> None:
            with torch.inference_mode():
                st.encode(texts, batch_size=32)
        return run_torch
    if kind in ("openvino", "ctranslate2"):
        return _peer(kind, Path(rest[0]), Path(model) / "tokenizer.json")
    raise ValueError(f"unknown child kind {kind!r}")


def _peer(kind: str, path: Path, tokenizer_json: Path):
    """A peer at its own throughput setting on every pinned core (run in the peers' venv):
    OpenVINO's THROUGHPUT hint (its streams through an AsyncInferQueue), CTranslate2 with
    ``inter_threads`` = cores (one-thread replicas, fed by as many Python threads)."""
    import numpy as np

    from benchmarks.peers import Batches

    n = len(os.sched_getaffinity(0))
    batches = Batches(tokenizer_json)
    if kind == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": n,
                                                              "PERFORMANCE_HINT": "THROUGHPUT"})
        queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

        def run_ov(texts: list[str]) -> None:
            for rows, ids, mask in batches(texts, 32):
                queue.start_async({"input_ids": ids, "attention_mask": mask}, rows)
            queue.wait_all()
        return run_ov
    import ctranslate2
    from concurrent.futures import ThreadPoolExecutor

    encoder = ctranslate2.Encoder(str(path), device="cpu", compute_type="int8", inter_threads=n, intra_threads=1)
    pool = ThreadPoolExecutor(n)

    def one(batch: tuple) -> np.ndarray:
        _, ids, mask = batch
        lengths = mask.sum(1)
        out = encoder.forward_batch([row[:k].tolist() for row, k in zip(ids, lengths)])
        hidden = np.asarray(out.last_hidden_state, dtype=np.float32)
        m = mask[:, : hidden.shape[1], None].astype(np.float32)
        return (hidden * m).sum(1) / m.sum(1)

    return lambda texts: list(pool.map(one, batches(texts, 32)))


# --- parent: rows, rounds, the server, the report ---------------------------------------------


def _spawn(args: list[str], python: str = sys.executable) -> subprocess.Popen:
    return subprocess.Popen([python, "-m", "benchmarks.many_core", "--child", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parent)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"child failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def capacity(cores: list[int], model: str, texts_file: str, pin_each: bool = True) -> dict:
    """N one-thread processes started together, each on its own core (``pin_each``) or free on all N."""
    start_at = time.time() + 8 + 2 * len(cores)  # every process loaded and warm by then
    allowed = [str(c) if pin_each else ",".join(map(str, cores)) for c in cores]
    procs = [_spawn(["capacity", allowed[i], model, texts_file, str(i), str(len(cores)), str(start_at)])
             for i in range(len(cores))]
    outs = [_result(p) for p in procs]
    n = len(json.loads(Path(texts_file).read_text()))
    wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    return {"sent_s": n / wall, "rss_mib": sum(o["rss_mib"] for o in outs),
            "cpu_cores": sum(o["cpu_s"] for o in outs) / wall}


def measure(kind: str, cores: list[int], model: str, texts_file: str, *rest: str, python: str = sys.executable) -> dict:
    return _result(_spawn([kind, ",".join(map(str, cores)), model, texts_file, *rest], python))


def server(cores: list[int], model: str, texts: list[str], seconds: float) -> dict:
    """``mstsb-onnx serve`` (defaults) pinned to ``cores``; 64 keep-alive clients; counted server-side."""
    from benchmarks.common import proc_status_mib
    from benchmarks.load import start_server

    proc, base = start_server(Path(model), [], cores=set(cores))
    try:
        port = int(base.rsplit(":", 1)[1])
        out = asyncio.run(_drive(port, texts, seconds, proc.pid))
        out["rss_mib"] = proc_status_mib("VmHWM", proc.pid)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(port: int, texts: list[str], seconds: float, server_pid: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(512):
        chosen = [texts[int(i)] for i in rng.integers(len(texts), size=int(rng.integers(1, 5)))]
        body = json.dumps({"model": "m", "input": chosen, "encoding_format": "base64"}).encode()
        bodies.append(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    stop = time.perf_counter() + seconds + 3
    errors = 0

    async def client(k: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while time.perf_counter() < stop:
            writer.write(bodies[i % len(bodies)])
            i += CLIENTS
            head = await reader.readuntil(b"\r\n\r\n")
            errors += not head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.close()

    async def window() -> tuple[float, float, float, float]:
        await asyncio.sleep(3)  # ramp-up
        first, cpu0, srv0, t0 = (await _inputs_total(port), time.process_time(), _cpu_seconds(server_pid),
                                 time.perf_counter())
        await asyncio.sleep(seconds)
        last, cpu1, srv1, t1 = (await _inputs_total(port), time.process_time(), _cpu_seconds(server_pid),
                                time.perf_counter())
        return (last - first) / (t1 - t0), (cpu1 - cpu0) / (t1 - t0), (srv1 - srv0) / (t1 - t0), t1 - t0

    clients = [asyncio.create_task(client(k)) for k in range(CLIENTS)]
    rate, loadgen_cpu, server_cpu, wall = await window()
    await asyncio.gather(*clients)
    return {"sent_s": rate, "loadgen_cpu_cores": loadgen_cpu, "cpu_cores": server_cpu, "window_s": wall,
            "errors": errors}


async def _inputs_total(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    for line in text.splitlines():
        if line.startswith("mstsb_inputs_total "):
            return float(line.split()[1])
    return 0.0


def _peer_models() -> dict[str, str]:
    """The peers' conversions of the base-shaped model, as ``benchmarks.peers`` made them."""
    peers = HERE.parent / "models" / "peers"
    found = {"ov": peers / "openvino-int8" / "model.xml", "ct2": peers / "ct2-int8"}
    missing = [str(p) for p in (*found.values(), HERE.parent / PEERS_PYTHON) if not p.exists()]
    if missing:
        raise SystemExit(f"missing {missing}: run python -m benchmarks.peers first (make bench does), or pass --no-peers")
    return {k: str(v) for k, v in found.items()}


def thread_counts(n: int) -> list[int]:
    out, t = [], 1
    while t < n:
        out.append(t)
        t *= 2
    return out + [n]


def run_cores(n: int, args: argparse.Namespace, model: str, texts: list[str], texts_file: str) -> dict:
    cores = list(range(n))
    rows: dict[str, list[dict]] = {}
    plan: list[tuple[str, object]] = [
        (CAPACITY, lambda: capacity(cores, model, texts_file)),
        (CAPACITY_FREE, lambda: capacity(cores, model, texts_file, pin_each=False))]
    plan += [(f"one session, {t} thread(s)", lambda t=t: measure("session", cores, model, texts_file, str(t)))
             for t in thread_counts(n)]
    plan += [("Embedder.encode (defaults)", lambda: measure("encode", cores, model, texts_file)),
             ("mstsb-onnx embed (defaults)", lambda: measure("embed", cores, model, texts_file)),
             (f"mstsb-onnx serve (defaults), {CLIENTS} clients",
              lambda: server(cores, model, texts, args.server_seconds))]
    if args.torch:
        plan.append((f"torch fp32 (ST), {n} threads", lambda: measure("torch", cores, model, texts_file, args.torch)))
    if args.peers:
        py = str(HERE.parent / PEERS_PYTHON)
        plan += [("OpenVINO int8, THROUGHPUT hint",
                  lambda: measure("openvino", cores, model, texts_file, args.peers["ov"], python=py)),
                 (f"CTranslate2 int8, inter_threads={n}",
                  lambda: measure("ctranslate2", cores, model, texts_file, args.peers["ct2"], python=py))]
    for r in range(args.rounds):
        for name, fn in plan:
            time.sleep(2)  # idle pools of the previous row stop spinning
            rows.setdefault(name, []).append(fn())
            print(f"  {n} cores, round {r + 1}: {name}: {rows[name][-1]['sent_s']:.1f} sent/s", flush=True)
    return summarize(rows)


def summarize(rows: dict[str, list[dict]]) -> dict:
    # The larger of the two capacities: on some VMs a process held to one vCPU runs slower than
    # one free to move, and the ratio must not profit from that.
    cap = max(statistics.median(o["sent_s"] for o in rows[name]) for name in (CAPACITY, CAPACITY_FREE))
    out = {}
    for name, runs in rows.items():
        sent = statistics.median(o["sent_s"] for o in runs)
        row = {"sent_s": sent, "ratio_to_capacity": sent / cap, "runs": [o["sent_s"] for o in runs],
               "peak_rss_mib": statistics.median(o["rss_mib"] for o in runs)}
        if "cpu_cores" in runs[0]:
            row["cpu_cores"] = statistics.median(o["cpu_cores"] for o in runs)
        if "loadgen_cpu_cores" in runs[0]:
            row["loadgen_cpu_cores"] = statistics.median(o["loadgen_cpu_cores"] for o in runs)
            row["errors"] = sum(o["errors"] for o in runs)
        out[name] = row
    return out


def _provenance(model: str) -> dict:
    from mstsb_onnx.export.provenance import code_revision
    from mstsb_onnx.manifest import read_manifest

    m = read_manifest(Path(model))
    return {"code": code_revision(), "export": {"recipe": m.recipe_name, "quantization": m.quantization_mode,
                                                "activations": m.raw.get("quantization", {}).get("activations")}}


def markdown(result: dict) -> str:
    m, p = result["machine"], result["provenance"]
    code, export = p["code"], p["export"]
    lines = ["# Layouts x cores", "",
             f"CPU: {m['cpu']} ({', '.join(m['isa'])}), {m['cores_available']} cores available; {m['date']}. "
             f"Code: commit {str(code.get('commit'))[:12]}{' (uncommitted changes)' if code.get('dirty') else ''}; "
             f"export {Path(result['model']).name}: recipe `{export['recipe']}`, activation scales "
             f"{export['activations']}; onnxruntime {m['versions'].get('onnxruntime')}.", "",
             f"{result['texts']} real multilingual sentences, batch_size 32, {result['rounds']} rounds, medians; "
             "each row in fresh processes pinned to the cores. Ratio: to the larger of the two N-process rows "
             "of the same run (the capacity). Cores used: CPU time over wall time while timed (a row above "
             "its core count ran outside its pinned cores).", ""]
    for n, rows in result["by_cores"].items():
        lines += [f"## {n} core(s)", "", "| layout | sent/s | ratio to capacity | cores used | peak RSS MiB |",
                  "|---|---|---|---|---|"]
        for name, row in rows.items():
            note = f" (load generator used {row['loadgen_cpu_cores']:.2f} cores)" if "loadgen_cpu_cores" in row else ""
            used = f"{row['cpu_cores']:.2f}" if "cpu_cores" in row else "-"
            lines.append(f"| {name}{note} | {row['sent_s']:.1f} | {row['ratio_to_capacity']:.2f} | {used} | "
                         f"{row['peak_rss_mib']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return 0
    from benchmarks.common import load_sample, machine_info, paths_only

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="sentences-unscored.csv")
    p.add_argument("--model", help="exported folder (default: the base-shaped int8 export under models/)")
    p.add_argument("--cores", default=None, help="comma-separated core counts (default: 1 and all available)")
    p.add_argument("--texts", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--server-seconds", type=float, default=10.0)
    p.add_argument("--torch", help="sentence-transformers folder for the torch row (default: the base-shaped model)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-peers", action="store_true",
                   help="leave out OpenVINO and CTranslate2 (they need models/.peers-venv and the peers' "
                        "conversions, which benchmarks.peers makes)")
    p.add_argument("--out", default=str(RESULTS / "many_core"))
    args = p.parse_args(argv)
    paths = paths_only(str(HERE.parent / "models"))
    model = args.model or str(paths["int8"])
    if not args.no_torch:
        args.torch = args.torch or str(paths["base"])
    args.peers = None if args.no_peers else _peer_models()
    available = len(os.sched_getaffinity(0))
    counts = [int(c) for c in args.cores.split(",")] if args.cores else sorted({1, available})
    texts = load_sample(Path(args.data), args.texts)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
    result = {"machine": machine_info(), "provenance": _provenance(model), "model": model,
              "texts": len(texts), "rounds": args.rounds, "by_cores": {}}
    for n in counts:
        result["by_cores"][str(n)] = run_cores(n, args, model, texts, f.name)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
