"""package stage: export best.pt (paths.train_dir) into paths.candidate_dir (ONNX + safetensors +
CAM head + model card), check torch/ONNX parity on real test images, register it in MLflow
(see skindx.export.stage)."""

from __future__ import annotations

from skindx.cli import run_cli
from skindx.config import stage_params
from skindx.export.stage import run_package
from skindx.registry import register_package


def main() -> None:
    params = stage_params("package", "mlflow", "paths")
    result = run_package(params)
    out_dir, card = result.out_dir, result.card
    parity = card["export"]["parity"]
    print(
        f"package: exported {card['architecture']['arch']} to {out_dir}/ (opset "
        f"{card['export']['opset']}); parity max |dp| = {parity['max_abs_diff']:.2e} on "
        f"{parity['n_images']} test images (tolerance {parity['tolerance']:g})"
    )
    q = result.quantization
    if q["enabled"]:
        print(
            f"package: int8 {'accepted' if q['served'] == 'int8' else 'refused'}: test BMA "
            f"{q['balanced_accuracy_fp32']:.4f} (fp32) -> {q['balanced_accuracy_int8']:.4f} "
            f"(int8, allowed drop {q['max_balanced_accuracy_drop']:g}); serving {q['served']}"
        )
    reg = register_package(
        out_dir,
        params["package"]["registered_model"],
        run_id=result.run_id,
        mlflow_params=params["mlflow"],
        run_tags=result.run_tags,
    )
    if reg is None:
        print("package: SKINDX_TRACKING=off, not registered in MLflow")
    else:
        print(f"package: registered {reg.model_uri} (MLflow run {reg.run_id})")


if __name__ == "__main__":
    run_cli(main, "package")
