"""The stage's folder (`paths.pretrain_dir`), torch-free: clearing it and the "off" marker."""

from __future__ import annotations

from pathlib import Path

from skindx.models.weights import (
    BACKBONE_FILE,
    DISABLED_MANIFEST,
    HISTORY_FILE,
    MANIFEST_FILE,
    write_manifest,
)


def clear_outputs(out_dir: str | Path) -> None:
    """Remove what an earlier run left (DVC does this before a stage runs; a run outside DVC
    must not leave a backbone beside a manifest that no longer names it)."""
    for name in (MANIFEST_FILE, BACKBONE_FILE, HISTORY_FILE):
        (Path(out_dir) / name).unlink(missing_ok=True)


def write_disabled(out_dir: str | Path) -> Path:
    """pretrain.enabled=false: only `pretrain.json` = {"enabled": false}, the same bytes every
    time, so train (which depends on the folder) is not rerun by a disabled pretrain stage."""
    clear_outputs(out_dir)
    return write_manifest(out_dir, dict(DISABLED_MANIFEST))
