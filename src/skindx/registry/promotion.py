"""`promote`: decide on a candidate package against the champion, act on it, log it.

The steps, in the order that keeps serving/model safe:
1. verify the candidate package and ask the champion store for its version (the MLflow store
   also checks that it is the package registered under that version);
2. `decide` (rule.py) against the store's champion;
3. on promotion, record the new champion first (move the alias), then install the package: if
   the alias cannot move, serving/model still holds the old champion; if the install fails,
   the next run finds the candidate "kept" and installs it;
4. otherwise make sure serving/model holds the champion (restore it if it went missing);
5. append the decision to the log and record it in the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skindx.inference.metrics import PRIMARY_METRIC
from skindx.inference.model import ModelIntegrityError, verify_package
from skindx.registry.decisions import append_decision, decision_record
from skindx.registry.errors import RegistryError
from skindx.registry.install import install_package, serving_version
from skindx.registry.rule import check_metric, decide, metric_value
from skindx.registry.stores import ChampionStore, champion_store


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
) -> dict[str, Any]:
    """Decide on the candidate package, act on it, log the decision; returns the record.

    `store` defaults to `champion_store(...)`: the MLflow registry, or serving/model itself
    when SKINDX_TRACKING=off."""
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
    champion = store.champion(metric)
    decision = decide(
        value,
        champion.value if champion else None,
        metric=metric,
        min_delta=min_delta,
        force=force,
        champion_version=champion.version if champion else None,
        candidate_version=version,
        alias=alias,
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
    )
    append_decision(log_path, record)
    store.record(version, record)
    return record
