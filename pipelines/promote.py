"""promote stage: make the candidate the `champion` (alias + serving/model/) if it beats the
current one significantly (a paired bootstrap on the same test images, promote.confidence) and
by promote.min_delta, or with promote.force; log every decision with the difference, its
interval and the reason. A rejection is a normal outcome: the stage succeeds and says why."""

from __future__ import annotations

from skindx.cli import run_cli
from skindx.config import stage_params
from skindx.registry import promote


def main() -> None:
    params = stage_params("promote", "package", "mlflow")
    cfg = params["promote"]
    record = promote(
        params["package"]["out_dir"],
        registered_model=params["package"]["registered_model"],
        metric=cfg["metric"],
        min_delta=float(cfg["min_delta"]),
        force=bool(cfg["force"]),
        alias=cfg["alias"],
        serving_dir=cfg["serving_dir"],
        log_path=cfg["log"],
        mlflow_params=params["mlflow"],
        confidence=float(cfg.get("confidence", 0.95)),
        n_resamples=int(cfg.get("n_resamples", 2000)),
        seed=int(cfg.get("seed", 0)),
    )
    print(
        f"promote: {record['decision'].upper()} {record['model']} v{record['candidate']['version']}"
        f": {record['reason']} (logged to {cfg['log']})"
    )


if __name__ == "__main__":
    run_cli(main, "promote")
