"""The recipe ablation driver (skindx.training.ablation) on the quick profile: the real data
stages once, then train + evaluate per row with that row's overrides, rows written as JSON and
merged into one table across result files (how docs/results.md's table is made from two drivers
run side by side)."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from skindx.training.ablation import main, merge_results, table


@pytest.mark.slow
def test_rows_train_with_their_overrides_and_tables_merge(
    small_source, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("SKINDX_DATA_DIR", str(small_source))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    base = ["experiment=quick", "train.max_steps_per_epoch=2"]
    main(["--dir", str(tmp_path / "a"), "--base", *base, "--variants", "baseline"])
    main(
        [
            "--dir", str(tmp_path / "b"), "--base", *base, "--variants",
            "--row", "ema_fast", "train.ema.enabled=true", "train.ema.decay=0.9",
        ]
    )  # fmt: skip
    capsys.readouterr()

    a = json.loads((tmp_path / "a/ablation.json").read_text())
    b = json.loads((tmp_path / "b/ablation.json").read_text())
    assert a["base"] == b["base"] == base
    assert a["baseline"]["overrides"] == [] and a["baseline"]["threads"] == "1"
    assert b["ema_fast"]["overrides"] == ["train.ema.enabled=true", "train.ema.decay=0.9"]
    # the row really trained with its overrides: the params it left behind, and the EMA
    # validated beside the weights (the checkpoint records which of the two won)
    params = yaml.safe_load((tmp_path / "b/params.yaml").read_text())
    assert params["train"]["ema"] == {**params["train"]["ema"], "enabled": True, "decay": 0.9}
    from skindx.models.checkpoint import load_model_from_checkpoint

    _, best = load_model_from_checkpoint(tmp_path / "b/models/train/best.pt")
    assert best["weights"] in ("model", "ema")
    for rows in (a, b):
        for name, row in rows.items():
            if name != "base":
                assert 0.0 <= row["metrics"]["balanced_accuracy"] <= 1.0
                assert row["metrics"]["balanced_accuracy_ci_low"] is not None
                # the row's own epochs, kept before the next row overwrites history.csv
                epochs = [int(r["epoch"]) for r in row["history"]]
                assert epochs == list(range(1, params["train"]["epochs"] + 1))
                assert all(r["seconds"] > 0 for r in row["history"])
    assert (tmp_path / "a/data/processed").is_dir()  # the data stages ran once per directory

    main(["--table", str(tmp_path / "a/ablation.json"), str(tmp_path / "b/ablation.json")])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| variant |") and len(table) == 4
    baseline = a["baseline"]["metrics"]["balanced_accuracy"]
    ema = b["ema_fast"]["metrics"]["balanced_accuracy"]
    assert f"| ema_fast | train.ema.enabled=true train.ema.decay=0.9 | {ema:.3f} |" in table[3]
    assert f"| {ema - baseline:+.3f} |" in table[3]  # the delta to the other file's baseline


def test_a_row_may_not_reuse_a_variant_name(tmp_path):
    with pytest.raises(SystemExit):
        main(["--dir", str(tmp_path), "--row", "baseline", "train.epochs=2"])
    assert not os.listdir(tmp_path)  # refused before anything ran


def _row(bma: float, overrides: list[str]) -> dict:
    metrics = {"balanced_accuracy": bma, "balanced_accuracy_ci_low": bma - 0.05}
    metrics |= {"balanced_accuracy_ci_high": bma + 0.05, "macro_f1": 0.4}
    return {"overrides": overrides, "metrics": metrics, "seconds": 10.0}


def test_a_file_with_its_own_base_shows_the_extra_overrides_in_its_rows(tmp_path):
    """The colour-constancy row needs its own data stages, so it runs from a second directory
    whose base adds data.color_constancy: the merged table must still name that change."""
    base = ["experiment=demo"]
    (tmp_path / "a.json").write_text(
        json.dumps(
            {
                "base": base,
                "baseline": _row(0.50, []),
                "ema": _row(0.55, ["train.ema.enabled=true"]),
            }
        )
    )
    (tmp_path / "c.json").write_text(
        json.dumps({"base": [*base, "data.color_constancy=shades_of_gray"], "sog": _row(0.52, [])})
    )
    rows = merge_results([tmp_path / "a.json", tmp_path / "c.json"])
    assert list(rows) == ["baseline", "ema", "sog"]
    assert rows["sog"]["overrides"] == ["data.color_constancy=shades_of_gray"]
    lines = table(rows).splitlines()
    assert lines[-1].startswith(
        "| sog | data.color_constancy=shades_of_gray | 0.520 | 0.470–0.570 | +0.020 |"
    )
    (tmp_path / "again.json").write_text(json.dumps({"base": base, "ema": _row(0.6, [])}))
    with pytest.raises(SystemExit, match="already in an earlier file"):
        merge_results([tmp_path / "a.json", tmp_path / "again.json"])
