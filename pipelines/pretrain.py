"""pretrain stage (optional, `pretrain.enabled`): SimCLR on the processed training images ->
paths.pretrain_dir/backbone.pt, which `model.weights` (pretrain=simclr) loads.

Off (the default, and in every profile) it only writes paths.pretrain_dir/pretrain.json =
{"enabled": false}, without importing torch: about a tenth of a second, the same bytes every
time, so that train, which depends on that folder, is never rerun because of it.
"""

from __future__ import annotations

import logging

from skindx.cli import run_cli
from skindx.config import ProjectPaths, stage_params

SECTIONS = ("pretrain", "mlflow", "paths")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = stage_params(*SECTIONS)
    paths = ProjectPaths.from_params(params)
    if not params["pretrain"].get("enabled"):
        from skindx.pretrain.outputs import write_disabled

        marker = write_disabled(paths.pretrain_dir)
        print(
            f"pretrain: off (pretrain.enabled=false); wrote only {marker}. Turn it on with "
            "`dvc exp run -S pretrain=simclr`."
        )
        return
    from skindx.pretrain.stage import run_pretrain

    result = run_pretrain(params, paths=paths)
    m = result.manifest
    print(
        f"pretrain: {m['method']} {m['arch']} on {m['n_images']} images of {'+'.join(m['splits'])}"
        f" at {m['image_size']} px, {m['epochs']} epochs: NT-Xent {result.history[0]['loss']:.4f}"
        f" -> {m['final_loss']:.4f}; {result.seconds:.0f} s; backbone {result.backbone_path}"
        f" (MLflow run {m['mlflow_run_id']})"
    )


if __name__ == "__main__":
    run_cli(main, "pretrain", hint="Rerun with: dvc repro pretrain")
