"""The stage boundary: every pipelines/*.py script runs its main through `run_cli`.

A failure prints one readable line, `<stage>: error: ...`, and exits 1 so that DVC stops the
pipeline there; SKINDX_TRACEBACK=1 prints the traceback too. Torch-free, so the data and
promote stages stay light.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable


def describe(exc: BaseException) -> str:
    """The message a user needs; a bare KeyError names the missing setting."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        key = exc.args[0]  # str(KeyError) quotes its argument
        return key if " " in key else f"missing setting {key!r} (check params.yaml)"
    return str(exc) or type(exc).__name__


def run_cli(main: Callable[[], object], stage: str, hint: str = "") -> None:
    try:
        main()
    except KeyboardInterrupt:
        print(f"\n{stage}: interrupted. {hint}".rstrip(), file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the stage boundary: report, don't crash
        if os.environ.get("SKINDX_TRACEBACK"):
            traceback.print_exc()
        print(
            f"\n{stage}: error: {describe(exc)}\n"
            "(set SKINDX_TRACEBACK=1 to see the full traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
