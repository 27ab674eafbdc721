"""The pinned sets each image installs (no engine needed): no torch where it must not be, one
version per package across every file, and the dev venv includes every image's set.
(Moved from tests/serving/test_container.py, which compared serving/requirements.txt with the
old requirements/train.txt; the Dockerfile-text checks there are replaced by real builds.)"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO_ROOT

FILES = {
    "torch": REPO_ROOT / "requirements" / "torch.txt",
    "pipeline": REPO_ROOT / "requirements" / "pipeline.txt",
    "mlflow": REPO_ROOT / "requirements" / "mlflow.txt",
    "monitor": REPO_ROOT / "requirements" / "monitor-image.txt",
    "serving": REPO_ROOT / "serving" / "requirements.txt",
    "ui": REPO_ROOT / "app" / "requirements.txt",
    "dev": REPO_ROOT / "requirements" / "dev.txt",
}
TEST_TOOLS = {"pytest", "selenium", "schemathesis", "ruff", "hypothesis", "honcho"}


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_serving_requirements_have_no_torch_and_match_the_other_pins():
    serving = pins(FILES["serving"])
    assert not {"torch", "torchvision", "safetensors"} & set(serving)
    for name in ("fastapi", "uvicorn", "onnxruntime", "numpy", "pillow", "prometheus-client"):
        assert name in serving, name


def test_every_package_has_one_version_across_the_sets():
    seen: dict[str, tuple[str, str]] = {}
    for label, path in FILES.items():
        for name, version in pins(path).items():
            first = seen.setdefault(name, (version, label))
            assert first[0] == version, f"{name}: {first[0]} in {first[1]}, {version} in {label}"


def test_no_image_set_holds_torch_or_test_tools_where_it_must_not():
    assert {"torch", "torchvision"} <= set(pins(FILES["torch"]))
    for label in ("serving", "ui", "mlflow", "monitor"):
        assert not {"torch", "torchvision", "onnx"} & set(pins(FILES[label])), label
    for label in ("torch", "pipeline", "serving", "ui", "mlflow", "monitor"):
        assert not TEST_TOOLS & set(pins(FILES[label])), label


def test_the_dev_venv_includes_every_image_set():
    includes = re.findall(r"^-r\s+(\S+)", FILES["dev"].read_text(), re.M)
    resolved = {(FILES["dev"].parent / inc).resolve() for inc in includes}
    for label in ("torch", "pipeline", "serving", "ui"):
        assert FILES[label].resolve() in resolved, label
