"""The one preprocessing path on tiny images written by the test: every mode and container we accept,
and a corpus of bad inputs that must each fail with its own helpful reason."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from fer_ray.preprocess import (
    HEIF_SUPPORTED,
    ImageDecodeError,
    PreprocessConfig,
    decode_image,
    face_input,
    normalize,
    preprocess_bytes,
)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR for a ``width`` x ``height`` 8-bit grey image, with no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


# -- modes ---------------------------------------------------------------------------------------


def test_rgba_is_composited_on_white():
    arr = np.zeros((4, 4, 4), dtype=np.uint8)  # transparent black
    arr[0, 0] = (0, 0, 0, 255)  # one opaque black pixel
    gray = decode_image(encode(Image.fromarray(arr, "RGBA"), "PNG"))
    assert gray.dtype == np.uint8 and gray.shape == (4, 4)
    assert gray[0, 0] == 0 and gray[1, 1] == 255


def test_la_is_composited_on_white():
    im = Image.new("LA", (4, 4), (0, 0))
    im.putpixel((0, 0), (10, 255))
    gray = decode_image(encode(im, "PNG"))
    assert gray[0, 0] == 10 and gray[3, 3] == 255


def test_palette_with_and_without_transparency():
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 0, 0, 0] + [0, 0, 0] * 254)  # index 0 and 1 both black
    im.putpixel((0, 0), 0)
    opaque = decode_image(encode(im, "PNG"))
    assert opaque.max() == 0
    see_through = decode_image(encode(im, "PNG", transparency=1))  # index 1 transparent -> white
    assert see_through[0, 0] == 0 and see_through[2, 2] == 255


def test_palette_colours_become_grey_levels():
    im = Image.new("RGB", (4, 4), (255, 255, 255)).convert("P")
    assert decode_image(encode(im, "GIF"))[0, 0] == 255


def test_cmyk_jpeg():
    white = decode_image(encode(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG"))
    black = decode_image(encode(Image.new("CMYK", (8, 8), (0, 0, 0, 255)), "JPEG"))
    assert white.shape == (8, 8) and white.min() >= 250 and black.max() <= 5


def test_16bit_png_is_scaled_not_clipped():
    arr = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    gray = decode_image(encode(Image.fromarray(arr), "PNG"))
    assert gray.tolist() == [[0, 4, 128, 255]]  # clipping would give [0, 255, 255, 255]


@pytest.mark.parametrize("orientation, corner", [(6, (0, -1)), (8, (-1, 0))])
def test_exif_rotation_is_applied(orientation, corner):
    # Stored 40 wide x 20 high with a bright marker in the top-left corner.
    arr = np.zeros((20, 40), dtype=np.uint8)
    arr[:5, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    gray = decode_image(encode(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95))
    assert gray.shape == (40, 20)  # upright: now taller than wide
    # 6 = rotate 90 clockwise to view (marker -> top-right); 8 = counter-clockwise (marker -> bottom-left).
    r, c = corner
    rows = slice(0, 5) if r == 0 else slice(-5, None)
    cols = slice(0, 5) if c == 0 else slice(-5, None)
    assert gray[rows, cols].mean() > 200
    assert gray.mean() < 60  # and nowhere else


@pytest.mark.skipif(not HEIF_SUPPORTED, reason="pillow-heif not installed")
def test_heic():
    gray = decode_image(encode(Image.new("RGB", (64, 64), (255, 255, 255)), "HEIF"))
    assert gray.shape == (64, 64) and gray.min() > 240


def test_gif_first_frame():
    frames = [Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 255)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert decode_image(data).max() == 0


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF", "PNG", "JPEG"])
def test_common_containers(fmt):
    kw = {"lossless": True} if fmt == "WEBP" else {}
    gray = decode_image(encode(Image.new("RGB", (10, 6), (128, 128, 128)), fmt, **kw))
    assert gray.shape == (6, 10) and abs(int(gray.mean()) - 128) <= 2


# -- face crop and normalisation ------------------------------------------------------------------


def test_face_input_without_box_centre_crops_to_a_square():
    gray = np.zeros((100, 200), dtype=np.uint8)
    gray[:, 50:150] = 255  # the centred square is white, the sides black
    face = face_input(gray)
    assert face.shape == (48, 48) and face.dtype == np.uint8 and face.min() == 255


def test_face_input_with_box_adds_the_margin():
    gray = np.zeros((200, 200), dtype=np.uint8)
    gray[50:150, 50:150] = 255
    cfg = PreprocessConfig(face_margin=0.0)
    assert face_input(gray, (50, 50, 100, 100), cfg).min() == 255
    widened = face_input(gray, (50, 50, 100, 100), PreprocessConfig(face_margin=0.25))
    assert widened[0, 0] == 0 and widened[24, 24] == 255  # the margin brings in the black border
    with pytest.raises(ValueError, match="outside"):
        face_input(gray, (500, 500, 10, 10))


def test_face_input_keeps_48x48_as_is():
    gray = np.arange(48 * 48, dtype=np.uint8).reshape(48, 48)
    assert np.array_equal(face_input(gray), gray)


def test_normalize_shape_and_range():
    import torch

    x = np.stack([np.zeros((48, 48), np.uint8), np.full((48, 48), 255, np.uint8)])
    t = normalize(x)
    assert tuple(t.shape) == (2, 1, 48, 48) and t.dtype == torch.float32
    assert t[0].min().item() == -1.0 and t[1].max().item() == 1.0
    assert tuple(normalize(torch.zeros(3, 1, 48, 48, dtype=torch.uint8)).shape) == (3, 1, 48, 48)
    with pytest.raises(ValueError, match="expected a batch"):
        normalize(np.zeros((2, 3, 48, 48), np.uint8))


def test_preprocess_bytes_end_to_end():
    face = preprocess_bytes(encode(Image.new("RGB", (96, 64), (255, 255, 255)), "PNG"))
    assert face.shape == (48, 48) and face.min() == 255


# -- the bad-input corpus --------------------------------------------------------------------------


def bad_corpus() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, phrase the reason must contain)."""
    jpeg = encode(Image.new("L", (64, 64), 128), "JPEG")
    rng = np.random.default_rng(0)
    return {
        "zero_byte.jpg": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "random.bin": (rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a recognised image"),
        "text.jpg": (b"hello, this is a text file and not a picture\n", "not a recognised image"),
        "doc.pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not a recognised image"),
        "archive.zip": (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\0" * 40, "not a recognised image"),
        "bomb.png": (png_header(30000, 30000), "pixels"),
    }


def test_bad_corpus_each_fails_with_its_own_reason():
    reasons = {}
    for name, (data, phrase) in bad_corpus().items():
        with pytest.raises(ImageDecodeError) as e:
            decode_image(data)
        reasons[name] = str(e.value)
        assert phrase in reasons[name], (name, reasons[name])
    assert len(set(reasons.values())) == len(reasons), reasons  # no two inputs share a message
    # The reason shows what the file starts with, so a user can tell a PDF from a text file.
    assert "%PDF" in reasons["doc.pdf"] and "hello" in reasons["text.jpg"]


def test_decompression_bomb_is_rejected_without_allocating():
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError, match="pixels"):
            decode_image(png_header(30000, 30000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # decoding it would need 900 MB
    # Below Pillow's own bomb limit, our max_pixels decides, and says how to override it.
    with pytest.raises(ImageDecodeError, match=r"over the limit of 1,000 .*raise max_pixels"):
        decode_image(png_header(100, 100), max_pixels=1000)
