"""`promote`: decide on a candidate package against the champion, act on it, log it.

The steps, in the order that keeps serving/model safe:
1. verify the candidate package and ask the champion store for its version (the MLflow store
   also checks that it is the package registered under that version);
2. compare: when both packages carry their test predictions (predictions.csv) on the same
   images, a paired, lesion-grouped bootstrap of the metric's difference; `decide` (rule.py)
   against the store's champion;
3. on promotion, record the new champion first (move the alias), then install the package: if
   the alias cannot move, serving/model still holds the old champion; if the install fails,
   the next run finds the candidate "kept" and installs it;
4. otherwise make sure serving/model holds the champion (restore it if it went missing);
5. append the decision to the log and record it in the store.
Steps 1 (the champion) to 5 run under the store's `decision_lock()` where it has one (the MLflow
registry: one decision at a time per registered model, for pipelines sharing a server).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from skindx.evaluation.bootstrap import CI_LOW, PairedDifference, paired_difference
from skindx.evaluation.predictions import PREDICTIONS_FILE, Predictions, read_predictions
from skindx.inference.metrics import PRIMARY_METRIC
from skindx.inference.model import ModelIntegrityError, verify_package
from skindx.registry.decisions import append_decision, decision_record
from skindx.registry.errors import RegistryError
from skindx.registry.install import install_package, serving_version
from skindx.registry.rule import check_metric, decide, metric_value
from skindx.registry.stores import Champion, ChampionStore, champion_store

# Metrics the paired test can recompute from predictions (skindx.evaluation.bootstrap).
PAIRED_METRICS = ("balanced_accuracy", "macro_f1", "melanoma_sensitivity")
GATE_DEFAULTS = {"confidence": 0.95, "n_resamples": 2000, "seed": 0}


def compare(
    candidate_dir: Path,
    champion: Champion | None,
    store: ChampionStore,
    serving_dir: str | Path,
    metric: str,
    gate: dict[str, Any],
) -> tuple[PairedDifference | None, str | None]:
    """The paired bootstrap of candidate - champion, or (None, why there is none)."""
    if champion is None:
        return None, None
    if metric not in PAIRED_METRICS:
        return None, f"promote.metric {metric} is not one of {', '.join(PAIRED_METRICS)}"
    path = Path(candidate_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None, f"the candidate package has no {PREDICTIONS_FILE}"
    try:
        mine = read_predictions(path)
    except ValueError as exc:
        return None, f"the candidate's predictions are unreadable ({exc})"
    theirs = store.champion_predictions(champion.version, serving_dir)
    if isinstance(theirs, str):
        return None, theirs
    aligned = mine.align(theirs)
    if isinstance(aligned, str):
        return None, f"the candidate's and champion v{champion.version}'s predictions: {aligned}"
    mine, theirs = aligned
    return _paired(mine, theirs, metric, {**GATE_DEFAULTS, **gate}), None


def _paired(mine: Predictions, theirs: Predictions, metric: str, gate) -> PairedDifference:
    return paired_difference(
        mine.labels,
        mine.predicted,
        theirs.predicted,
        mine.classes,
        groups=mine.lesion_ids,
        metric=metric,
        n_resamples=int(gate["n_resamples"]),
        confidence=float(gate["confidence"]),
        seed=int(gate["seed"]),
    )


def promote(
    candidate_dir: str | Path,
    *,
    registered_model: str,
    metric: str = PRIMARY_METRIC,
    min_delta: float = 0.005,
    force: bool = False,
    alias: str = "champion",
    serving_dir: str | Path = "serving/model",
    log_path: str | Path = "reports/promotions.jsonl",
    mlflow_params: dict[str, Any] | None = None,
    store: ChampionStore | None = None,
    confidence: float = GATE_DEFAULTS["confidence"],
    n_resamples: int = GATE_DEFAULTS["n_resamples"],
    seed: int = GATE_DEFAULTS["seed"],
) -> dict[str, Any]:
    """Decide on the candidate package, act on it, log the decision; returns the record.

    `store` defaults to `champion_store(...)`: the MLflow registry, or serving/model itself
    when SKINDX_TRACKING=off. `confidence`, `n_resamples`, `seed`: the paired bootstrap
    (promote.confidence, promote.n_resamples, promote.seed)."""
    check_metric(metric)
    try:
        card = verify_package(candidate_dir)
    except ModelIntegrityError as exc:
        raise RegistryError(f"the candidate package is not intact: {exc}") from exc
    value = metric_value(card.get("metrics"), metric)
    if value is None:
        raise RegistryError(f"the candidate card has no test metric {metric!r} (promote.metric)")
    if store is None:
        store = champion_store(
            registered_model, alias=alias, serving_dir=serving_dir, mlflow_params=mlflow_params
        )
    version = store.candidate_version(card, candidate_dir)
    # one decision at a time per registry (stores.py: decision_lock), the champion read inside
    lock = getattr(store, "decision_lock", None)
    with lock() if lock is not None else nullcontext():
        champion = store.champion(metric)
        paired, no_pairing = (None, None)
        if champion is not None and champion.version != version and champion.value is not None:
            paired, no_pairing = compare(
                Path(candidate_dir),
                champion,
                store,
                serving_dir,
                metric,
                {"confidence": confidence, "n_resamples": n_resamples, "seed": seed},
            )
        decision = decide(
            value,
            champion.value if champion else None,
            metric=metric,
            min_delta=min_delta,
            force=force,
            champion_version=champion.version if champion else None,
            candidate_version=version,
            alias=alias,
            paired=paired,
            no_pairing=no_pairing,
            candidate_ci_low=metric_value(card.get("metrics"), f"{metric}{CI_LOW}"),
        )

        reason = decision.reason
        if decision.promote:
            store.make_champion(version)
            install_package(candidate_dir, serving_dir)
        else:
            # serving/model must always hold the champion: rebuild it if it went missing or stale.
            holder = version if decision.action == "kept" else champion.version
            if serving_version(serving_dir) != holder:
                if decision.action == "kept":
                    install_package(candidate_dir, serving_dir)
                else:
                    store.restore(holder, serving_dir)
                reason += f"; {serving_dir} did not hold v{holder} and was restored"
            else:
                reason += f"; {serving_dir} left unchanged"
        reason += store.note

        record = decision_record(
            decision=decision,
            reason=reason,
            model=registered_model,
            alias=alias,
            metric=metric,
            min_delta=min_delta,
            force=force,
            candidate_version=version,
            candidate_run_id=(card.get("registry") or {}).get("run_id"),
            candidate_value=value,
            candidate_metrics=card["metrics"],
            champion=champion,
            serving_dir=serving_dir,
            serving_version=serving_version(serving_dir),
            registry=store.uri,
            comparison=decision.comparison,
        )
        append_decision(log_path, record)
        store.record(version, record)
        return record
