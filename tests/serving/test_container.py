"""What the serving image holds: only the torch-free files, pinned like the training set."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "serving" / "Dockerfile"


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_serving_requirements_have_no_torch_and_match_the_training_pins():
    serving = pins(REPO_ROOT / "serving" / "requirements.txt")
    training = pins(REPO_ROOT / "requirements" / "train.txt")
    assert not {"torch", "torchvision", "safetensors"} & set(serving)
    for name in ("fastapi", "uvicorn", "onnxruntime", "numpy", "pillow", "prometheus-client"):
        assert name in serving, name
    assert {n: v for n, v in serving.items() if training.get(n) != v} == {}


def test_the_image_file_set_serves_without_torch(tmp_path: Path):
    """Assemble the files the Dockerfile copies; the app imports from them alone, torch blocked."""
    copies = re.findall(r"^COPY (?:--chown=\S+ )?(\S+) (\S+)$", DOCKERFILE.read_text(), re.M)
    assert ("src/skindx/inference/", "skindx/inference/") in copies
    for source, dest in copies:
        if (REPO_ROOT / source).is_dir():
            shutil.copytree(
                REPO_ROOT / source,
                tmp_path / dest,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", "model"),
            )
        else:
            (tmp_path / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / source, tmp_path / dest)
    probe = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "import serving.app, skindx.inference.model, skindx.inference.images\n"
        "assert serving.app.__file__.startswith(sys.argv[1]), serving.app.__file__\n"
        "assert skindx.inference.model.__file__.startswith(sys.argv[1])\n"
        "print('ok', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, sys.argv[1]); exec({probe!r})",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok ['torch']", result.stdout  # only our blocker entry


def test_dockerfile_runs_unprivileged_with_a_readiness_healthcheck():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.\d+-slim$", text, re.M)
    assert re.search(r"^USER skindx$", text, re.M)
    assert "HEALTHCHECK" in text and "/ready" in text
    assert "pip install -r serving/requirements.txt" in text
    assert "verify_package" in text  # the baked-in model is checked at build time
    assert re.search(r'^CMD \["python", "-m", "serving"\]$', text, re.M)
