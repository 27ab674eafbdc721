"""python -m skindx.evaluation.spread: the spread of metrics over runs."""

from __future__ import annotations

import json
import statistics

import pytest

from skindx.evaluation.spread import main, spread


def test_spread_over_runs():
    runs = [{"balanced_accuracy": v, "macro_f1": None} for v in (0.553, 0.584, 0.571)]
    result = spread(runs)
    bma = result["balanced_accuracy"]
    assert bma["n"] == 3 and bma["min"] == 0.553 and bma["max"] == 0.584
    assert bma["mean"] == pytest.approx((0.553 + 0.584 + 0.571) / 3)
    assert bma["std"] == pytest.approx(statistics.stdev([0.553, 0.584, 0.571]))
    assert "macro_f1" not in result  # no finite value in any run


def test_cli_prints_and_writes_json(tmp_path, capsys):
    files = []
    for i, value in enumerate((0.5, 0.6)):
        path = tmp_path / f"seed-{i}" / "metrics.json"
        path.parent.mkdir()
        per_class = {"df": {"recall": value - 0.2}, "nv": {"recall": 0.8}}
        path.write_text(
            json.dumps({"balanced_accuracy": value, "accuracy": 0.7, "per_class": per_class})
        )
        files.append(str(path))
    assert main([*files, "--json", str(tmp_path / "spread.json")]) == 0
    out = capsys.readouterr().out
    assert "Balanced accuracy: mean 0.550, sd 0.071, range 0.500-0.600 over 2 runs" in out
    written = json.loads((tmp_path / "spread.json").read_text())
    assert written["runs"] == files and written["spread"]["accuracy"]["std"] == 0
    assert "Recall by class (mean): df 0.35, nv 0.80" in out
    assert written["per_class_recall"]["df"]["mean"] == pytest.approx(0.35)
    assert written["per_class_recall"]["nv"]["std"] == 0


def test_cli_says_what_is_wrong(tmp_path, capsys):
    assert main([str(tmp_path / "none.json"), str(tmp_path / "also.json")]) == 1
    assert "no such file" in capsys.readouterr().err
    one = tmp_path / "m.json"
    one.write_text("{}")
    assert main([str(one)]) == 1
    assert "at least two runs" in capsys.readouterr().err


def test_the_rows_of_an_ablation_file_and_their_tta_sections(tmp_path, capsys):
    def row(bma: float, tta: float) -> dict:
        section = {
            "balanced_accuracy": tta,
            "difference": {"delta": tta - bma},
            "per_class_recall": {"df": tta - 0.1},
        }
        return {"overrides": [], "metrics": {"balanced_accuracy": bma, "tta": section}}

    rows = {"base": ["experiment=demo"], "baseline": row(0.59, 0.61), "seed_1": row(0.57, 0.60)}
    (tmp_path / "ablation.json").write_text(json.dumps(rows))
    assert main([str(tmp_path / "ablation.json"), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "Balanced accuracy: mean 0.580" in out
    assert "8-view TTA Balanced accuracy: mean 0.605" in out
    assert "TTA gain in balanced accuracy: mean +0.025" in out
    written = json.loads((tmp_path / "s.json").read_text())
    assert written["runs"] == [f"{tmp_path / 'ablation.json'}:{n}" for n in ("baseline", "seed_1")]
    assert written["tta"]["delta"]["n"] == 2
    assert written["tta"]["per_class_recall"]["df"]["mean"] == pytest.approx(0.505)
    # a run without a tta section: no tta spread at all, rather than one over some runs
    rows["seed_1"]["metrics"].pop("tta")
    (tmp_path / "ablation.json").write_text(json.dumps(rows))
    assert main([str(tmp_path / "ablation.json")]) == 0
    assert "TTA" not in capsys.readouterr().out
