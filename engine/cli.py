"""The ``mstsb-onnx`` command line: a thin layer over the library.

    mstsb-onnx export SOURCE -o DIR [--quantize int8|none]
    mstsb-onnx trim DIR -o OUT --languages es,en [--corpus FILE]
    mstsb-onnx check DIR --reference SOURCE [--texts FILE|-]
    mstsb-onnx eval-sts DIR [DIR...] --data CSV [--reference SOURCE]
    mstsb-onnx embed DIR INPUT -o OUTPUT [--ray [ADDRESS]]
    mstsb-onnx serve DIR [--host H --port P]
    mstsb-onnx bench DIR [--reference SOURCE]
    mstsb-onnx info DIR

User errors print one line and exit 1. Commands that need an extra (export, check, a reference)
import it only when run, so the slim install's ``--help`` and ``info`` work without torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from mstsb_onnx.errors import MstsbError


def _read_lines(source: str) -> list[str]:
    """Non-empty lines of a file, or of stdin for ``-``; a line that is not UTF-8 is an error."""
    from mstsb_onnx.corpus.readers import BadRow, read_rows

    lines = []
    for row in read_rows(source, "text"):
        if isinstance(row, BadRow):
            if row.reason == "empty":
                continue
            raise MstsbError(f"{'stdin' if source == '-' else source}, line {row.id}: {row.reason}")
        lines.append(row.text)
    return lines


class _Parser(argparse.ArgumentParser):
    """User errors in arguments are one line and exit 1, like every other user error here."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, text: str, ok: Callable[[float], bool], what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 1, "a positive integer")


def _port(text: str) -> int:
    return _number(int, text, lambda v: 0 <= v <= 65535, "a port number (0-65535)")


def _positive_float(text: str) -> float:
    return _number(float, text, lambda v: 0 < v < float("inf"), "a positive number")


def _non_negative_float(text: str) -> float:
    return _number(float, text, lambda v: 0 <= v < float("inf"), "zero or a positive number")


def cmd_export(args: argparse.Namespace) -> int:
    from mstsb_onnx.export import export_model

    export_model(args.source, args.output, quantize=args.quantize, revision=args.revision,
                 max_seq_length=args.max_seq_length, force=args.force, threads=args.threads,
                 int8_recipe=args.int8_recipe, layout=args.layout, activations=args.activations,
                 languages=args.languages, corpus=args.corpus)
    return 0


def cmd_trim(args: argparse.Namespace) -> int:
    from mstsb_onnx.export.trim import trim_folder

    trim_folder(args.model_dir, args.output, languages=args.languages or (), corpus=args.corpus,
                words=args.words, force=args.force, threads=args.threads)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from mstsb_onnx.export import check_model

    texts = _read_lines(args.texts) if args.texts else None
    check_model(args.model_dir, args.reference, texts=texts, threads=args.threads)
    print("parity: OK")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from mstsb_onnx.manifest import read_manifest, verify_files

    folder = Path(args.model_dir)
    m = read_manifest(folder)
    verify_files(folder, m)
    raw = m.raw
    shown = {k: raw.get(k) for k in ("source", "dim", "vocab_size", "max_seq_length", "pooling", "normalize",
                                     "lowercase", "prompts", "default_prompt_name", "quantization", "versions")}
    if "trim" in raw:
        shown["trim"] = raw["trim"]
    shown["lowercase"] = bool(raw.get("lowercase", False))  # manifests older than the field lower-case nothing
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


