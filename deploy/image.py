"""What `make api-image` and `make up` need to know about the promoted model, as shell lines.

    python3 deploy/image.py [serving/model]   ->  SKINDX_API_TAG=3 SKINDX_MODEL_VERSION=3 ...

The API image is tagged skindx/api:<registered model version> and labelled with the model
version, the card's sha256, the git commit it was built from and the MLflow run id. Standard
library only: it runs before any venv exists. Exit status 3 (and one line saying what to run)
when no promoted model is there.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MISSING = 3


def git_commit(root: Path = ROOT) -> str:
    """HEAD of the checkout the image is built from, `-dirty` when it has local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def docker_tag(version: str) -> str:
    """A Docker tag from a model version: [A-Za-z0-9_.-], at most 128, not starting with . or -."""
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", version).lstrip(".-")[:128]
    return tag or "unknown"


def image_values(model_dir: Path, root: Path = ROOT) -> dict[str, str]:
    card = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    version = str(card.get("version", "unknown"))
    lineage = card.get("lineage") or {}
    return {
        "SKINDX_API_TAG": docker_tag(version),
        "SKINDX_MODEL_VERSION": version,
        "SKINDX_CARD_SHA256": str(card.get("card_sha256") or "unknown"),
        "SKINDX_GIT_COMMIT": git_commit(root),
        "SKINDX_MLFLOW_RUN_ID": str(lineage.get("mlflow_run_id") or "unknown"),
    }


def main(argv: list[str]) -> int:
    model_dir = Path(argv[0]) if argv else ROOT / "serving" / "model"
    if not (model_dir / "model.json").is_file():
        print(
            f"no promoted model in {model_dir} (model.json missing): run `make repro` to train "
            "and promote one (`make up` does it for you)",
            file=sys.stderr,
        )
        return MISSING
    for name, value in image_values(model_dir).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
