"""The command line: help, one-line errors with exit 1, info, check with stdin, eval-sts."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mstsb_onnx.cli import main


def run_cli(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mstsb_onnx.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("command", ["export", "trim", "check", "eval-sts", "info"])
def test_help_reads_well(command: str) -> None:
    res = run_cli([command, "--help"])
    assert res.returncode == 0 and "usage: mstsb-onnx" in res.stdout


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["embed", "--help"], ["trim", "--help"]],
                         ids=["top", "serve", "embed", "trim"])
def test_help_loads_nothing_heavy(argv: list[str]) -> None:
    """--help must be instant on a slim install: no onnxruntime, numpy, tokenizers, starlette or torch."""
    code = ("import sys\nfrom mstsb_onnx.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('onnxruntime', 'numpy', 'tokenizers', 'starlette', 'torch') if m in sys.modules]\n"
            "print('HEAVY', heavy)") % argv
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in res.stdout, res.stdout[-300:] + res.stderr[-300:]


def test_user_error_is_one_line_exit_1(tmp_path: Path) -> None:
    res = run_cli(["info", str(tmp_path / "missing")])
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["embed", "M", "in.txt", "-o", "o.npy", "--batch-size", "0"],
         "--batch-size: must be a positive integer, got '0'"),
        (["embed", "M", "in.txt", "-o", "o.npy", "--chunk-size", "many"], "--chunk-size: must be a positive integer"),
        (["bench", "M", "--rounds", "0"], "--rounds: must be a positive integer"),
        (["eval-sts", "M", "--data", "d.csv", "--per-task", "-3"], "--per-task: must be a positive integer"),
        (["serve", "M", "--workers", "0"], "--workers: must be a positive integer"),
        (["serve", "M", "--max-wait-ms", "-1"], "--max-wait-ms: must be zero or a positive number"),
        (["serve", "M", "--timeout", "nan"], "--timeout: must be a positive number"),
        (["serve", "M", "--port", "70000"], "--port: must be a port number"),
        (["export", "SRC"], "required: -o/--output"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
    ],
    ids=["batch-size", "chunk-size", "rounds", "per-task", "workers", "max-wait", "timeout", "port", "missing-output",
         "command"],
)
def test_bad_arguments_are_one_line_exit_1(args: list[str], fragment: str) -> None:
    res = run_cli(args)
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0, res.stderr
    assert fragment in res.stderr and "--help" in res.stderr and "Traceback" not in res.stderr


def test_export_error_is_one_line(tmp_path: Path) -> None:
    res = run_cli(["export", str(tmp_path / "nope"), "-o", str(tmp_path / "out")])
    assert res.returncode == 1 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_info(tiny_int8: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tiny_int8)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dim"] == 32 and shown["quantization"]["mode"] == "int8" and shown["lowercase"] is False


def test_check_passes_with_user_text_from_stdin(tiny_int8: Path, tiny_src: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("first line\n\nzweite Zeile 🙂\n".encode())))
    assert main(["check", str(tiny_int8), "--reference", str(tiny_src), "--texts", "-"]) == 0
    out = capsys.readouterr().out
    assert "user" in out and "parity: OK" in out


def test_check_fails_against_another_model(tiny_int8: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from testmodels.xlmr import build_tiny_xlmr

    from conftest import tiny_lines

    other = build_tiny_xlmr(tmp_path / "other", tiny_lines(), seed=1)
    assert main(["check", str(tiny_int8), "--reference", str(other)]) == 1
    assert "failed parity" in capsys.readouterr().err


def test_check_rejects_non_utf8_stdin(tiny_int8: Path, tiny_src: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ok\n\xff\xfe\n")))
    assert main(["check", str(tiny_int8), "--reference", str(tiny_src), "--texts", "-"]) == 1
    assert "not UTF-8" in capsys.readouterr().err


def test_bench_reports_both_variants(tiny_int8: Path, tiny_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", str(tiny_int8), "--reference", str(tiny_src), "--rounds", "2", "--threads", "1",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["latency_ms"]) == {"8", "16", "32", "64", "128"}
    for row in result["throughput"].values():
        assert set(row) == {"onnx", "torch fp32"} and all(v > 0 for v in row.values())


def test_version_and_python_dash_m() -> None:
    import subprocess
    import sys

    from mstsb_onnx import __version__

    for argv in (["-m", "mstsb_onnx", "--version"], ["-m", "mstsb_onnx.cli", "--version"]):
        res = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and res.stdout.strip() == f"mstsb-onnx {__version__}"
    res = subprocess.run([sys.executable, "-m", "mstsb_onnx", "info"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "model_dir" in res.stderr  # the same parser: one line, exit 1


def test_an_unknown_activation_mode_is_one_line_naming_the_choices(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--activations", "per-moon"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "per-moon" in err and "per-row" in err and "static" in err