def cmd_eval_sts(args: argparse.Namespace) -> int:
    from mstsb_onnx.eval.evaluation import run_eval_sts

    run_eval_sts(args.model_dirs, Path(args.data), reference=args.reference, per_task=args.per_task,
                 out_json=args.json, out_md=args.markdown, threads=args.threads, batch_size=args.batch_size)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from mstsb_onnx.corpus.bulk import corpus_embedder, embed_file

    if args.ray is not None:
        from mstsb_onnx.corpus.ray import embed_file_ray

        stats = embed_file_ray(args.model_dir, args.input, Path(args.output), fmt=args.format, field=args.column,
                               on_error=args.on_error, address=args.ray or None, workers=args.workers,
                               threads=args.threads or 1, batch_size=args.batch_size,
                               normalize=args.normalize, chunk_size=args.chunk_size)
    else:
        embedder = corpus_embedder(args.model_dir, args.threads, args.runners)
        stats = embed_file(embedder, args.input, Path(args.output),
                           fmt=args.format, field=args.column, on_error=args.on_error, chunk_size=args.chunk_size,
                           batch_size=args.batch_size, normalize=args.normalize)
    print(f"wrote {stats.rows} embeddings to {args.output}" + (f" ({stats.skipped} skipped)" if stats.skipped else ""))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from mstsb_onnx.serve import ServeConfig, serve
    from mstsb_onnx.serve.config import read_api_keys

    try:
        keys = read_api_keys(args.api_key, args.api_key_file, dict(os.environ))
        config = ServeConfig(model_dir=args.model_dir, model_name=args.model_name or Path(args.model_dir).name,
                             workers=args.workers, threads=args.threads,
                             max_wait_ms=args.max_wait_ms, max_batch_tokens=args.max_batch_tokens,
                             max_queue_inputs=args.max_queue, max_inputs=args.max_inputs, max_chars=args.max_chars,
                             max_body_bytes=args.max_body_bytes, max_buffered_bytes=args.max_buffered_bytes,
                             max_connections=args.max_connections, header_timeout_s=args.header_timeout,
                             read_timeout_s=args.read_timeout, timeout_s=args.timeout, api_keys=keys,
                             protect_metrics=args.protect_metrics, access_log=args.access_log)
    except ValueError as e:
        raise MstsbError(str(e)) from e
    if args.protect_metrics and not keys:
        raise MstsbError("--protect-metrics needs an API key (--api-key, --api-key-file or MSTSB_API_KEYS)")

    def announce(url: str) -> None:
        print(f"serving {args.model_dir} on {url} ({config.resolved_workers()} workers x {config.threads} "
              f"thread(s); {len(keys) or 'no'} API key(s))", flush=True)

    serve(config, host=args.host, port=args.port, announce=announce)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from mstsb_onnx.eval.benchmark import run_cli_bench
    from mstsb_onnx.files import write_report

    result = run_cli_bench(args.model_dir, args.reference, args.threads, rounds=args.rounds)
    if args.json:
        write_report(args.json, json.dumps(result, indent=2) + "\n")
    return 0


_MODEL_DIR = "folder written by `mstsb-onnx export`"
_THREADS = ("threads for onnxruntime, and for torch when a reference runs (default: the cores this process may "
            "use for onnxruntime, torch's own default for torch)")
_LANGUAGES = ("comma-separated codes, e.g. es,en; card = the model card's 16 (ar cs de en es fr hi it ja nl pl pt "
              "ru tr zh-CN zh-TW); an unknown code lists the supported ones")
