"""Decode untrusted image uploads into RGB PIL images, or refuse them with a typed error.

The type is sniffed from the magic bytes (a client's content type or file name proves
nothing); only JPEG, PNG and WebP reach a decoder. The pixel count is checked from the header
before any pixel is decoded, so a decompression bomb costs nothing. numpy + PIL only.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from skindx.inference.preprocessing import PreprocessingContract, apply_draft

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIDE = 32
_ACCEPTED_TEXT = "JPEG, PNG or WebP"

# (prefix, offset, name) for formats we recognise but refuse, so the message can name them.
_REFUSED_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"%PDF", 0, "PDF"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"8BPS", 0, "PSD"),
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", 0, "JPEG XL"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"ftypavif", 4, "AVIF"),
    (b"PK\x03\x04", 0, "ZIP archive"),
    (b"\x1f\x8b", 0, "gzip archive"),
)


class ImageDecodeError(ValueError):
    """An upload that cannot be served; carries the HTTP status, a stable code and a message."""

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    source_format: str  # JPEG | PNG | WEBP
    source_mode: str  # the PIL mode before conversion, e.g. CMYK, I;16, RGBA
    source_size: tuple[int, int]  # (width, height) as stored, before orientation
    drafted: bool = (
        False  # decoded reduced, as the contract's jpeg_draft asks (image.size says how)
    )


def sniff_format(data: bytes) -> str | None:
    """The accepted format the bytes start with (JPEG, PNG, WEBP), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def describe_unsupported(data: bytes) -> str:
    """A short human name for bytes that are not an accepted image."""
    for signature, offset, name in _REFUSED_SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return name
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<"):
        if b"<svg" in head:
            return "SVG"
        if b"<html" in head or b"<!doctype html" in head:
            return "HTML"
        return "XML/markup text"
    try:
        data[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "text"


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    contract: PreprocessingContract | None = None,
) -> DecodedImage:
    """Bytes of an upload -> RGB image, or ImageDecodeError (415, 413 or 422). With `contract`,
    a JPEG is decoded as the contract defines (its `jpeg_draft`: reduced in the DCT domain);
    without, always at full size (for views shown to people). The limits apply to the size as
    stored either way."""
    if not data:
        raise ImageDecodeError(422, "empty_file", "the uploaded file is empty (0 bytes)")
    sniffed = sniff_format(data)
    if sniffed is None:
        kind = describe_unsupported(data)
        raise ImageDecodeError(
            415,
            "unsupported_media_type",
            f"unsupported file type: the content looks like {kind}, not an image this API "
            f"accepts; send {_ACCEPTED_TEXT} (the type is read from the file's bytes, not its "
            "name or content type)",
        )

    image = _open_header(data, sniffed, max_pixels)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            413,
            "image_too_large",
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} pixels",
        )
    if min(width, height) < min_side:
        raise ImageDecodeError(
            422,
            "image_too_small",
            f"image is {width}x{height}; both sides must be at least {min_side} px",
        )

    source_mode = image.mode
    try:
        drafted = contract is not None and apply_draft(image, contract)
        image.load()
        rgb = to_rgb(apply_exif_orientation(image))
    except ImageDecodeError:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, struct.error, ...)
        raise ImageDecodeError(
            422,
            "corrupt_image",
            f"the {sniffed} file is truncated or corrupt and cannot be decoded ({_reason(exc)})",
        ) from exc
    return DecodedImage(rgb, sniffed, source_mode, (width, height), drafted)


def full_view(
    decoded: DecodedImage, data: bytes, view_side: int | None = None, **limits: int
) -> Image.Image:
    """The upload for a view shown to people (a Grad-CAM overlay's background): `decoded`'s
    own image, unless the contract's draft decode reduced it (below `view_side` when given),
    then the bytes decoded again in full. `limits`: decode_image's max_pixels / min_side."""
    if not decoded.drafted or (view_side is not None and min(decoded.image.size) >= view_side):
        return decoded.image
    return decode_image(data, **limits).image


def _open_header(data: bytes, sniffed: str, max_pixels: int) -> Image.Image:
    """Image.open reads only the header; restrict it to the sniffed format."""
    try:
        with warnings.catch_warnings():
            # we check the pixel count ourselves, against our own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=[sniffed])
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            413,
            "image_too_large",
            f"image declares more pixels than the limit of {max_pixels:,} ({_reason(exc)})",
        ) from exc
    except Exception as exc:
        raise ImageDecodeError(
            422,
            "corrupt_image",
            f"the {sniffed} file is truncated or corrupt: its header cannot be read ({_reason(exc)})",
        ) from exc


def apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Turn the image as its EXIF Orientation tag says, in place. (The default copies the image
    even when nothing turns: a second full-size buffer per upload, on fresh memory pages.)"""
    ImageOps.exif_transpose(image, in_place=True)
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: alpha composited on white, 16/32-bit integers scaled (not clipped),
    CMYK/palette/grayscale/YCbCr converted by PIL."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        return Image.fromarray(_scale_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))
        peak = float(values.max()) if values.size else 0.0
        scale = 255.0 if peak <= 1.0 else 255.0 / peak
        pixels = np.clip(values * scale, 0, 255).round().astype(np.uint8)
        return Image.fromarray(pixels, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit samples (or 32-bit ones holding 16-bit data) -> 8-bit, by 65535 -> 255."""
    if values.size and (values.min() < 0 or values.max() > 65535):
        low, high = int(values.min()), int(values.max())
        values = (values.astype(np.int64) - low) * 65535 // max(high - low, 1)
    # uint32 holds 65535 * 255 + 32767: half the memory of int64 on large uploads
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
