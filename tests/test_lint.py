"""`make lint` as a test, so that CI holds the code to ruff too."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO_ROOT, VENV_BIN

pytestmark = pytest.mark.slow  # ruff over the whole tree: `make lint` is the quick way

PATHS = [
    "src",
    "pipelines",
    "serving",
    "app",
    "bench",
    "tests",
    "scripts",
    "deploy",
    "docs/hooks",
    "notebooks",
]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command):
    result = subprocess.run(
        [str(VENV_BIN / "ruff"), *command, *PATHS],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
