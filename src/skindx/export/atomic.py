"""Replace a directory with a fully written one so that readers see the old or the new
version, never a mix (used for models/candidate/ and serving/model/)."""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path

_RENAME_EXCHANGE = 2  # linux/fs.h


def staging_dir(dest: str | Path) -> Path:
    """A fresh temporary directory beside `dest` (same filesystem, so renames are atomic)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    staged.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users and images
    return staged


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def replace_directory(staged: str | Path, dest: str | Path) -> Path:
    """Move the complete directory `staged` to `dest`, replacing whatever was there."""
    staged, dest = Path(staged), Path(dest)
    if not dest.exists() and not dest.is_symlink():
        os.rename(staged, dest)
        return dest
    if dest.is_dir() and not dest.is_symlink() and _exchange(staged, dest):
        shutil.rmtree(staged)  # now holds the old version
        return dest
    # Fallback: two renames; the old version is kept until the new one is in place.
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.rename(dest, old / dest.name)
    try:
        os.rename(staged, dest)
    except OSError:
        os.rename(old / dest.name, dest)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return dest
