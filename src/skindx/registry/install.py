"""Install: put a verified package into serving/model/ in one atomic swap, or read what is there.

Readers (the API's hot reload, a container bind mount) see the old package or the new one,
never a mix; a package that fails verification never replaces anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from skindx.export.atomic import replace_directory, staging_dir
from skindx.inference.model import ModelIntegrityError, verify_package


def install_package(source: str | Path, serving_dir: str | Path) -> Path:
    """Copy a package into `serving_dir`, verified, replacing the old one in one rename."""
    staged = staging_dir(serving_dir)
    try:
        shutil.copytree(source, staged, dirs_exist_ok=True)
        verify_package(staged)
        return replace_directory(staged, serving_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def installed_card(serving_dir: str | Path) -> dict | None:
    """The card of an intact package in `serving_dir`, else None."""
    try:
        return verify_package(serving_dir)
    except ModelIntegrityError:
        return None


def serving_version(serving_dir: str | Path) -> str | None:
    """The version of an intact package in `serving_dir`, else None."""
    card = installed_card(serving_dir)
    return None if card is None else str(card["version"])
