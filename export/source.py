"""Resolve what the user asked to export: a hub id or a local folder, plain or sentence-transformers.

From a sentence-transformers folder -- as written by sentence-transformers 2.x to 5.x, whose
module paths and config keys differ -- it reads max_seq_length (sentence_bert_config.json, or
since 5.0 the tokenizer's model_max_length), the pooling mode (1_Pooling/config.json: any one of
sentence-transformers' modes), Dense modules after pooling (weights from safetensors only, a fixed
list of activations), a Normalize module, prompts (config_sentence_transformers.json) and
do_lower_case (written into the exported tokenizer as sentence-transformers 5 applies it). A plain
transformers checkpoint gets the card's defaults: mean pooling, max_seq_length 128. Modules we
cannot reproduce in the graph (prompt-excluding pooling, concatenated pooling modes...) are
refused by name rather than silently dropped.

It reads JSON only; it never loads weights or runs code from the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mstsb_onnx.errors import ExportError
from mstsb_onnx.export import hub
from mstsb_onnx.manifest import POOLING_MODES

DEFAULT_MAX_SEQ_LENGTH = 128
# sentence-transformers < 5 wrote one boolean per mode; 5.x writes "pooling_mode": "mean".
_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


# Activations a Dense module may name (its config's activation_function), by the path
# sentence-transformers writes. Only these are rebuilt; nothing named in a config is imported.
DENSE_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
}


@dataclass(frozen=True)
class DenseSpec:
    """A sentence-transformers Dense module: ``activation(x @ W.T + b)`` on the pooled vector."""

    weights: Path  # model.safetensors with linear.weight [out, in] (and linear.bias [out])
    in_features: int
    out_features: int
    bias: bool
    activation: str  # a value of DENSE_ACTIVATIONS


@dataclass
class SourceModel:
    """A resolved source: where its files are and how it embeds."""

    model_id: str
    model_dir: Path  # the transformers checkpoint (config.json, weights, tokenizer)
    root: Path  # the folder the user named (differs from model_dir for ST folders with 0_Transformer/)
    revision: str | None
    sentence_transformers: bool
    revision_note: str = ""  # why the revision is not the one asked for (hub.Snapshot.note)
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    # Where max_seq_length came from: "default", "sentence_bert_config.json",
    # "tokenizer_config.json" (sentence-transformers 5) or "the max_seq_length option".
    max_seq_length_from: str = "default"
    pooling: str = "mean"
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    dense: list[DenseSpec] = field(default_factory=list)  # applied in order after pooling
    # sentence-transformers' do_lower_case: lower-case each text (prompt included) before tokenizing.
    do_lower_case: bool = False

    @property
    def default_prompt(self) -> str:
        return self.prompts.get(self.default_prompt_name or "", "")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"could not read {path}: {e}") from e


def _pooling_mode(config: dict[str, Any], where: Path) -> str:
    # Read as sentence-transformers 5 reads it: "pooling_mode" (a name or a list of names) wins;
    # else the legacy booleans, and none set means mean.
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [name for key, name in _POOLING_KEYS.items() if config.get(key)] or ["mean"]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode) if isinstance(mode, list) else [repr(mode)]
    if len(modes) != 1:
        raise ExportError(f"{where}: pooling modes {modes} are concatenated; only one mode is supported "
                          f"({', '.join(POOLING_MODES)})")
    if modes[0] not in POOLING_MODES:
        raise ExportError(f"{where}: pooling {modes[0]!r} is not supported (supported: {', '.join(POOLING_MODES)})")
    if config.get("include_prompt", True) is False:
        raise ExportError(f"{where}: include_prompt=false (pooling that skips prompt tokens) is not supported")
    return modes[0]


def _module_kind(module_type: str) -> str:
    """'Transformer', 'Pooling', ... for any sentence-transformers module path; '' otherwise.

    The same class has been saved under several paths (``sentence_transformers.models.Pooling``
    before 5.0, ``sentence_transformers.sentence_transformer.modules.pooling.Pooling`` and
    ``sentence_transformers.base.modules.transformer.Transformer`` in 5.x), so only the package
    and the class name are compared. Nothing is imported.
    """
    if not module_type.startswith("sentence_transformers."):
        return ""
    return module_type.rsplit(".", 1)[-1]


def _dense(sub: Path) -> DenseSpec:
    where = sub / "config.json"
    cfg = _read_json(where)
    for key in ("module_input_name", "module_output_name"):
        if cfg.get(key, "sentence_embedding") not in ("sentence_embedding", None):
            raise ExportError(f"{where}: {key}={cfg[key]!r} is not supported (only the sentence embedding)")
    activation = cfg.get("activation_function") or "torch.nn.modules.linear.Identity"
    if activation not in DENSE_ACTIVATIONS:
        raise ExportError(f"{where}: activation_function {activation!r} is not supported "
                          f"(supported: {', '.join(sorted(DENSE_ACTIVATIONS))})")
    weights = sub / "model.safetensors"
    if not weights.is_file():
        found = sorted(p.name for p in sub.iterdir() if p.is_file() and p.name != "config.json") if sub.is_dir() else []
        raise ExportError(f"{sub}: the Dense weights must be in model.safetensors (found {found or 'nothing'}); "
                          "pickled weights (pytorch_model.bin) are never loaded -- re-save the model with "
                          "sentence-transformers >= 3, which writes safetensors")
    try:
        return DenseSpec(weights, int(cfg["in_features"]), int(cfg["out_features"]), bool(cfg.get("bias", True)),
                         DENSE_ACTIVATIONS[activation])
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{where}: expected integer in_features and out_features ({e})") from e


def _check_text_features(cfg: dict[str, Any], where: Path) -> None:
    """sentence-transformers 5 can take another head's output or another modality; we export the
    encoder's last hidden state for text only."""
    task = cfg.get("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise ExportError(f"{where}: transformer_task {task!r} is not supported (only feature-extraction)")
    modality = cfg.get("modality_config")
    expected = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
    if modality is not None and modality != expected:
        raise ExportError(f"{where}: modality_config {modality!r} is not supported (only {expected!r})")


def _max_length_from_tokenizer(model_dir: Path) -> int | None:
    """sentence-transformers 5 keeps max_seq_length as the tokenizer's model_max_length, capped at
    the model's max_position_embeddings, instead of in sentence_bert_config.json. (That cap can
    still exceed what a RoBERTa-family table holds; the export cuts it to the usable positions.)"""
    tok_cfg = model_dir / "tokenizer_config.json"
    if not tok_cfg.is_file():
        return None
    limit = _read_json(tok_cfg).get("model_max_length")
    if not isinstance(limit, (int, float)) or isinstance(limit, bool):
        return None
    config = model_dir / "config.json"
    positions = _read_json(config).get("max_position_embeddings") if config.is_file() else None
    if isinstance(positions, int) and positions > 0:
        limit = min(limit, positions)
    return int(limit)


def _read_sentence_transformers(src: SourceModel) -> None:
    root = src.root
    modules = _read_json(root / "modules.json")
    if not isinstance(modules, list) or not modules:
        raise ExportError(f"{root / 'modules.json'}: expected a non-empty list of modules")
    pooling_seen = False
    base = root.resolve()  # module paths are compared resolved, so "../x" and links are seen for what they are
    for module in modules:
        kind = _module_kind(str(module.get("type", "")))
        sub = (root / str(module.get("path", ""))).resolve()
        if sub != base and base not in sub.parents:
            raise ExportError(f"{root / 'modules.json'}: module path {module.get('path')!r} leads outside the folder")
        if kind == "Transformer":
            src.model_dir = sub
            bert_cfg = sub / "sentence_bert_config.json"
            if bert_cfg.is_file():
                cfg = _read_json(bert_cfg)
                src.do_lower_case = bool(cfg.get("do_lower_case", False))
                _check_text_features(cfg, bert_cfg)
                if cfg.get("max_seq_length") is not None:
                    src.max_seq_length = int(cfg["max_seq_length"])
                    src.max_seq_length_from = "sentence_bert_config.json"
            if src.max_seq_length_from == "default":
                from_tokenizer = _max_length_from_tokenizer(sub)
                if from_tokenizer is not None:
                    src.max_seq_length = from_tokenizer
                    src.max_seq_length_from = "tokenizer_config.json"
        elif src.normalize:
            # The graph normalizes last; a module after Normalize would see other inputs.
            raise ExportError(f"{root / 'modules.json'}: module {module.get('type')!r} after Normalize "
                              "is not supported (Normalize must come last)")
        elif kind == "Pooling":
            src.pooling = _pooling_mode(_read_json(sub / "config.json"), sub / "config.json")
            pooling_seen = True
        elif kind == "Dense" and pooling_seen:
            src.dense.append(_dense(sub))
        elif kind == "Normalize":
            src.normalize = True
        else:
            raise ExportError(
                f"{root / 'modules.json'}: module {module.get('type')!r} is not supported here "
                "(supported: sentence-transformers' Transformer, Pooling, Dense after Pooling, Normalize)"
            )
    if not pooling_seen:
        raise ExportError(f"{root / 'modules.json'}: no Pooling module; cannot tell how to pool")
    st_cfg = root / "config_sentence_transformers.json"
    if st_cfg.is_file():
        cfg = _read_json(st_cfg)
        src.prompts = {str(k): str(v) for k, v in (cfg.get("prompts") or {}).items()}
        src.default_prompt_name = cfg.get("default_prompt_name")
        if src.default_prompt_name is not None and src.default_prompt_name not in src.prompts:
            raise ExportError(f"{st_cfg}: default_prompt_name {src.default_prompt_name!r} is not among the prompts")


def resolve_source(source: str, revision: str | None = None, max_seq_length: int | None = None) -> SourceModel:
    """Find the model's files (downloading a hub id) and read how it embeds."""
    path = Path(source).expanduser()
    revision_note = ""
    if path.is_dir():
        root = path.resolve()
    elif path.exists():
        raise ExportError(f"{source} is a file; pass a model folder or a hub id")
    elif source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ExportError(f"model folder {source} does not exist")
    else:
        snapshot = hub.download(source, revision)
        root, revision_note = snapshot.path, snapshot.note
    src = SourceModel(
        model_id=source if not path.is_dir() else str(root),
        model_dir=root,
        root=root,
        revision=hub.revision_of(root),
        revision_note=revision_note,
        sentence_transformers=(root / "modules.json").is_file(),
    )
    if src.sentence_transformers:
        _read_sentence_transformers(src)
    if not (src.model_dir / "config.json").is_file():
        raise ExportError(f"{src.model_dir} has no config.json: not a transformers checkpoint")
    if max_seq_length is not None:
        src.max_seq_length = max_seq_length
        src.max_seq_length_from = "the max_seq_length option"
    if src.max_seq_length < 2:
        raise ExportError(f"max_seq_length must be at least 2, got {src.max_seq_length}")
    return src