_BATCH = "texts per batch at most (default 32; onnxruntime batches are also capped at 1,024 padded tokens)"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="mstsb-onnx",
        description="Multilingual sentence embeddings on CPUs: export XLM-R to int8 ONNX, check it, use it.",
    )
    from mstsb_onnx import __version__

    p.add_argument("--version", action="version", version=f"mstsb-onnx {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("export", help="export a hub id or local folder to an ONNX model folder",
                       description="Export encoder + pooling to ONNX (int8 by default), check parity against "
                                   "torch, and write the folder atomically. Needs the 'export' extra.")
    e.add_argument("source", help="hub id (e.g. AIDA-UPM/mstsb-paraphrase-multilingual-mpnet-base-v2) or local folder")
    e.add_argument("-o", "--output", required=True, help="folder to write (must not exist, unless --force)")
    e.add_argument("--quantize", choices=["int8", "none"], default="int8", help="int8 dynamic (default) or none (fp32)")
    e.add_argument("--revision", help="hub revision: branch, tag, commit or refs/pr/N (default: the default branch, "
                                      "or its safetensors conversion by the hub's bot when it has only pickled weights)")
    e.add_argument("--max-seq-length", type=_positive_int,
                   help="override the source's max_seq_length (default: its own, or 128)")
    e.add_argument("--force", action="store_true",
                   help="replace an earlier export at OUTPUT (only a folder this tool wrote, or an empty one)")
    e.add_argument("--threads", type=_positive_int, help="threads for the parity runs (default: available cores)")
    # Choices are checked by export_model: importing the export package here would break the slim CLI.
    e.add_argument("--int8-recipe", default="auto", metavar="NAME",
                   help="auto (default): the fast recipe, and if it fails parity the accurate one "
                        "(down-projections kept fp32); or one by name: smooth-outliers, fp32-down")
    e.add_argument("--layout", choices=["auto", "sequence-first", "batch-first"], default="auto",
                   help="activation layout traced into the graph: auto (default) is sequence-first for "
                        "BERT-family encoders (fewer transposes in attention), else batch-first")
    # Choices and default live in the exporter (export.quantize.ACTIVATIONS); None means its default.
    e.add_argument("--activations", metavar="MODE",
                   help="int8 activation scales: per-row (default: one per token, so a text gets the same "
                        "vector in any batch), per-tensor (one per batch: faster, but a text's vector moves "
                        "slightly with its batch-mates) or static (constants calibrated at export)")
    e.add_argument("--languages", metavar="CODES", help="trim the vocabulary to these languages after export "
                                                        "(as `mstsb-onnx trim`): " + _LANGUAGES)
    e.add_argument("--corpus", metavar="FILE", help="trim: also keep the pieces this UTF-8 text file uses")
    e.set_defaults(func=cmd_export)

    t = sub.add_parser("trim", help="keep only the vocabulary some languages (or a corpus) need: a smaller folder",
                       description="Write a copy of an exported folder whose vocabulary holds only the pieces the "
                                   "given languages (wordfreq word lists) and/or a corpus use. Texts tokenized with "
                                   "kept pieces only embed bit for bit as before (checked). Needs the 'trim' extra.")
    t.add_argument("model_dir", help=_MODEL_DIR)
    t.add_argument("-o", "--output", required=True, help="folder to write (must not exist, unless --force)")
    t.add_argument("--languages", metavar="CODES", help=_LANGUAGES)
    t.add_argument("--corpus", metavar="FILE", help="UTF-8 text, one text per line (- for stdin): keep its pieces too")
    t.add_argument("--words", type=_positive_int, default=100_000,
                   help="most frequent words tokenized per language (default 100000)")
    t.add_argument("--force", action="store_true", help="replace an earlier export or trim at OUTPUT")
    t.add_argument("--threads", type=_positive_int, help="threads for the parity check (default: available cores)")
    t.set_defaults(func=cmd_trim)

    c = sub.add_parser("check", help="compare an exported folder with the torch reference",
                       description="Re-run the export-time parity checks (tokens, then vectors per language) "
                                   "against the torch reference; exit 1 when outside the tolerances.")
    c.add_argument("model_dir", help=_MODEL_DIR)
    c.add_argument("--reference", required=True, help="the source model (hub id or folder)")
    c.add_argument("--texts", metavar="FILE", help="also compare these texts, one per line; - for stdin")
    c.add_argument("--threads", type=_positive_int, help=_THREADS)
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("eval-sts", help="score a model on a multilingual STS CSV (card-style table)",
                       description="Pearson and Spearman of cosine similarity per task, average by Fisher z. "
                                   "With --reference, also the torch reference and the per-task delta.")
    s.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR", help="one or more exported folders")
    s.add_argument("--data", required=True, help="CSV with task, idx, sentence1, sentence2, score")
    s.add_argument("--reference", help="source model to score with torch too (needs the 'export' extra)")
    s.add_argument("--per-task", type=_positive_int, help="use a fixed subset of this many pairs per task")
    s.add_argument("--json", help="write the scores here")
    s.add_argument("--markdown", help="write the table here")
    s.add_argument("--batch-size", type=_positive_int, default=32, help=_BATCH)
    s.add_argument("--threads", type=_positive_int, help=_THREADS)
    s.set_defaults(func=cmd_eval_sts)

    m = sub.add_parser("embed", help="embed a corpus file (text lines, JSONL, CSV) into .npy or Parquet",
                       description="Stream INPUT (one text per line, .jsonl, .csv/.tsv, or - for stdin) through the "
                                   "model into OUTPUT (.npy, or .parquet with id, text, embedding). Bad rows are "
                                   "reported with their line number; the output appears only when complete.")
    m.add_argument("model_dir", help=_MODEL_DIR)
    m.add_argument("input", help="input file, or - for stdin")
    m.add_argument("-o", "--output", required=True, help="output .npy or .parquet")
    m.add_argument("--format", choices=["text", "jsonl", "csv", "tsv"], help="input format (default: by extension)")
    m.add_argument("--column", default="text", help="JSONL field / CSV column holding the text (default: text)")
    m.add_argument("--on-error", choices=["fail", "skip"], default="fail", help="bad rows: stop (default) or skip")
    m.add_argument("--batch-size", type=_positive_int, default=32, help=_BATCH)
    m.add_argument("--chunk-size", type=_positive_int, default=4096, help="rows read, embedded and written at a time")
    m.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    m.add_argument("--threads", type=_positive_int,
                   help="onnxruntime threads per batch (default 1; with --ray, the cores of each actor)")
    m.add_argument("--runners", type=_positive_int,
                   help="batches embedded at once, sharing one copy of the model (default: every available core)")
    m.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray Data: a cluster address (ray://host:10001 or auto), or none for a local cluster")
    m.add_argument("--workers", type=_positive_int, default=2,
                   help="Ray actors, one onnxruntime session each (default 2)")
    m.set_defaults(func=cmd_embed)

    from mstsb_onnx.serve.config import ServeConfig  # standard library only: --help stays light

    v = sub.add_parser("serve", help="OpenAI-compatible embedding server (needs the 'serve' extra)",
                       description="POST /v1/embeddings (OpenAI-compatible), POST /embed and GET /info "
                                   "(text-embeddings-inference-compatible), GET /health, GET /metrics. Concurrent "
                                   "requests are micro-batched; WORKERS threads share one onnxruntime session.")
    v.add_argument("model_dir", help=_MODEL_DIR)
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=_port, default=8080, help="port (default 8080)")
    v.add_argument("--model-name", help="the 'model' reported in responses (default: the folder name)")
    d = ServeConfig(model_dir="")  # the defaults live in one place: the server's config
    v.add_argument("--workers", type=_positive_int, default=d.workers,
                   help="concurrent batches (default: available cores / threads)")
    v.add_argument("--threads", "--threads-per-worker", type=_positive_int, default=d.threads,
                   help=f"onnxruntime threads per worker's batch (default {d.threads})")
    v.add_argument("--max-wait-ms", type=_non_negative_float, default=d.max_wait_ms,
                   help=f"longest a request waits for company (default {d.max_wait_ms:g})")
    v.add_argument("--max-batch-tokens", type=_positive_int, default=d.max_batch_tokens,
                   help=f"tokens merged into one batch; 1 turns batching off (default {d.max_batch_tokens})")
    v.add_argument("--max-queue", type=_positive_int, default=d.max_queue_inputs,
                   help=f"texts queued before answering 503 (default {d.max_queue_inputs})")
    v.add_argument("--max-inputs", type=_positive_int, default=d.max_inputs,
                   help=f"texts per request (default {d.max_inputs})")
    v.add_argument("--max-chars", type=_positive_int, default=d.max_chars,
                   help=f"characters per text (default {d.max_chars})")
    v.add_argument("--max-body-bytes", type=_positive_int, default=d.max_body_bytes,
                   help=f"request body limit in bytes (default {d.max_body_bytes} = {d.max_body_bytes / 2**20:g} MiB)")
    v.add_argument("--timeout", type=_positive_float, default=d.timeout_s,
                   help=f"seconds from a request's headers to its answer before 503 (default {d.timeout_s:g})")
    v.add_argument("--header-timeout", type=_positive_float, default=d.header_timeout_s,
                   help=f"seconds a connection may take to send a request's headers before 408 (default "
                        f"{d.header_timeout_s:g})")
    v.add_argument("--read-timeout", type=_positive_float, default=d.read_timeout_s,
                   help=f"seconds a request may take to send its body before 408 (default {d.read_timeout_s:g})")
    v.add_argument("--max-connections", type=_positive_int, default=d.max_connections,
                   help=f"open connections; one more is answered 503 (default {d.max_connections})")
    v.add_argument("--max-buffered-bytes", type=_positive_int, default=d.max_buffered_bytes,
                   help=f"request-body bytes received at once, all connections together, before 503 (default "
                        f"{d.max_buffered_bytes} = {d.max_buffered_bytes / 2**20:g} MiB)")
    v.add_argument("--api-key", action="append", metavar="KEY",
                   help="require 'Authorization: Bearer KEY' (repeatable; also MSTSB_API_KEYS=k1,k2, which stays out "
                        "of ps); /health stays open")
    v.add_argument("--api-key-file", metavar="FILE", help="read keys from FILE, one per line (# comments)")
    v.add_argument("--protect-metrics", action="store_true", help="require a key for /metrics too")
    v.add_argument("--access-log", action="store_true",
                   help="one JSON line per request on stderr: id, status, inputs, tokens, queue and compute ms")
    v.set_defaults(func=cmd_serve)

    b = sub.add_parser("bench", help="time an exported folder (and optionally torch) on this machine",
                       description="Batch-1 latency at 8-128 tokens and throughput at batch 1/8/32 on built-in "
                                   "multilingual sentences, interleaved with the torch reference when given. "
                                   "The full comparison is `make bench` (benchmarks/bench.py).")
    b.add_argument("model_dir", help=_MODEL_DIR)
    b.add_argument("--reference", help="source model to time with torch too (needs the 'export' extra)")
    b.add_argument("--threads", type=_positive_int, help=_THREADS)
    b.add_argument("--rounds", type=_positive_int, default=20, help="interleaved rounds per latency point")
    b.add_argument("--json", help="write the figures here")
    b.set_defaults(func=cmd_bench)

    i = sub.add_parser("info", help="show an exported folder's manifest (and verify its files)")
    i.add_argument("model_dir", help=_MODEL_DIR)
    i.set_defaults(func=cmd_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MstsbError as e:
        print(f"mstsb-onnx {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
