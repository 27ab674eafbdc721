"""The model registry side of SkinDX, one module per job:

- `rule`: the promotion gate, a pure `decide` (candidate vs champion metric -> decision);
- `registration`: log a package into MLflow and register a version (`register_package`);
- `install`: atomic install of a verified package into serving/model/;
- `stores`: where the champion lives, the MLflow registry alias or (SKINDX_TRACKING=off)
  serving/model itself, behind one `ChampionStore` interface;
- `decisions`: the reports/promotions.jsonl decision log;
- `promotion`: `promote`, which ties them together for the promote stage.
"""

from skindx.inference.metrics import HIGHER_IS_BETTER, flat_metrics
from skindx.registry.decisions import append_decision, decision_record
from skindx.registry.errors import RegistryError
from skindx.registry.install import install_package, installed_card, serving_version
from skindx.registry.promotion import promote
from skindx.registry.registration import (
    METRIC_TAG_PREFIX,
    PACKAGE_ARTIFACTS_TAG,
    Registration,
    model_signature,
    register_package,
    restore_version,
    serving_requirements,
)
from skindx.registry.rule import Decision, check_metric, decide, metric_value
from skindx.registry.stores import (
    Champion,
    ChampionStore,
    LocalChampionStore,
    MlflowChampionStore,
    champion_store,
    check_registered_package,
    registry_champion,
    serving_champion,
)

__all__ = [
    "HIGHER_IS_BETTER",
    "METRIC_TAG_PREFIX",
    "PACKAGE_ARTIFACTS_TAG",
    "Champion",
    "ChampionStore",
    "Decision",
    "LocalChampionStore",
    "MlflowChampionStore",
    "Registration",
    "RegistryError",
    "append_decision",
    "champion_store",
    "check_metric",
    "check_registered_package",
    "decide",
    "decision_record",
    "flat_metrics",
    "install_package",
    "installed_card",
    "metric_value",
    "model_signature",
    "promote",
    "register_package",
    "registry_champion",
    "restore_version",
    "serving_champion",
    "serving_requirements",
    "serving_version",
]
