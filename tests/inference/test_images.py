"""decode_image: type sniffing, limits and colour conversions, pixel by pixel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import ExifTags, Image

from skindx.inference.images import (
    ImageDecodeError,
    apply_exif_orientation,
    decode_image,
    sniff_format,
    to_rgb,
)
from tests.serving.hostile_corpus import encode, exif_rotated_jpeg, png_declaring, png_rgb16


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) % 256], -1)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def refused(data: bytes, **limits) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, **limits)
    return info.value


@pytest.mark.parametrize(("fmt", "expected"), [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WEBP")])
def test_accepted_formats_are_sniffed_from_bytes(fmt: str, expected: str):
    data = encode(gradient(), fmt)
    assert sniff_format(data) == expected
    decoded = decode_image(data)
    assert (decoded.source_format, decoded.image.mode, decoded.image.size) == (
        expected,
        "RGB",
        (64, 48),
    )


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (encode(gradient(), "GIF"), "GIF"),
        (encode(gradient(), "BMP"), "BMP"),
        (encode(gradient(), "TIFF"), "TIFF"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"\n<!doctype html><html></html>", "HTML"),
        (b"%PDF-1.7\n", "PDF"),
        (b"hello, world\n", "text"),
        (bytes(range(256)) * 4, "unrecognised binary data"),
    ],
)
def test_other_types_are_415_and_named(data: bytes, named: str):
    error = refused(data)
    assert (error.status_code, error.code) == (415, "unsupported_media_type")
    assert f"looks like {named}" in error.detail and "JPEG, PNG or WebP" in error.detail


def test_empty_truncated_and_corrupt():
    assert (refused(b"").status_code, refused(b"").code) == (422, "empty_file")
    jpeg = encode(gradient(400, 300), "JPEG")
    truncated = refused(jpeg[: len(jpeg) // 2])
    assert (truncated.status_code, truncated.code) == (422, "corrupt_image")
    assert "truncated" in truncated.detail
    header_only = refused(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert (header_only.status_code, header_only.code) == (422, "corrupt_image")


def test_pixel_limits_are_checked_before_decoding():
    bomb = refused(png_declaring(30000, 30000))
    assert (bomb.status_code, bomb.code) == (413, "image_too_large")
    # under PIL's own bomb limit, ours still applies: 8000x6000 declared, ~1 KB of data
    big = refused(png_declaring(8000, 6000), max_pixels=10_000_000)
    assert big.status_code == 413 and "8000x6000 = 48,000,000 pixels" in big.detail
    small = refused(encode(gradient(31, 100), "PNG"))
    assert (small.status_code, small.code) == (422, "image_too_small")
    assert "31x100" in small.detail
    assert decode_image(encode(gradient(32, 32), "PNG")).image.size == (32, 32)


def test_exif_orientation_is_applied():
    upright = gradient(64, 48)
    decoded = decode_image(exif_rotated_jpeg(upright))
    assert decoded.source_size == (48, 64)  # stored turned
    assert decoded.image.size == (64, 48)  # shown upright
    difference = np.abs(np.asarray(decoded.image, np.int16) - np.asarray(upright, np.int16))
    assert difference.mean() < 2
    # the tag is gone, so nothing downstream turns it a second time
    assert decoded.image.getexif().get(ExifTags.Base.Orientation, 1) == 1


def test_orientation_turns_in_place_and_an_upright_image_is_not_copied():
    upright = Image.open(io.BytesIO(encode(gradient(64, 48), "JPEG")))
    upright.load()
    pixels = upright.im  # the decoded pixel memory
    assert apply_exif_orientation(upright) is upright
    assert upright.im is pixels

    turned = Image.open(io.BytesIO(exif_rotated_jpeg(gradient(64, 48))))
    assert turned.size == (48, 64)
    assert apply_exif_orientation(turned) is turned
    assert turned.size == (64, 48)
    assert apply_exif_orientation(turned).size == (64, 48)  # once only


def test_16_bit_images_are_scaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535] * 8] * 32, np.uint16)  # -> 0, 1, 128, 255
    gray = decode_image(encode(Image.fromarray(values), "PNG"))
    assert gray.source_mode.startswith("I")
    assert np.asarray(gray.image)[0, :4, 0].tolist() == [0, 1, 128, 255]
    rgb16 = np.stack([values, values[:, ::-1], np.full_like(values, 65535)], -1)
    rgb = np.asarray(decode_image(png_rgb16(rgb16)).image)
    assert rgb[0, :4].tolist() == [[0, 255, 255], [1, 128, 255], [128, 1, 255], [255, 0, 255]]


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (40, 40), (200, 0, 0, 0))
    rgba.paste((0, 0, 200, 255), (0, 0, 20, 40))
    pixels = np.asarray(decode_image(encode(rgba, "PNG")).image)
    assert pixels[5, 5].tolist() == [0, 0, 200]  # opaque stays
    assert pixels[5, 30].tolist() == [255, 255, 255]  # transparent -> white


def test_cmyk_grayscale_and_palette_become_rgb():
    image = gradient()
    for converted, fmt in (
        (image.convert("CMYK"), "JPEG"),
        (image.convert("L"), "PNG"),
        (image.convert("P"), "PNG"),
    ):
        decoded = decode_image(encode(converted, fmt))
        assert decoded.source_mode == converted.mode and decoded.image.mode == "RGB"
    gray = np.asarray(decode_image(encode(image.convert("L"), "PNG")).image)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    cmyk = decode_image(encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"))
    red = np.asarray(cmyk.image)[20, 20]
    assert red[0] > 230 and red[1] < 25 and red[2] < 25


def test_to_rgb_float_images_scale_to_full_range():
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0] * 4] * 4, np.float32), "F")
    assert np.asarray(to_rgb(floats))[0, :3, 0].tolist() == [0, 128, 255]
