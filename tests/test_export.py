"""Export: folder layout, manifest, parity recorded, source variants, refusals, atomic writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import Embedder, ExportError, ParityError
from mstsb_onnx.export import export_model, parity
from mstsb_onnx.export.source import resolve_source
from mstsb_onnx.manifest import sha256_file

from conftest import (WORDPIECE_VOCAB, _quiet, build_wordpiece_checkpoint, copy_folder, manifest_of, row_cosines,
                      tiny_lines, torch_vectors)


@pytest.mark.parametrize("mode", ["int8", "none"])
def test_folder_and_manifest(tiny_int8: Path, tiny_fp32: Path, mode: str) -> None:
    folder = tiny_int8 if mode == "int8" else tiny_fp32
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "manifest.json", "model.onnx", "model.onnx.data",
                                                        "tokenizer.json"]
    m = manifest_of(folder)
    assert m["dim"] == 32 and m["max_seq_length"] == 128 and m["pooling"] == "mean"
    assert m["quantization"]["mode"] == mode
    for name, digest in m["files"].items():
        assert sha256_file(folder / name) == digest
    for pkg in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        assert m["versions"][pkg]
    # Parity figures are recorded for every language and for the edge cases.
    groups = m["parity"]["model"][0]["groups"]
    assert {"en", "ar", "zh-TW", "edge"} <= set(groups)
    if mode == "int8":
        assert m["quantization"]["embedding_table"]["rows"] > 0
        # The default: one activation scale per row, so no per-batch quantizer is left in the graph.
        assert m["quantization"]["activations"] == "per-row"
        assert m["quantization"]["per_row"]["row_quantizers"] > 0


def test_default_int8_graph_quantizes_each_row_alone(tiny_int8: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_int8 / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "DynamicQuantizeLinear" not in ops
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    # Blocked QuantizeLinear (opset 21) whose block is the whole last axis: one scale per row.
    assert quantizers and all({a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}["axis"] == -1
                              for n in quantizers)
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {21}


@pytest.mark.parametrize("mode", ["int8", "none"])
def test_folder_matches_torch_recomputed_here(tiny_src: Path, tiny_int8: Path, tiny_fp32: Path, mode: str) -> None:
    """The written folder against sentence-transformers run here, not against the export's own figures."""
    lines = tiny_lines()
    ours = Embedder(tiny_int8 if mode == "int8" else tiny_fp32).encode(lines, batch_size=8)
    ref = torch_vectors(tiny_src, lines)
    if mode == "none":
        assert np.abs(ours - ref).max() <= parity.FP32_MAX_ABS_DIFF
    else:
        assert row_cosines(ours, ref).min() >= parity.INT8_MIN_COSINE


