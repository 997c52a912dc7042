"""onnxruntime is imported with every CPU allowed and the caller's affinity mask given back
(mstsb_onnx.ortimport). Speed is measured by benchmarks/many_core.py; these tests check the masks."""

from __future__ import annotations

import os
import subprocess
import sys
from types import ModuleType

import pytest

from mstsb_onnx.ortimport import import_with_every_cpu

CPUS = sorted(os.sched_getaffinity(0))
# Widening needs a second CPU to widen to; a machine without one fails here rather than skipping.
TWO_CPUS = "these tests need two CPUs in the affinity mask (CI machines have two)"


@pytest.fixture
def one_cpu():
    """The test thread held to its first CPU, as ``taskset -c`` would hold a worker."""
    assert len(CPUS) >= 2, TWO_CPUS
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CPUS[0]})
    yield CPUS[0]
    os.sched_setaffinity(0, before)


def test_the_import_sees_every_cpu_and_the_mask_comes_back(one_cpu: int) -> None:
    seen: list[set[int]] = []

    def importer(name: str) -> ModuleType:
        seen.append(os.sched_getaffinity(0))
        return ModuleType(name)

    module = import_with_every_cpu("not_yet_imported_module", importer)
    assert module.__name__ == "not_yet_imported_module"
    assert seen == [set(CPUS)]
    assert os.sched_getaffinity(0) == {one_cpu}


def test_the_mask_comes_back_when_the_import_fails(one_cpu: int) -> None:
    def importer(name: str) -> ModuleType:
        raise ImportError(name)

    with pytest.raises(ImportError):
        import_with_every_cpu("not_yet_imported_module", importer)
    assert os.sched_getaffinity(0) == {one_cpu}


def test_a_module_already_imported_is_returned_without_touching_the_mask(one_cpu: int) -> None:
    seen: list[set[int]] = []

    def importer(name: str) -> ModuleType:
        seen.append(os.sched_getaffinity(0))
        return sys.modules[name]

    assert import_with_every_cpu("os", importer) is os
    assert seen == [{one_cpu}]


def test_a_pinned_process_keeps_its_core_after_loading_the_runtime() -> None:
    assert len(CPUS) >= 2, TWO_CPUS
    code = (f"import os; os.sched_setaffinity(0, {{{CPUS[-1]}}}); import mstsb_onnx.session, sys; "
            "print(sorted(os.sched_getaffinity(0)), 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out == [f"[{CPUS[-1]}]", "True"]
