"""Build-time check of the model baked into the API image (serving/Dockerfile).

A missing or unverifiable model stops the build with one readable line that says what to run,
instead of a traceback from deep inside the loader."""

from __future__ import annotations

import sys
from pathlib import Path

HINT = (
    "promote a model first: `make repro` (trains the demo model), or `make up`, which runs the "
    "pipeline when no promoted model exists; then build again"
)


def main(model_dir: str) -> int:
    path = Path(model_dir)
    if not (path / "model.json").is_file():
        print(f"no promoted model in {model_dir}/ (model.json missing): {HINT}", file=sys.stderr)
        return 1
    from skindx.inference.model import ModelIntegrityError, verify_package

    try:
        card = verify_package(path)
    except ModelIntegrityError as exc:  # names every missing or altered file
        print(f"the model in {model_dir}/ does not verify: {exc}\n{HINT}", file=sys.stderr)
        return 1
    print(f"model {card['version']} verified ({card.get('card_sha256', 'no card digest')})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "serving/model"))
