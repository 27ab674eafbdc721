"""Project paths and parameters.

Stage scripts read their section of the committed `params.yaml` (what DVC tracks); `conf/`
is the Hydra source that `params.yaml` is composed from (`make params`, `dvc exp run -S`).
Every file and folder the pipeline reads or writes is in its `paths` section
(conf/paths/default.yaml): dvc.yaml templates its stages from it, and each stage gets a
`ProjectPaths` instead of a path of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from skindx.inference.metrics import flatten

__all__ = [
    "ProjectPaths",
    "compose_config",
    "flatten",  # defined once in skindx.inference.metrics
    "load_params",
    "stage_params",
    "write_params",
]

PARAMS_FILE = "params.yaml"
CONF_DIR = "conf"


@dataclass(frozen=True)
class ProjectPaths:
    """The `paths` section of params.yaml, as Paths relative to the project root (DVC runs
    every stage there). File names inside these folders are the contracts of docs/contracts.md."""

    raw_dir: Path
    downloads_dir: Path
    validation_summary: Path
    validation_docs: Path
    processed_dir: Path
    preprocess_reports: Path
    pretrain_dir: Path
    train_dir: Path
    history_csv: Path
    metrics: Path
    temperature: Path
    plots_dir: Path
    candidate_dir: Path
    serving_model_dir: Path
    promotions_log: Path
    external_report: Path
    external_predictions: Path
    mlflow_db: Path

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ProjectPaths:
        """From all of params.yaml, a stage's params (stage_params adds `paths`), or the
        `paths` section itself."""
        section = params.get("paths", params)
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if not section.get(name)]
        if missing:
            raise KeyError(
                f"params.yaml has no paths.{', paths.'.join(missing)}: run `make params` to "
                "recompose it from conf/ (conf/paths/default.yaml)"
            )
        return cls(**{name: Path(section[name]) for name in names})

    def to_dict(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: run the stages from the project root, or `make params` to "
            "compose it from conf/."
        )
    with path.open() as fh:
        return yaml.safe_load(fh) or {}


def stage_params(*sections: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The named sections of params.yaml (plus `seed`, `profile` and, when present, `paths`),
    as plain dicts."""
    params = load_params(path)
    missing = [s for s in sections if s not in params]
    if missing:
        raise KeyError(f"params.yaml has no section(s) {missing}; run `make params`.")
    picked = {s: params[s] for s in sections}
    for key in ("seed", "profile"):
        picked.setdefault(key, params.get(key))
    if "paths" in params:
        picked.setdefault("paths", params["paths"])
    return picked


def compose_config(
    overrides: Iterable[str] = (), conf_dir: str | Path = CONF_DIR
) -> dict[str, Any]:
    """Compose conf/config.yaml with Hydra, as DVC does for `dvc exp run -S ...`."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf_dir = Path(conf_dir).resolve()
    with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def write_params(params: dict[str, Any], path: str | Path = PARAMS_FILE) -> None:
    header = (
        "# Generated from conf/ by `make params` (Hydra composition); do not edit by hand.\n"
        "# `dvc exp run -S key=value` recomposes it. Each stage reads its own section.\n"
    )
    Path(path).write_text(header + yaml.safe_dump(params, sort_keys=False))


def main() -> None:  # `python -m skindx.config [overrides...]` rewrites params.yaml
    import sys

    write_params(compose_config(sys.argv[1:]))
    print(f"wrote {PARAMS_FILE} from {CONF_DIR}/config.yaml {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
