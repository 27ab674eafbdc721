"""File-level helpers for images: content hashes and a cheap "does it decode" inspection."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from skindx.inference.hashing import sha256_bytes, sha256_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
__all__ = ["IMAGE_SUFFIXES", "ImageCheck", "inspect_image", "sha256_bytes", "sha256_file"]


@dataclass(frozen=True)
class ImageCheck:
    """What validation needs to know about one image file (None: could not be determined)."""

    exists: bool
    sha256: str | None = None
    decodes: bool | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None

    @property
    def min_side(self) -> int | None:
        return None if self.width is None or self.height is None else min(self.width, self.height)


def inspect_image(path: Path) -> ImageCheck:
    """Hash the file and decode it fully (a truncated JPEG fails here, unlike `verify()`).

    JPEGs are decoded in draft mode (DCT scaling): every scan is still read, so truncation
    and corruption are caught, at a fraction of the cost of a full-size decode.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ImageCheck(exists=False, error="file not found")
    except OSError as exc:
        return ImageCheck(exists=False, error=f"unreadable: {exc}")
    digest = sha256_bytes(data)
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            mode = im.mode
            if im.format == "JPEG":
                im.draft(mode, (max(1, width // 8), max(1, height // 8)))
            im.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        return ImageCheck(exists=True, sha256=digest, decodes=False, error=str(exc))
    return ImageCheck(
        exists=True, sha256=digest, decodes=True, mode=mode, width=width, height=height
    )
