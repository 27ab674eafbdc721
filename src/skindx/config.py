"""Project paths and parameters.

Stage scripts read their section of the committed `params.yaml` (what DVC tracks); `conf/`
is the Hydra source that `params.yaml` is composed from (`make params`, `dvc exp run -S`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"
CONF_DIR = "conf"


def project_root() -> Path:
    """The project root: DVC runs every stage from the directory holding dvc.yaml."""
    return Path.cwd()


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
    """The named sections of params.yaml (plus `seed` and `profile`), as plain dicts."""
    params = load_params(path)
    missing = [s for s in sections if s not in params]
    if missing:
        raise KeyError(f"params.yaml has no section(s) {missing}; run `make params`.")
    picked = {s: params[s] for s in sections}
    for key in ("seed", "profile"):
        picked.setdefault(key, params.get(key))
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


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def main() -> None:  # `python -m skindx.config [overrides...]` rewrites params.yaml
    import sys

    write_params(compose_config(sys.argv[1:]))
    print(f"wrote {PARAMS_FILE} from {CONF_DIR}/config.yaml {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