def test_graph_has_dynamic_axes_and_named_io(tiny_int8: Path) -> None:
    import onnx

    graph = onnx.load(str(tiny_int8 / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["sentence_embedding"]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    out_dims = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert out_dims[0] == "batch" and out_dims[1] == 32
    # The embedding table is stored int8 (per-row scales), not fp32.
    dtypes = {i.name: i.data_type for i in graph.initializer}
    assert any(name.endswith("_int8") and dt == onnx.TensorProto.INT8 for name, dt in dtypes.items())


def test_plain_transformers_checkpoint_gets_card_defaults(tiny_src: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(tiny_src, plain)
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        (plain / name).unlink()
    shutil.rmtree(plain / "1_Pooling")
    src = resolve_source(str(plain))
    assert (src.pooling, src.max_seq_length, src.normalize, src.prompts) == ("mean", 128, False, {})
    out = export_model(str(plain), tmp_path / "out", quantize="none", log=_quiet).path
    assert manifest_of(out)["source"]["sentence_transformers"] is False


VARIANTS = {
    "cls": dict(pooling="cls"),
    "max": dict(pooling="max"),
    "normalize": dict(normalize=True),
    "prompt": dict(prompts={"query": "query: "}, default_prompt_name="query"),
    "seq32": dict(max_seq_length=32),
    "mean-sqrt-len": dict(pooling="mean_sqrt_len_tokens"),
    "weightedmean": dict(pooling="weightedmean"),
    "lasttoken": dict(pooling="lasttoken"),
}


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_sentence_transformers_settings_are_followed(variant: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Export passes parity against SentenceTransformer(folder).encode for each setting."""
    from testmodels.xlmr import build_tiny_xlmr

    root = tmp_path_factory.mktemp(variant)
    src = build_tiny_xlmr(root / "src", tiny_lines(), **VARIANTS[variant])
    out = export_model(str(src), root / "out", quantize="none", log=_quiet).path
    m = manifest_of(out)
    against = [r["against"] for r in m["parity"]["model"]]
    assert "sentence-transformers" in against
    expected = {**dict(pooling="mean", normalize=False, max_seq_length=128), **VARIANTS[variant]}
    for key in ("pooling", "normalize", "max_seq_length"):
        assert m[key] == expected[key]
    if variant == "normalize":
        np.testing.assert_allclose(np.linalg.norm(Embedder(out).encode(["a b c", "x"]), axis=1), 1.0, atol=1e-5)
    if variant == "prompt":
        assert m["default_prompt_name"] == "query" and m["prompts"]["query"] == "query: "
    texts = ["a b c", "x", " ".join(tiny_lines()[:6])]  # the last runs past 32 tokens
    got = Embedder(out, threads=1, runners=1).encode(texts)
    want = _pooled_by_hand(src, texts, **expected)
    # fp32 against torch: measured max abs diff ~1e-6 (attention kernels, summation order).
    assert np.abs(got - want).max() <= 1e-4


def _pooled_by_hand(src: Path, texts: list[str], pooling: str, normalize: bool, max_seq_length: int,
                    prompts: dict | None = None, default_prompt_name: str | None = None) -> np.ndarray:
    """sentence-transformers' pooling modes written out over transformers' hidden states."""
    import torch
    import transformers

    prefix = prompts[default_prompt_name] if default_prompt_name else ""
    tok = transformers.AutoTokenizer.from_pretrained(str(src))
    model = transformers.AutoModel.from_pretrained(str(src), use_safetensors=True).eval()
    batch = tok([prefix + t for t in texts], padding=True, truncation=True, max_length=max_seq_length,
                return_tensors="pt")
    with torch.inference_mode():
        h = model(**batch).last_hidden_state.double()
    mask = batch["attention_mask"].unsqueeze(-1).double()
    if pooling == "cls":
        out = h[:, 0]
    elif pooling == "max":
        out = h.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    elif pooling == "lasttoken":
        out = h[torch.arange(len(texts)), batch["attention_mask"].sum(1) - 1]
    else:
        weights = torch.arange(1, h.shape[1] + 1, dtype=h.dtype).view(1, -1, 1) if pooling == "weightedmean" else 1.0
        summed = (h * mask * weights).sum(1)
        count = (mask * weights).sum(1)
        out = summed / (count.sqrt() if pooling == "mean_sqrt_len_tokens" else count)
    if normalize:
        out = torch.nn.functional.normalize(out, dim=-1)
    return out.float().numpy()


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda d: (d / "modules.json").write_text(json.dumps(
            json.loads((d / "modules.json").read_text())
            + [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}])),
         "2_Dense/config.json"),
        (lambda d: (d / "1_Pooling" / "config.json").write_text(json.dumps(
            {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True})), "concatenated"),
        (lambda d: (d / "config.json").unlink(), "no config.json"),
    ],
    ids=["dense-without-files", "concatenated-pooling", "no-config"],
)
def test_unsupported_sources_are_refused(tiny_src: Path, tmp_path: Path, edit, fragment: str) -> None:
    src = copy_folder(tiny_src, tmp_path / "src")
    edit(src)
    with pytest.raises(ExportError, match=fragment):
        export_model(str(src), tmp_path / "out", log=_quiet)
    assert not (tmp_path / "out").exists()


# Mixed case in scripts with case; "ΟΔΟΣ" ends in a capital sigma, where sentence-transformers 5's
# Lowercase normalizer ("οδοσ") and the str.lower() of sentence-transformers 2-4 ("οδος") differ.
CASED_TEXTS = ["HELLO World", "ΟΔΟΣ Αθηνών", "Straße İstanbul", "Ünïcödé MIXED ünïcödé", "no caps here"]


def test_do_lower_case_is_applied_as_sentence_transformers_does(tiny_src: Path, tiny_fp32: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer as HFTokenizer

    src = copy_folder(tiny_src, tmp_path / "src")
    (src / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": True}))
    out = export_model(str(src), tmp_path / "out", quantize="none", log=_quiet).path  # parity vs ST passed
    assert manifest_of(out)["lowercase"] is True
    st = SentenceTransformer(str(src), device="cpu")
    # The exported tokenizer normalizes exactly as sentence-transformers' does (final sigma included).
    ours_norm = HFTokenizer.from_file(str(out / "tokenizer.json")).normalizer
    theirs_norm = st[0].tokenizer.backend_tokenizer.normalizer
    assert [ours_norm.normalize_str(t) for t in CASED_TEXTS] == [theirs_norm.normalize_str(t) for t in CASED_TEXTS]
    assert ours_norm.normalize_str("ΟΔΟΣ") != ours_norm.normalize_str("οδος")  # a difference the check can see
    emb = Embedder(out)
    theirs = [[int(i) for i, m in zip(ids, mask) if m] for ids, mask in zip(
        *(st.tokenize(CASED_TEXTS)[k].tolist() for k in ("input_ids", "attention_mask")))]
    assert emb.tokenize(CASED_TEXTS) == theirs
    np.testing.assert_allclose(emb.encode(CASED_TEXTS), st.encode(CASED_TEXTS), atol=1e-4)
    assert emb.tokenize(["HELLO"]) == emb.tokenize(["hello"])
    # Without the flag the same model keeps case (the tiny tokenizer does not lower-case itself).
    assert Embedder(tiny_fp32).tokenize(["HELLO"]) != emb.tokenize(["HELLO"])


def test_missing_local_folder(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        export_model(str(tmp_path / "missing"), tmp_path / "out", log=_quiet)


def test_unreachable_hub_id_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExportError, match="could not download 'nobody/no-such-model'"):
        export_model("nobody/no-such-model", tmp_path / "out", log=_quiet)


def test_existing_output_needs_force(tiny_src: Path, tiny_fp32: Path) -> None:
    with pytest.raises(ExportError, match="already exists"):
        export_model(str(tiny_src), tiny_fp32, log=_quiet)


def test_failed_parity_leaves_nothing(tiny_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parity, "FP32_MAX_ABS_DIFF", -1.0)  # nothing can pass
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="fp32 max abs diff"):
        export_model(str(tiny_src), out, quantize="none", log=_quiet)
    assert list(tmp_path.iterdir()) == []


def _down_projections(folder: Path) -> tuple[int, int]:
    """(fp32 MatMuls, int8 MatMuls) whose constant weight shrinks (K > N) in a shipped graph.

    int8 is MatMulInteger (per-batch scales) or MatMulIntegerToFloat (per-row, the default).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(folder / "model.onnx")).graph
    shapes = {i.name: numpy_helper.to_array(i).shape for i in graph.initializer}

    def shrinks(node) -> bool:
        shape = shapes.get(node.input[1], ())
        return len(shape) == 2 and shape[0] > shape[1] and "outlier" not in node.name

    return (sum(n.op_type == "MatMul" and shrinks(n) for n in graph.node),
            sum(n.op_type in ("MatMulInteger", "MatMulIntegerToFloat") and shrinks(n) for n in graph.node))


def test_int8_falls_back_to_the_accurate_recipe(tiny_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = parity.check_against
    injected = "int8 min cosine vs torch is 0.50000 (group en), below 0.99 [injected]"
    int8_checks: list[bool] = []

    def first_int8_check_fails(*args, quantized: bool, **kwargs):
        reports, failures = real(*args, quantized=quantized, **kwargs)
        if quantized:
            int8_checks.append(True)
            if len(int8_checks) == 1:
                failures = [*failures, injected]
        return reports, failures

    monkeypatch.setattr(parity, "check_against", first_int8_check_fails)
    out = export_model(str(tiny_src), tmp_path / "out", log=_quiet).path
    q = manifest_of(out)["quantization"]
    assert len(int8_checks) == 2
    assert q["recipe"]["name"] == "fp32-down"
    assert q["rejected_recipes"] == [{"recipe": "smooth-outliers", "failures": [injected]}]
    assert _down_projections(out) == (2, 0)  # the tiny model's 2 layers: fp32, and none int8
    assert Embedder(out).encode(["hello world"]).shape == (1, 32)


def test_default_recipe_quantizes_down_projections(tiny_int8: Path) -> None:
    q = manifest_of(tiny_int8)["quantization"]
    assert q["recipe"]["name"] == "smooth-outliers" and q["rejected_recipes"] == []
    assert _down_projections(tiny_int8) == (0, 2)


def test_every_recipe_failing_is_an_error_that_says_what_to_do(
    tiny_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parity, "INT8_MIN_COSINE", 1.1)  # no int8 model can pass
    with pytest.raises(ParityError, match=r"every recipe tried \(smooth-outliers: .*; fp32-down: .*--quantize none"):
        export_model(str(tiny_src), tmp_path / "out", log=_quiet)
    assert list(tmp_path.iterdir()) == []


def test_unknown_recipe_is_refused(tiny_src: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--int8-recipe must be one of"):
        export_model(str(tiny_src), tmp_path / "out", int8_recipe="fastest", log=_quiet)


def test_interrupted_export_leaves_nothing(tiny_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mstsb_onnx.export import pipeline

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "quantize_int8", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_model(str(tiny_src), tmp_path / "out", log=_quiet)
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_atomically(tiny_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_model(str(tiny_src), out, quantize="none", log=_quiet)
    export_model(str(tiny_src), out, quantize="int8", force=True, log=_quiet)
    assert manifest_of(out)["quantization"]["mode"] == "int8"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("target", ["source-folder", "other-folder", "file"])
def test_force_never_replaces_what_export_did_not_write(tiny_src: Path, tmp_path: Path, target: str) -> None:
    """--force removes the old output, so a mistyped -o (the source, a home folder, a file) is refused."""
    out = {"source-folder": copy_folder(tiny_src, tmp_path / "src"), "other-folder": tmp_path / "notes",
           "file": tmp_path / "notes.txt"}[target]
    if target == "other-folder":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif target == "file":
        out.write_text("mine")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ExportError, match="not a folder written by mstsb-onnx export"):
        export_model(str(copy_folder(tiny_src, tmp_path / "src2")), out, quantize="none", force=True, log=_quiet)
    assert (out / "config.json").is_file() if target == "source-folder" else out.exists()
    assert [p for p in before if not (tmp_path / p).exists()] == []


def test_force_fills_an_empty_folder(tiny_src: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    export_model(str(tiny_src), tmp_path / "out", quantize="none", force=True, log=_quiet)
    assert manifest_of(tmp_path / "out")["quantization"]["mode"] == "none"


def test_bert_family_checkpoint_exports(tmp_path: Path) -> None:
    """Not only XLM-R: a BERT checkpoint with a WordPiece tokenizer and pad id 0 exports and matches."""
    from transformers import BertConfig

    src = build_wordpiece_checkpoint(tmp_path / "bert", BertConfig(
        vocab_size=len(WORDPIECE_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=128))
    out = export_model(str(src), tmp_path / "out", quantize="none", log=_quiet).path
    m = manifest_of(out)
    assert m["pad_token_id"] == 0 and m["max_seq_length"] == 128
    texts = ["hello world", "naïve café", "world"]
    ours = Embedder(out).encode(texts)
    assert ours.shape == (3, 32)
    assert np.abs(ours - torch_vectors(src, texts)).max() <= parity.FP32_MAX_ABS_DIFF


class _Tripwire:
    """Unpickling this creates ``path``: proof that a file was (or was not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickled_weights_are_refused_never_unpickled(tiny_src: Path, tmp_path: Path) -> None:
    import pickle

    src = copy_folder(tiny_src, tmp_path / "src")
    (src / "model.safetensors").unlink()
    tripwire = tmp_path / "unpickled"
    (src / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(tripwire)))
    with pytest.raises(ExportError, match=r"pytorch_model.bin.*never loaded"):
        export_model(str(src), tmp_path / "out", quantize="none", log=_quiet)
    assert not tripwire.exists()
    assert not (tmp_path / "out").exists()


def test_manifest_records_the_outlier_channels_applied_and_nothing_canned(tiny_int8: Path) -> None:
    """Counted from the graph itself: the fp32 outlier weights' rows per down-projection."""
    import onnx

    graph = onnx.load(str(tiny_int8 / "model.onnx"), load_external_data=False).graph
    rows = [init.dims[0] for init in graph.initializer if init.name.endswith("_outlier_rows")]
    layers = len([n for n in graph.node if n.op_type == "LayerNormalization"]) // 2  # 2 per layer (+1 embeddings)
    smoothing = manifest_of(tiny_int8)["quantization"]["smoothing"]
    assert len(rows) == smoothing["outlier_split_groups"] == layers
    assert smoothing["outlier_channels_fp32"] == sorted(set(rows))
    assert smoothing["outlier_channels_fp32"] != [smoothing["outlier_channels_requested"]]  # capped on a tiny FFN
    # The recipe entry holds the settings used, not text written in advance.
    assert set(manifest_of(tiny_int8)["quantization"]["recipe"]) == {"name", "alpha", "outliers", "fp32_down"}


def test_a_config_without_pad_token_id_exports(tmp_path: Path) -> None:
    from transformers import BertConfig

    src = build_wordpiece_checkpoint(tmp_path / "bert", BertConfig(
        vocab_size=len(WORDPIECE_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=None))
    out = export_model(str(src), tmp_path / "out", quantize="none", log=_quiet).path
    assert manifest_of(out)["pad_token_id"] == 0  # the tokenizer's [PAD]
    assert np.abs(Embedder(out).encode(["hello world"]) - torch_vectors(src, ["hello world"])).max() <= 1e-4


def test_manifest_names_the_exporting_commit(tiny_int8: Path) -> None:
    import subprocess

    from mstsb_onnx.export.provenance import same_code

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()
    recorded = manifest_of(tiny_int8)["exporter"]
    assert recorded["commit"] == head and isinstance(recorded["dirty"], bool)
    # Results made from another commit, or from a dirty tree, are never taken as this code's.
    assert not same_code({**recorded, "commit": "0" * 40})
    assert not same_code({**recorded, "dirty": True})
    assert not same_code(None)


@pytest.mark.parametrize(("path", "generated"), [
    ("benchmarks/results/peers.json", True), ("benchmarks/RESULTS.md", True), ("README.md", True),
    ("export/trim.py", False), ("benchmarks/peers.py", False), ("pyproject.toml", False)], ids=str)
def test_only_code_makes_a_tree_dirty(path: str, generated: bool) -> None:
    """make bench rewrites results and RESULTS.md between its steps; that is not a code change."""
    from mstsb_onnx.export.provenance import _generated

    assert _generated(path) is generated


@pytest.mark.parametrize(("changed", "dirty"), [
    (["benchmarks/results/a.json"], False), (["benchmarks/results/a.json", "export/x.py"], True),
    (["export/x.py"], True), ([], False)], ids=["results only", "results and code", "code", "clean"])
def test_dirty_reads_git_status(changed: list[str], dirty: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real repository: git's porcelain lines start with a space, which must not be lost."""
    import subprocess

    from mstsb_onnx.export import provenance

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    for name in ("benchmarks/results/a.json", "export/x.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "c")
    for name in changed:
        (tmp_path / name).write_text("2\n")
    monkeypatch.setattr(provenance, "_ROOT", tmp_path)
    got = provenance.code_revision()
    assert len(got["commit"]) == 40 and got["dirty"] is dirty



@pytest.mark.parametrize("mode", ["int8", "none"])
def test_every_folder_has_a_model_card_from_its_manifest(tiny_int8: Path, tiny_fp32: Path, tiny_src: Path,
                                                         mode: str) -> None:
    folder = tiny_int8 if mode == "int8" else tiny_fp32
    card, m = (folder / "README.md").read_text(encoding="utf-8"), manifest_of(folder)
    assert card.startswith("---\nlibrary_name: mstsb-onnx\n")
    assert f"ONNX export of `{tiny_src}`" in card and f"| embedding dim | {m['dim']} |" in card
    assert f"commit {m['exporter']['commit'][:12]}" in card
    shipped = m["parity"]["model"][0]
    assert f"| {shipped['max_abs_diff']:.2e} | {shipped['min_cosine']:.5f} |" in card
    if mode == "int8":
        assert f"recipe `{m['quantization']['recipe']['name']}`" in card
        assert f"per down-projection: {m['quantization']['smoothing']['outlier_channels_fp32']}" in card
    else:
        assert "fp32: no quantization." in card
    assert "from mstsb_onnx import Embedder" in card and "zh-TW" in card


@pytest.mark.parametrize(("mode", "fragment"), [("per-row", "one scale per row"), ("per-tensor", "one scale per batch"),
                                                ("static", "constant scales calibrated at export")])
def test_the_card_describes_each_activation_scale_mode(mode: str, fragment: str) -> None:
    from mstsb_onnx.export.card import _activation_scales

    assert fragment in _activation_scales(mode)


def test_an_exported_folder_has_the_usual_permissions(tiny_int8: Path) -> None:
    """0755 folders and 0644 files under a 022 umask: readable by a container's non-root user."""
    import os
    import stat

    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(tiny_int8.stat().st_mode) == 0o777 & ~mask
    for path in tiny_int8.rglob("*"):
        want = 0o777 & ~mask if path.is_dir() else 0o666 & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == want, path
