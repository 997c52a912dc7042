"""Reading a source folder: sentence-transformers layouts of every version, and position limits.

sentence-transformers 5 saves folders that differ from the 2.x-4.x layout (module paths,
"pooling_mode" as a name, max_seq_length kept as the tokenizer's model_max_length); both must
export with the settings the library itself would use.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mstsb_onnx import ExportError
from mstsb_onnx.export import export_model
from mstsb_onnx.export.source import resolve_source

from conftest import WORDPIECE_VOCAB, _quiet, build_wordpiece_checkpoint, copy_folder, manifest_of, tiny_lines


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


# The paths sentence-transformers has written into modules.json over the years.
MODULE_PATHS = {
    "2.x": ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize"),
    "4.x-submodules": ("sentence_transformers.models.transformer.Transformer",
                       "sentence_transformers.models.pooling.Pooling",
                       "sentence_transformers.models.normalize.Normalize"),
    "5.x": ("sentence_transformers.base.modules.transformer.Transformer",
            "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
            "sentence_transformers.sentence_transformer.modules.normalize.Normalize"),
}


@pytest.mark.parametrize("paths", list(MODULE_PATHS.values()), ids=list(MODULE_PATHS))
def test_module_paths_of_every_version_are_read(tiny_src: Path, tmp_path: Path, paths: tuple[str, ...]) -> None:
    src = copy_folder(tiny_src, tmp_path / "src")
    (src / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": paths[0]},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": paths[1]},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": paths[2]},
    ]))
    resolved = resolve_source(str(src))
    assert (resolved.pooling, resolved.normalize, resolved.max_seq_length) == ("mean", True, 128)


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
        ({"pooling_mode_mean_tokens": False}, "mean"),  # none set: sentence-transformers means mean
        ({"embedding_dimension": 32, "pooling_mode": "max", "include_prompt": True}, "max"),
        ({"pooling_mode": ["cls"]}, "cls"),
    ],
    ids=["legacy-cls", "legacy-none-set", "5.x-name", "5.x-list-of-one"],
)
def test_pooling_config_forms(tiny_src: Path, tmp_path: Path, config: dict, expected: str) -> None:
    src = copy_folder(tiny_src, tmp_path / "src")
    (src / "1_Pooling" / "config.json").write_text(json.dumps(config))
    assert resolve_source(str(src)).pooling == expected


REFUSED = {
    "concatenated-modes": ("1_Pooling/config.json", {"pooling_mode": ["mean", "max"]}, "concatenated"),
    "unknown-mode": ("1_Pooling/config.json", {"pooling_mode": "median"}, "median"),
    "other-task": ("sentence_bert_config.json", {"transformer_task": "fill-mask"}, "fill-mask"),
    "image-modality": ("sentence_bert_config.json", {"modality_config": {"image": {"method": "forward"}}},
                       "modality_config"),
}


@pytest.mark.parametrize("name", list(REFUSED), ids=list(REFUSED))
def test_unsupported_settings_are_refused_by_name(tiny_src: Path, tmp_path: Path, name: str) -> None:
    file, changes, fragment = REFUSED[name]
    src = copy_folder(tiny_src, tmp_path / "src")
    _edit_json(src / file, **changes)
    with pytest.raises(ExportError, match=fragment):
        resolve_source(str(src))


def test_module_path_outside_the_folder_is_refused(tiny_src: Path, tmp_path: Path) -> None:
    src = copy_folder(tiny_src, tmp_path / "src")
    modules = json.loads((src / "modules.json").read_text())
    modules[1]["path"] = "../elsewhere"
    (src / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ExportError, match="leads outside the folder"):
        resolve_source(str(src))


def test_module_outside_sentence_transformers_is_refused(tiny_src: Path, tmp_path: Path) -> None:
    src = copy_folder(tiny_src, tmp_path / "src")
    modules = json.loads((src / "modules.json").read_text())
    modules[1]["type"] = "my_package.Pooling"  # same class name, not the library's: never imported
    (src / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ExportError, match="my_package.Pooling"):
        resolve_source(str(src))


@pytest.mark.parametrize(
    "model_max_length, expected",
    [(64, 64), (4096, 514), (int(1e30), 514)],
    ids=["tokenizer-limit", "capped-at-positions", "no-limit-capped"],
)
def test_max_seq_length_from_the_tokenizer_when_sentence_bert_config_has_none(
    tiny_src: Path, tmp_path: Path, model_max_length: int, expected: int
) -> None:
    src = copy_folder(tiny_src, tmp_path / "src")
    _edit_json(src / "sentence_bert_config.json", max_seq_length=None)
    _edit_json(src / "tokenizer_config.json", model_max_length=model_max_length)
    assert resolve_source(str(src)).max_seq_length == expected


def test_tokenizer_limit_past_the_usable_positions_is_cut_to_them(tiny_src: Path, tmp_path: Path) -> None:
    """sentence-transformers caps at max_position_embeddings (514 for XLM-R), which counts the two
    rows below padding_idx + 1 that no token can use; the export cuts to 512 and says so."""
    src = copy_folder(tiny_src, tmp_path / "src")
    _edit_json(src / "sentence_bert_config.json", max_seq_length=None)
    _edit_json(src / "tokenizer_config.json", model_max_length=int(1e30))
    said: list[str] = []
    out = export_model(str(src), tmp_path / "out", quantize="none", log=lambda *a, **k: said.append(" ".join(map(str, a)))).path
    assert manifest_of(out)["max_seq_length"] == 512
    assert any("cut to the 512 positions" in line for line in said)


def test_default_max_seq_length_is_cut_to_a_short_position_table(tmp_path: Path) -> None:
    """A plain checkpoint gets the card's 128, unless its table is shorter (not asked for: cut)."""
    from transformers import BertConfig

    src = build_wordpiece_checkpoint(tmp_path / "bert64", BertConfig(
        vocab_size=len(WORDPIECE_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64))
    out = export_model(str(src), tmp_path / "out", quantize="none", log=_quiet).path
    assert manifest_of(out)["max_seq_length"] == 64


def test_max_seq_length_beyond_the_position_table_is_a_clear_error(tiny_src: Path, tmp_path: Path) -> None:
    # XLM-R numbers positions from padding_idx + 1: 514 rows hold 512 tokens.
    with pytest.raises(ExportError, match=r"longer than the 512 positions .*--max-seq-length 512"):
        export_model(str(tiny_src), tmp_path / "out", quantize="none", max_seq_length=513, log=_quiet)
    assert not (tmp_path / "out").exists()


def test_max_seq_length_override_applies_to_the_sentence_transformers_reference(tiny_src: Path, tmp_path: Path) -> None:
    import sentence_transformers  # noqa: F401
    out = export_model(str(tiny_src), tmp_path / "out", quantize="none", max_seq_length=512, log=_quiet).path
    manifest = manifest_of(out)
    assert manifest["max_seq_length"] == 512
    assert "sentence-transformers" in [r["against"] for r in manifest["parity"]["model"]]


ST5_VARIANTS = {
    "mean": {},
    "cls-normalize-seq32": dict(pooling="cls", normalize=True, max_seq_length=32),
}


@pytest.mark.parametrize("variant", list(ST5_VARIANTS), ids=list(ST5_VARIANTS))
def test_folder_saved_by_sentence_transformers_5_exports(variant: str, tmp_path: Path) -> None:
    """Re-saved by the installed sentence-transformers, then exported: parity against it holds."""
    import sentence_transformers as st
    from testmodels.xlmr import build_tiny_xlmr

    legacy = build_tiny_xlmr(tmp_path / "legacy", tiny_lines(), **ST5_VARIANTS[variant])
    saved = tmp_path / "saved"
    st.SentenceTransformer(str(legacy), device="cpu").save(str(saved))
    out = export_model(str(saved), tmp_path / "out", quantize="none", log=_quiet).path
    manifest = manifest_of(out)
    expected = {**dict(pooling="mean", normalize=False, max_seq_length=128), **ST5_VARIANTS[variant]}
    assert {k: manifest[k] for k in expected} == expected
    assert "sentence-transformers" in [r["against"] for r in manifest["parity"]["model"]]


def test_hub_download_takes_configs_tokenizers_and_safetensors_only(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    """The patterns handed to the hub client keep every file an export reads, in module folders
    too, and leave pickles and other runtimes' files behind."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    seen: dict[str, list[str]] = {}

    def fake_snapshot_download(repo_id: str, revision: str | None, allow_patterns: list[str]) -> str:
        seen["patterns"] = allow_patterns
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(ExportError, match="could not download"):
        resolve_source("someone/some-model")
    wanted = ["config.json", "model.safetensors", "tokenizer.json", "sentencepiece.bpe.model", "modules.json",
              "1_Pooling/config.json", "2_Dense/config.json", "2_Dense/model.safetensors",
              "0_Transformer/sentencepiece.bpe.model", "0_Transformer/vocab.txt", "merges.txt"]
    unwanted = ["pytorch_model.bin", "2_Dense/pytorch_model.bin", "onnx/model.onnx", "openvino/openvino_model.xml",
                "tf_model.h5", "flax_model.msgpack"]
    assert list(filter_repo_objects(wanted + unwanted, allow_patterns=seen["patterns"])) == wanted
