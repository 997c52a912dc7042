"""`mstsb-onnx embed`: formats, stdin, bad rows with line numbers, atomic outputs, Ray Data."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import Embedder, InputError
from mstsb_onnx.corpus.bulk import embed_file
from mstsb_onnx.cli import main
from mstsb_onnx.probes import probe_set

TEXTS = [t for s in probe_set().values() for t in s[:2]]


@pytest.fixture(scope="module")
def emb(tiny_int8: Path) -> Embedder:
    return Embedder(tiny_int8, threads=1)


def _write(path: Path, fmt: str, texts: list[str]) -> Path:
    if fmt == "text":
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "n": i}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)),
                        encoding="utf-8")
    else:
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "text"])
            w.writerows([i, t] for i, t in enumerate(texts))
    return path


@pytest.mark.parametrize("fmt, suffix", [("text", ".txt"), ("jsonl", ".jsonl"), ("csv", ".csv")], ids=["txt", "jsonl", "csv"])
@pytest.mark.parametrize("out_suffix", [".npy", ".parquet"])
def test_formats_give_the_same_vectors_as_encode(emb: Embedder, tmp_path: Path, fmt: str, suffix: str,
                                                 out_suffix: str) -> None:
    src = _write(tmp_path / f"in{suffix}", fmt, TEXTS + ['a "quoted", comma text'])
    out = tmp_path / f"out{out_suffix}"
    stats = embed_file(emb, str(src), out, chunk_size=7, log=io.StringIO())
    expected_texts = TEXTS + ['a "quoted", comma text']
    assert stats.rows == len(expected_texts) and stats.skipped == 0
    expected = emb.encode(expected_texts, batch_size=32)
    if out_suffix == ".npy":
        got = np.load(out)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.column("text").to_pylist() == expected_texts
        got = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    assert got.shape == expected.shape and got.dtype == np.float32
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() > 0.9999  # chunks change int8 batch-mates; fp32 would be exact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


BAD_LINES = ["good one", "", "   ", "second good"]


def test_bad_rows_fail_by_default_and_leave_no_output(emb: Embedder, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes("good one\n\nsecond good\n".encode())
    out = tmp_path / "out.npy"
    with pytest.raises(InputError, match="line 2: empty"):
        embed_file(emb, str(src), out, log=io.StringIO())
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["in.txt"]


def test_bad_rows_skipped_with_line_numbers(emb: Embedder, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"good one\n\n\xff\xfe broken\nsecond good\n   \n")
    log = io.StringIO()
    stats = embed_file(emb, str(src), tmp_path / "out.npy", on_error="skip", log=log)
    assert (stats.rows, stats.skipped) == (2, 3)
    report = log.getvalue()
    assert "line 2: empty" in report and "line 3: not UTF-8" in report and "line 5: empty" in report
    assert np.load(tmp_path / "out.ids.npy").tolist() == [1, 4]
    assert np.load(tmp_path / "out.npy").shape == (2, emb.dim)


def test_a_row_map_from_an_earlier_run_does_not_survive_a_run_without_skips(emb: Embedder, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"good one\n\nsecond good\n")
    embed_file(emb, str(src), tmp_path / "out.npy", on_error="skip", log=io.StringIO())
    assert np.load(tmp_path / "out.ids.npy").tolist() == [1, 3]
    src.write_text("now\nthree\ngood rows\n", encoding="utf-8")
    embed_file(emb, str(src), tmp_path / "out.npy", on_error="skip", log=io.StringIO())
    assert np.load(tmp_path / "out.npy").shape == (3, emb.dim)
    assert not (tmp_path / "out.ids.npy").exists()  # rows are lines 1-3: no map, and no stale one


@pytest.mark.parametrize(
    "line, reason",
    [('{"text": 3}', "field 'text' is int"), ("{not json", "not JSON"), ('{"other": "x"}', "no 'text' field")],
    ids=["not-text", "not-json", "missing-field"],
)
def test_jsonl_bad_rows(emb: Embedder, tmp_path: Path, line: str, reason: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    log = io.StringIO()
    embed_file(emb, str(src), tmp_path / "out.npy", on_error="skip", log=log)
    assert f"line 2: {reason}" in log.getvalue()


def test_csv_missing_column(emb: Embedder, tmp_path: Path) -> None:
    src = _write(tmp_path / "in.csv", "csv", ["x"])
    with pytest.raises(InputError, match="column 'body' not in the header"):
        embed_file(emb, str(src), tmp_path / "out.npy", field="body", log=io.StringIO())


def test_interrupted_run_leaves_nothing(emb: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _write(tmp_path / "in.txt", "text", TEXTS)
    calls = {"n": 0}
    real = emb.encode_tokens

    def flaky(seqs, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(seqs, *args, **kw)

    monkeypatch.setattr(emb, "encode_tokens", flaky)
    with pytest.raises(KeyboardInterrupt):
        embed_file(emb, str(src), tmp_path / "out.npy", chunk_size=5, log=io.StringIO())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_cli_stdin_to_npy(tiny_int8: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.npy"
    res = subprocess.run([sys.executable, "-m", "mstsb_onnx.cli", "embed", str(tiny_int8), "-", "-o", str(out)],
                         input="\n".join(TEXTS[:5]).encode(), capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert np.load(out).shape == (5, 32)
    assert b"wrote 5 embeddings" in res.stdout


def test_cli_bad_output_suffix(tiny_int8: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path / "in.txt", "text", ["x"])
    assert main(["embed", str(tiny_int8), str(src), "-o", str(tmp_path / "out.csv")]) == 1
    assert "must end in .npy or .parquet" in capsys.readouterr().err


# --- Ray Data ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_embed_dataset_equals_single_process(local_ray, tiny_fp32: Path) -> None:
    from mstsb_onnx.corpus.ray import embed_dataset

    ds = local_ray.data.from_items([{"text": t, "id": i} for i, t in enumerate(TEXTS)])
    rows = embed_dataset(ds, tiny_fp32, workers=2, rows_per_task=8).take_all()
    by_id = {r["id"]: np.asarray(r["embedding"]) for r in rows}
    got = np.stack([by_id[i] for i in range(len(TEXTS))])
    # fp32 with the same batch size: every row as in one process (order-independent, padding-only diffs).
    np.testing.assert_allclose(got, Embedder(tiny_fp32, threads=1).encode(TEXTS), atol=1e-5)


@pytest.mark.slow
def test_ray_cli_path_matches_single_process_and_loads_once(local_ray, tiny_fp32: Path, tmp_path: Path) -> None:
    from mstsb_onnx.corpus.ray import embed_file_ray

    src = _write(tmp_path / "in.txt", "text", TEXTS)
    # Chunks of 4 rows: 8 chunks, still only the two actors and their two model loads.
    stats = embed_file_ray(str(tiny_fp32), str(src), tmp_path / "ray.npy", workers=2, chunk_size=4)
    embed_file(Embedder(tiny_fp32, threads=1), str(src), tmp_path / "one.npy", log=io.StringIO())
    assert stats.rows == len(TEXTS) == 32
    assert stats.processes == 2
    np.testing.assert_allclose(np.load(tmp_path / "ray.npy"), np.load(tmp_path / "one.npy"), atol=1e-5)


@pytest.mark.slow
def test_ray_cli_path_reports_bad_rows_as_single_process(local_ray, tiny_fp32: Path, tmp_path: Path) -> None:
    from mstsb_onnx.corpus.ray import embed_file_ray

    src = tmp_path / "in.txt"
    src.write_bytes(b"good one\n\n\xff\xfe broken\nsecond good\n")
    logs = {}
    for path in ("ray", "one"):
        log = io.StringIO()
        if path == "ray":
            stats = embed_file_ray(str(tiny_fp32), str(src), tmp_path / "ray.npy", on_error="skip", log=log)
        else:
            stats = embed_file(Embedder(tiny_fp32, threads=1), str(src), tmp_path / "one.npy", on_error="skip", log=log)
        assert (stats.rows, stats.skipped) == (2, 2)
        logs[path] = [line for line in log.getvalue().splitlines() if line.startswith("skipped")]
    assert logs["ray"] == logs["one"] == ["skipped line 2: empty", "skipped line 3: not UTF-8 (byte 0 of the line)"]
    assert np.load(tmp_path / "ray.ids.npy").tolist() == np.load(tmp_path / "one.ids.npy").tolist() == [1, 4]


@pytest.mark.slow
@pytest.mark.parametrize("cell", [None, "   "], ids=["none", "blank"])  # Arrow itself refuses mixed str/int
def test_ray_dataset_refuses_cells_that_are_not_text(local_ray, tiny_fp32: Path, cell: object) -> None:
    from mstsb_onnx.corpus.ray import embed_dataset

    items = [{"text": "fine", "id": 0}, {"text": cell, "id": 1}, {"text": "also fine", "id": 2}]
    with pytest.raises(Exception, match="not text|empty"):  # Ray wraps the InputError raised in the actor
        embed_dataset(local_ray.data.from_items(items), tiny_fp32, workers=1).take_all()
    rows = embed_dataset(local_ray.data.from_items(items), tiny_fp32, workers=1, on_error="skip").take_all()
    assert sorted(r["id"] for r in rows) == [0, 2]  # never the text "None"


@pytest.mark.parametrize("fmt, suffix", [("text", ".txt"), ("jsonl", ".jsonl"), ("csv", ".csv")], ids=["txt", "jsonl", "csv"])
def test_a_byte_order_mark_is_not_part_of_the_first_row(emb: Embedder, tmp_path: Path, fmt: str, suffix: str) -> None:
    plain = _write(tmp_path / f"plain{suffix}", fmt, TEXTS[:3])
    if fmt == "csv":  # the mark would stick to the first header name: make that the text column
        plain.write_text("text,id\n" + "".join(f'"{t}",{i}\n' for i, t in enumerate(TEXTS[:3])), encoding="utf-8")
    marked = tmp_path / f"marked{suffix}"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    for src in (plain, marked):
        embed_file(emb, str(src), tmp_path / f"{src.stem}.npy", log=io.StringIO())
    np.testing.assert_array_equal(np.load(tmp_path / "marked.npy"), np.load(tmp_path / "plain.npy"))


def test_output_folders_are_created_and_a_folder_is_not_a_file(emb: Embedder, tmp_path: Path) -> None:
    src = _write(tmp_path / "in.txt", "text", TEXTS[:3])
    out = tmp_path / "new" / "deeper" / "out.npy"
    embed_file(emb, str(src), out, log=io.StringIO())
    assert np.load(out).shape == (3, emb.dim)
    (tmp_path / "taken.npy").mkdir()
    with pytest.raises(InputError, match="is a folder; name a .npy or .parquet file"):
        embed_file(emb, str(src), tmp_path / "taken.npy", log=io.StringIO())
