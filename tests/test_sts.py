"""STS scoring as the model card does it (engine/sts.py) and `eval-sts` end to end on a small CSV
made in code: the reader's errors, ranks and Fisher-z averaging against independent formulas."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx.eval import sts
from mstsb_onnx.cli import main
from mstsb_onnx.errors import InputError

ROWS = [
    ("en;en", 0, "A man is playing a guitar.", "A man plays the guitar.", 0.96),
    ("en;en", 2, "A woman is slicing an onion.", "A dog runs in the park.", 0.02),
    ("en;en", 4, "The cat sleeps.", "A cat is sleeping on the sofa.", 0.7),
    ("de;de", 0, "Ein Mann spielt Gitarre.", "Ein Mann spielt die Gitarre.", 0.96),
    ("de;de", 2, "Eine Frau schneidet eine Zwiebel.", "Ein Hund rennt im Park.", 0.02),
    ("de;de", 4, "Die Katze schläft.", "Eine Katze schläft auf dem Sofa.", 0.7),
    ("en;de", 0, "A man is playing a guitar.", "Ein Mann spielt die Gitarre.", 0.96),
    ("en;de", 2, "A woman is slicing an onion.", "Ein Hund rennt im Park.", 0.02),
    ("en;de", 4, "The cat sleeps.", "Eine Katze schläft auf dem Sofa.", 0.7),
]


def write_csv(path: Path, rows: list[tuple], header: tuple[str, ...] = sts.COLUMNS, encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"], ids=["plain", "with-bom"])
def test_reader_groups_pairs_by_task(tmp_path: Path, encoding: str) -> None:
    tasks = sts.read_sts_csv(write_csv(tmp_path / "d.csv", ROWS, encoding=encoding))
    assert list(tasks) == ["en;en", "de;de", "en;de"]
    assert [p.idx for p in tasks["de;de"]] == [0, 2, 4]
    assert tasks["en;de"][0].sentence2 == "Ein Mann spielt die Gitarre."


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        pytest.param(ROWS, ("task", "idx", "sentence1", "sentence2"), r"missing column\(s\) \['score'\]",
                     id="no-score"),
        pytest.param([("en;en", 0, "a", "b", "high")], sts.COLUMNS, "line 2: bad idx or score", id="score-not-number"),
        pytest.param([("en;en", 0, "a", "b", "nan")], sts.COLUMNS, "line 2: task must be 'xx;yy' and score finite",
                     id="score-nan"),
        pytest.param([("english", 0, "a", "b", 0.5)], sts.COLUMNS, "line 2: task must be 'xx;yy'", id="task-no-pair"),
        pytest.param([], sts.COLUMNS, "has no rows", id="empty"),
    ],
)
def test_reader_errors_name_what_is_wrong(tmp_path: Path, rows: list[tuple], header: tuple[str, ...],
                                          message: str) -> None:
    with pytest.raises(InputError, match=message):
        sts.read_sts_csv(write_csv(tmp_path / "d.csv", rows, header))


def test_reader_refuses_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"task,idx,sentence1,sentence2,score\nen;en,0,caf\xe9,b,0.5\n")
    with pytest.raises(InputError, match="not UTF-8"):
        sts.read_sts_csv(path)


def test_ranks_average_ties() -> None:
    assert sts.rankdata(np.array([10.0, 20.0, 10.0, 30.0, 20.0])).tolist() == [1.5, 3.5, 1.5, 5.0, 3.5]


def test_spearman_is_pearson_of_ranks_and_ignores_monotone_maps() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert sts.spearman(a, b) == pytest.approx(sts.spearman(np.exp(a), b ** 3), abs=1e-12)
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))  # no ties in continuous draws
    n = len(a)
    assert sts.spearman(a, b) == pytest.approx(1 - 6 * float(((ra - rb) ** 2).sum()) / (n * (n * n - 1)), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2], ids=["s0", "s1", "s2"])
def test_spearman_and_pearson_equal_scipy_with_ties(seed: int) -> None:
    from scipy import stats

    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 6, size=80).astype(float), rng.normal(size=80)  # a has many ties
    assert sts.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert sts.pearson(a, b) == pytest.approx(stats.pearsonr(a, b).statistic, abs=1e-12)


def test_fisher_mean_averages_in_z() -> None:
    r = [0.5, 0.9]
    assert sts.fisher_mean(r) == pytest.approx(math.tanh((math.atanh(0.5) + math.atanh(0.9)) / 2))
    assert math.isfinite(sts.fisher_mean([1.0, 0.2]))


def test_markdown_table_rows_deltas_mean_and_worst_task() -> None:
    col = lambda *rhos: {t: {"spearman": r, "pearson": r, "n": 3} for t, r in zip(("en;en", "de;de", "en;de"), rhos)}
    table = sts.markdown_table({"ref": col(0.80, 0.70, 0.60), "q": col(0.81, 0.67, 0.60)}, reference="ref")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()}
    assert rows["de;de"] == "| de;de | 3 | 70.00 | 67.00 (-3.00) |"
    assert rows["**mean Δ over tasks**"] == "| **mean Δ over tasks** |  |  | -0.667 |"  # (+1 - 3 + 0) / 3
    assert rows["**worst task (Δ)**"] == "| **worst task (Δ)** |  |  | de;de (-3.00) |"


def test_eval_sts_end_to_end(tiny_int8: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "d.csv", ROWS, encoding="utf-8-sig")
    out_json, out_md = tmp_path / "reports" / "s.json", tmp_path / "tables" / "s.md"  # folders created
    assert main(["eval-sts", str(tiny_int8), "--data", str(data), "--json", str(out_json),
                 "--markdown", str(out_md), "--threads", "1"]) == 0
    result = json.loads(out_json.read_text())
    scores = result["columns"]["ONNX int8 per-row"]  # the default export's activation scales, named
    assert set(scores) == {"en;en", "de;de", "en;de"} and all(s["n"] == 3 for s in scores.values())
    assert all(-1.0 <= s["spearman"] <= 1.0 for s in scores.values())
    summary = result["summary"]["ONNX int8 per-row"]
    # The card's average, computed here with numpy: tanh of the mean arctanh, |r| = 1 (3 pairs per
    # task make it likely) counted as 0.999999 so that the mean stays finite.
    rs = np.clip([s["spearman"] for s in scores.values()], -0.999999, 0.999999)
    expected = float(np.tanh(np.mean(np.arctanh(rs))))
    assert summary["avg_spearman"] == pytest.approx(expected, abs=1e-12)
    assert summary["avg_spearman_crosslingual"] == pytest.approx(scores["en;de"]["spearman"])
    manifest = json.loads((tiny_int8 / "manifest.json").read_text())
    assert result["models"]["ONNX int8 per-row"]["recipe"] == manifest["quantization"]["recipe"]["name"]
    assert result["models"]["ONNX int8 per-row"]["exporter"] == manifest["exporter"]
    assert "en;de" in out_md.read_text() and "en;de" in capsys.readouterr().out
