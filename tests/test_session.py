"""Thread defaults follow the cores this process may use, not the machine's count."""

from __future__ import annotations

import os
import platform
import sys
import threading
import traceback
from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import cpus, session
from mstsb_onnx.errors import ModelFolderError


def test_affinity_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
    monkeypatch.setattr(cpus, "_cgroup_cpu_limit", lambda: None)
    assert cpus.available_cpus() == 3


@pytest.mark.parametrize("quota, expected", [(1.5, 2), (0.2, 1), (8.0, 3), (None, 3)], ids=str)
def test_cgroup_quota_caps(monkeypatch: pytest.MonkeyPatch, quota, expected: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr(cpus, "_cgroup_cpu_limit", lambda: quota)
    assert cpus.available_cpus() == expected


@pytest.mark.parametrize("text, expected", [("150000 100000\n", 1.5), ("max 100000\n", None)], ids=["quota", "max"])
def test_cgroup_v2_file_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected) -> None:
    (tmp_path / "cpu.max").write_text(text)
    monkeypatch.setattr(cpus, "CGROUP_ROOT", tmp_path)
    assert cpus._cgroup_cpu_limit() == expected


def test_session_options_are_explicit() -> None:
    so = session.session_options(threads=2, spin=False)
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # Without it, int8 on CPUs lacking VNNI saturates (test_rowquant shows it); with it, int8 on
    # VNNI/AMX CPUs is 1.6-3x slower for the same output. This machine's answer, read here:
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    x86 = platform.machine().lower() in {"x86_64", "amd64"}
    expected = "1" if x86 and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags) else "0"
    assert so.get_session_config_entry("session.x64quantprecision") == expected


_VNNI = "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
_AMX = "flags\t\t: fpu avx2 amx_tile amx_int8\n"
_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nbugs\t\t: avx512_vnni_is_not_a_flag_here\n"


@pytest.mark.parametrize(("cpuinfo", "machine", "expected"), [
    (_AVX2, "x86_64", True), (_VNNI, "x86_64", False), (_AMX, "x86_64", False),
    ("flags\t\t: fpu avx2 avx_vnni\n", "AMD64", False), (None, "x86_64", True),
    ("processor\t: 0\n", "x86_64", True), (_AVX2, "aarch64", False),
], ids=["avx2", "avx512-vnni", "amx", "avx-vnni-windows-name", "unreadable", "no-flags-line", "arm"])
def test_u8s8_saturation_check(tmp_path: Path, cpuinfo: str | None, machine: str, expected: bool) -> None:
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    assert cpus.u8s8_may_saturate(path, machine) is expected


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True], ids=str)
def test_bad_thread_counts(bad) -> None:
    with pytest.raises(ValueError, match="threads"):
        session.session_options(threads=bad)


@pytest.mark.parametrize("providers", [["NoSuchExecutionProvider"], [("NoSuchExecutionProvider", {"x": "1"})]],
                         ids=["name", "name-options"])
def test_unknown_provider(tiny_int8: Path, providers: list) -> None:
    from mstsb_onnx import Embedder

    with pytest.raises(ValueError, match="NoSuchExecutionProvider"):
        Embedder(tiny_int8, providers=providers)


def test_provider_with_options(tiny_int8: Path) -> None:
    """(name, options) pairs, as onnxruntime takes them, pass the availability check by their name."""
    from mstsb_onnx import Embedder

    paired = Embedder(tiny_int8, providers=[("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})])
    assert paired.session.get_providers() == ["CPUExecutionProvider"]
    texts = ["hola mundo", "a longer sentence to embed"]
    np.testing.assert_array_equal(paired.encode(texts), Embedder(tiny_int8).encode(texts))


@pytest.mark.parametrize("disabled, fused", [(session.DISABLED_OPTIMIZERS, False), ((), True)], ids=["ours", "ort-default"])
def test_skip_layer_norm_fusion_is_off(tiny_int8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       disabled: tuple[str, ...], fused: bool) -> None:
    # onnxruntime's CPU SkipLayerNormalization measured 7-9x slower than Add + LayerNormalization
    # (session.py); the second case shows the check would see the fusion if it happened.
    import onnx
    real = session.session_options

    def keep_optimized(*args: object, **kwargs: object):
        so = real(*args, **kwargs)
        so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        return so

    monkeypatch.setattr(session, "session_options", keep_optimized)
    monkeypatch.setattr(session, "DISABLED_OPTIMIZERS", disabled)
    session.make_session(tiny_int8 / "model.onnx", threads=1)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx"), load_external_data=False).graph.node}
    assert ("SkipLayerNormalization" in ops) is fused
    assert "LayerNormalization" in ops


class _RecordingEvent(threading.Event):
    """Remembers the call stack of the first ``set``."""

    first_stack: list[str] | None = None

    def set(self) -> None:
        if self.first_stack is None:
            self.first_stack = [f.name for f in traceback.extract_stack()]
        super().set()


def test_entering_fires_inside_initialize_session(tiny_int8: Path) -> None:
    # Embedder's cold-start overlap relies on this: the event fires while onnxruntime's Python glue
    # is calling its long GIL-free step, not only when creation has ended. A rename in a future
    # onnxruntime fails here (the overlap would be lost, nothing else).
    entering = _RecordingEvent()
    before = sys.getprofile()
    made = session.make_session(tiny_int8 / "model.onnx", threads=1, entering=entering)
    assert made.get_inputs()
    assert entering.first_stack is not None and "_create_inference_session" in entering.first_stack
    assert sys.getprofile() is before


@pytest.mark.parametrize("kwargs, error", [
    ({"providers": ["NoSuchExecutionProvider"]}, ValueError),
    ({"threads": 0}, ValueError),
    ({"model": "missing.onnx"}, ModelFolderError),
], ids=["bad-provider", "bad-threads", "bad-file"])
def test_entering_is_set_on_errors(tiny_int8: Path, tmp_path: Path, kwargs: dict, error: type) -> None:
    # Embedder waits for the event before parsing the tokenizer: an error must not leave it unset.
    entering = threading.Event()
    options = {k: v for k, v in kwargs.items() if k != "model"}  # the parametrized dict stays intact
    path = tmp_path / kwargs["model"] if "model" in kwargs else tiny_int8 / "model.onnx"
    with pytest.raises(error):
        session.make_session(path, entering=entering, **options)
    assert entering.is_set()


def test_embedder_reports_bad_threads(tiny_int8: Path) -> None:
    from mstsb_onnx import Embedder

    with pytest.raises(ValueError, match="threads"):
        Embedder(tiny_int8, threads=-1)


def test_embedder_parses_the_tokenizer_after_the_session_signals(tiny_int8: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The cold-start overlap (embedder.py): the tokenizer holds the GIL while it parses, so it must
    # start only once make_session has signalled (where it signals is the test above).
    from mstsb_onnx import Embedder, embedder, tokenizer

    events: list[threading.Event] = []
    state_at_parse: list[bool] = []
    real_from_file = tokenizer.Tokenizer.from_file.__func__
    real_make_session = embedder.make_session

    def make_session(*args: object):
        events.append(args[-1])
        return real_make_session(*args)

    def from_file(cls, *args: object):
        state_at_parse.append(bool(events) and events[0].is_set())
        return real_from_file(cls, *args)

    monkeypatch.setattr(embedder, "make_session", make_session)
    monkeypatch.setattr(tokenizer.Tokenizer, "from_file", classmethod(from_file))
    Embedder(tiny_int8, threads=1).encode(["hello"])
    assert state_at_parse == [True]
