"""SRCC / KRCC / PLCC (perceptlite.datasets.metrics) and the evaluation command on the reference scorer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perceptlite.datasets import metrics
from perceptlite.datasets.evaluation import VrFileError, format_table, load_vr


def test_rank_correlations_by_hand() -> None:
    assert metrics.srcc([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert metrics.krcc([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # One swapped pair out of 6: tau = (5 - 1) / 6; Spearman with d = (0, 1, -1, 0): 1 - 6 * 2 / (4 * 15) = 0.8
    assert metrics.krcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert metrics.srcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert metrics.rankdata([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_metrics_match_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=300), 1)
    y = np.round(2 * x + rng.normal(size=300))
    assert metrics.srcc(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert metrics.krcc(x, y, chunk=64) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)
    assert metrics.plcc(x, y, fit=False) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)


def test_plcc_logistic_fit_undoes_a_monotonic_nonlinearity() -> None:
    pytest.importorskip("scipy")
    x = np.linspace(-4, 4, 60)
    y = metrics.logistic4(x, 5.0, 1.0, 0.5, 0.8)  # a 1-5 MOS scale, saturating at both ends
    assert metrics.plcc(x, y, fit=False) < 0.97
    result = metrics.agreement(x, y)
    assert result.logistic_fit and result.plcc == pytest.approx(1.0, abs=1e-6)
    assert result.srcc == pytest.approx(1.0) and result.krcc == pytest.approx(1.0)


def test_vr_file_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"image": 1}')
    with pytest.raises(VrFileError, match="bad.json: not a JSON list"):
        load_vr(tmp_path / "bad.json")
    with pytest.raises(VrFileError, match="missing.json: cannot read it"):
        load_vr(tmp_path / "missing.json")


@pytest.mark.factory  # the torch reference scorer
def test_reference_evaluation_on_a_generated_vr_file(unipercept_sensitive_checkpoint: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    from export.unipercept import evaluate

    images = unipercept_sensitive_checkpoint / "training_images"
    records = json.loads((images / "iaa.json").read_text())
    # A dataset on a 1-10 scale (as AVA) with one image that does not exist: it is counted, not fatal.
    vr = [{"image": r["image"], "gt_score": 1 + 9 * r["gt_score"] / 100} for r in records]
    vr.append({"image": "not-there.png", "gt_score": 5.0})
    (tmp_path / "tiny_ava.json").write_text(json.dumps(vr))
    status = evaluate.main(
        [
            "--reference",
            str(unipercept_sensitive_checkpoint),
            str(tmp_path / "tiny_ava.json"),
            "--images",
            str(images),
            "--axis",
            "iaa",
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert status == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["dataset"] == "tiny_ava" and rows[0]["axis"] == "iaa"
    assert rows[0]["count"] == len(records) and rows[0]["failed"] == 1
    assert rows[0]["srcc"] > 0.8 and rows[0]["plcc"] > 0.8  # the checkpoint was trained toward these targets
    table = format_table([metrics_row(rows[0])])
    assert "SRCC" in table and "tiny_ava" in table


def metrics_row(row: dict):
    from perceptlite.datasets.evaluation import EvalRow

    return EvalRow(
        row["dataset"],
        row["axis"],
        row["failed"],
        metrics.Agreement(row["count"], row["srcc"], row["krcc"], row["plcc"], row["logistic_fit"]),
    )
