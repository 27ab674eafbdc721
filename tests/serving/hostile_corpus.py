"""Uploads a public API must survive, generated from a sample image (real or synthetic), and
the synthetic lesion photos that stand in for the real data in the fast tests."""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Upload:
    name: str
    filename: str
    content_type: str  # what the client claims; the server must not trust it
    data: bytes
    status: int
    code: str | None = None  # expected error code (None: accepted)
    message: str | None = None  # a fragment the error detail must contain


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header declares width x height but holds almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + png_chunk(b"IEND", b"")
    )


def png_rgb16(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one), from uint16 (H, W, 3)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def exif_rotated_jpeg(upright: Image.Image) -> bytes:
    """The upright image stored turned 90 degrees, with EXIF orientation 6 ("rotate 90 CW to
    view"): a viewer that honours EXIF shows `upright` again."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=100, subsampling=0, exif=exif.tobytes())


def hostile_corpus(sample_jpeg: bytes, max_upload_bytes: int = 10 * 1024 * 1024) -> list[Upload]:
    photo = Image.open(io.BytesIO(sample_jpeg)).convert("RGB")
    small = photo.resize((120, 90))
    gray16 = (np.asarray(small.convert("L"), np.uint16) * 257).astype(np.uint16)
    rgba = small.convert("RGBA")
    rgba.putalpha(200)
    noise = os.urandom(12 * 1024 * 1024)
    assert len(noise) > max_upload_bytes
    svg = (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        b'<rect width="64" height="64" fill="red"/></svg>'
    )
    html = b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"
    return [
        Upload(
            "truncated_jpeg",
            "lesion.jpg",
            "image/jpeg",
            sample_jpeg[: len(sample_jpeg) // 2],
            422,
            "corrupt_image",
            "truncated or corrupt",
        ),
        Upload("zero_bytes", "empty.jpg", "image/jpeg", b"", 422, "empty_file", "empty"),
        Upload(
            "text_named_jpg",
            "notes.jpg",
            "image/jpeg",
            b"just some notes, not a photo\n" * 20,
            415,
            "unsupported_media_type",
            "looks like text",
        ),
        Upload("noise_12mb", "noise.jpg", "image/jpeg", noise, 413, "request_too_large", "10 MB"),
        Upload(
            "png_30000x30000",
            "bomb.png",
            "image/png",
            png_declaring(30000, 30000),
            413,
            "image_too_large",
            "pixels",
        ),
        Upload(
            "png_tiny_16px",
            "tiny.png",
            "image/png",
            encode(photo.resize((16, 12)), "PNG"),
            422,
            "image_too_small",
            "at least 32 px",
        ),
        Upload(
            "gif",
            "lesion.gif",
            "image/gif",
            encode(small, "GIF"),
            415,
            "unsupported_media_type",
            "GIF",
        ),
        Upload("svg", "lesion.svg", "image/svg+xml", svg, 415, "unsupported_media_type", "SVG"),
        Upload("html", "lesion.jpg", "image/jpeg", html, 415, "unsupported_media_type", "HTML"),
        Upload("cmyk_jpeg", "cmyk.jpg", "image/jpeg", encode(small.convert("CMYK"), "JPEG"), 200),
        Upload(
            "png_16bit_gray", "gray16.png", "image/png", encode(Image.fromarray(gray16), "PNG"), 200
        ),
        Upload(
            "png_16bit_rgb",
            "rgb16.png",
            "image/png",
            png_rgb16(np.asarray(small, np.uint16) * 257),
            200,
        ),
        Upload("rgba_png", "rgba.png", "image/png", encode(rgba, "PNG"), 200),
        Upload("grayscale_jpeg", "gray.jpg", "image/jpeg", encode(small.convert("L"), "JPEG"), 200),
        Upload("palette_png", "palette.png", "image/png", encode(small.convert("P"), "PNG"), 200),
        Upload("webp", "lesion.webp", "image/webp", encode(small, "WEBP"), 200),
        Upload("jpeg_named_png", "lesion.png", "text/plain", encode(small, "JPEG"), 200),
        Upload("exif_rotated_jpeg", "rotated.jpg", "image/jpeg", exif_rotated_jpeg(small), 200),
    ]


def synthetic_lesion(seed: int = 0, size: tuple[int, int] = (600, 450)) -> Image.Image:
    """A made-up dermatoscopy-like photo (skin-toned background, a dark off-centre lesion, a
    left-to-right light gradient, noise), at the originals' 600x450: the upload tests need an
    image, not the real data. Lopsided on purpose, so that a rotation changes what a model sees."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    skin = np.array([214, 164, 138], np.float32) * (0.75 + 0.35 * x / width)[..., None]
    cx, cy = width * (0.38 + 0.1 * rng.random()), height * (0.42 + 0.1 * rng.random())
    radius = np.hypot((x - cx) / (0.22 * width), (y - cy) / (0.3 * height))
    lesion = np.clip(1.3 - radius, 0, 1)[..., None]
    brown = np.array([92, 52, 38], np.float32)
    pixels = skin * (1 - lesion) + brown * lesion + rng.normal(0, 9, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def synthetic_jpeg(seed: int = 0, size: tuple[int, int] = (600, 450)) -> bytes:
    return encode(synthetic_lesion(seed, size), "JPEG", quality=92)
