"""A tokenizer extended without resizing the model: the export warns and records the table size;
the runtime refuses texts with such tokens by name -- in encode, embed, Ray and the server -- instead of
onnxruntime failing on the whole batch in a Gather."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_folder, manifest_of

from mstsb_onnx import Embedder, InputError
from mstsb_onnx.corpus.bulk import embed_file

NEW = "<brand-new-token>"


@pytest.fixture(scope="module")
def extended(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    from transformers import AutoTokenizer

    from mstsb_onnx.export import export_model

    root = tmp_path_factory.mktemp("extended")
    src = copy_folder(tiny_src, root / "src")
    tok = AutoTokenizer.from_pretrained(str(src))
    tok.add_tokens([NEW])
    tok.save_pretrained(str(src))
    lines: list[str] = []
    out = export_model(str(src), root / "out", quantize="int8", log=lines.append).path
    return out, lines


def test_export_warns_and_records_the_table_size(extended: tuple[Path, list[str]], tiny_src: Path) -> None:
    out, lines = extended
    rows = json.loads((tiny_src / "config.json").read_text())["vocab_size"]
    assert manifest_of(out)["vocab_size"] == rows
    assert any(line.startswith("warning: the tokenizer has 1 token(s) with no row") and f"'{NEW}' = {rows}" in line
               for line in lines)


def test_encode_names_the_text_and_token(extended: tuple[Path, list[str]]) -> None:
    emb = Embedder(extended[0], threads=1)
    assert emb.encode(["fine", "also fine"]).shape == (2, emb.dim)
    with pytest.raises(InputError, match=rf"texts\[1\] has token '{NEW}' \(id \d+\), which the model has no embedding"):
        emb.encode(["fine", f"hello {NEW} world", "fine"])


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_embed_treats_such_a_row_as_a_bad_row(extended: tuple[Path, list[str]], tmp_path: Path, on_error: str) -> None:
    emb = Embedder(extended[0], threads=1)
    src = tmp_path / "in.txt"
    src.write_text(f"first line\nsecond {NEW} line\nthird line\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    if on_error == "fail":
        with pytest.raises(InputError, match=rf"line 2 has token '{NEW}'"):
            embed_file(emb, str(src), out, on_error=on_error, log=io.StringIO())
        assert not out.exists()
    else:
        log = io.StringIO()
        stats = embed_file(emb, str(src), out, on_error=on_error, log=log)
        assert (stats.rows, stats.skipped) == (2, 1) and "skipped line 2" in log.getvalue()
        np.testing.assert_array_equal(np.load(tmp_path / "out.ids.npy"), [1, 3])
        np.testing.assert_allclose(np.load(out), emb.encode(["first line", "third line"], batch_size=32), atol=1e-6)


def test_manifests_without_vocab_size_still_load(extended: tuple[Path, list[str]], tmp_path: Path) -> None:
    """Exports made before the field existed: no check, no error on load."""
    folder = copy_folder(extended[0], tmp_path / "old")
    doc = json.loads((folder / "manifest.json").read_text())
    del doc["vocab_size"]
    (folder / "manifest.json").write_text(json.dumps(doc))
    emb = Embedder(folder, threads=1)
    assert emb.manifest.vocab_size is None and emb.unembeddable([0, 10**6]) is None


def test_server_refuses_such_a_request_alone(extended: tuple[Path, list[str]]) -> None:
    """422 naming the input and token; a good request sent with it is still answered."""
    from starlette.testclient import TestClient

    from mstsb_onnx.serve import ServeConfig, create_app

    emb = Embedder(extended[0], threads=1)
    with TestClient(create_app(ServeConfig(model_dir=str(extended[0]), workers=1), embedder=emb)) as client:
        bad = client.post("/v1/embeddings", json={"input": ["fine", f"hello {NEW} world"]})
        good = client.post("/v1/embeddings", json={"input": ["fine"]})
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "invalid_input" and f"input[1] has token '{NEW}'" in error["message"]
    assert good.status_code == 200
    np.testing.assert_allclose(good.json()["data"][0]["embedding"], emb.encode("fine"), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_ray_paths_treat_such_a_row_as_a_bad_row(extended: tuple[Path, list[str]], tmp_path: Path,
                                                 on_error: str) -> None:
    import ray

    from mstsb_onnx.corpus.ray import embed_dataset, embed_file_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    src = tmp_path / "in.txt"
    src.write_text(f"first line\nsecond {NEW} line\nthird line\n", encoding="utf-8")
    items = [{"text": t} for t in ("first line", f"second {NEW} line", "third line")]
    if on_error == "fail":
        with pytest.raises(InputError, match=rf"line 2 has token '{NEW}'"):
            embed_file_ray(str(extended[0]), str(src), tmp_path / "out.npy", on_error=on_error, workers=1)
        with pytest.raises(Exception, match=rf"has token '{NEW}'"):
            embed_dataset(ray.data.from_items(items), extended[0], workers=1).take_all()
        return
    stats = embed_file_ray(str(extended[0]), str(src), tmp_path / "out.npy", on_error=on_error, workers=1,
                           log=io.StringIO())
    assert (stats.rows, stats.skipped) == (2, 1)
    np.testing.assert_array_equal(np.load(tmp_path / "out.ids.npy"), [1, 3])
    rows = embed_dataset(ray.data.from_items(items), extended[0], workers=1, on_error="skip").take_all()
    assert sorted(r["text"] for r in rows) == ["first line", "third line"]
