"""Builds the bad-input image corpus of the reliability tests at test time.

Every case is written by `build_image_corpus` into a folder: name -> path,
and `EXPECTED` says what each one must give: ``"ok"`` (decoded, RGB uint8)
or ``"reject"`` (a clear error naming the file, or a counted skip).
Nothing here is copied from elsewhere; images are drawn with NumPy and
written by OpenCV / Pillow.
"""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
from PIL import Image

# name -> expected outcome of the one image loading path.
EXPECTED = {
    "good.jpg": "ok",
    "zero_byte.jpg": "reject",
    "truncated.jpg": "reject",
    "text_as.jpg": "reject",
    "grayscale.png": "ok",
    "rgba.png": "ok",
    "sixteen_bit.png": "ok",
    "cmyk.jpg": "ok",
    "exif_rotated.jpg": "ok",
    "huge_declared.png": "reject_serving",  # a valid header declaring 60000 x 60000
    "naïve_ünïcode_名前.jpg": "ok",
}


def pattern(height=48, width=64, seed=0):
    """A deterministic RGB uint8 test picture with structure in it."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    image[..., 2] = rng.integers(0, 256, (height, width), dtype=np.uint8)
    return image


def jpeg_bytes(image, quality=95):
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def exif_rotated_jpeg(image):
    """A JPEG of `image` (stored pixels) with EXIF Orientation = 6 (rotate 90 CW)."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def huge_declared_png(width=60000, height=60000):
    """A PNG whose IHDR declares width x height but whose data is tiny (truncated)."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def build_image_corpus(folder):
    """Writes every case of `EXPECTED` into `folder`; returns name -> path."""
    os.makedirs(folder, exist_ok=True)
    image = pattern()
    good = jpeg_bytes(image)
    contents = {
        "good.jpg": good,
        "zero_byte.jpg": b"",
        "truncated.jpg": good[: len(good) // 2],
        "text_as.jpg": b"this is not an image, only text named .jpg\n" * 4,
        "exif_rotated.jpg": exif_rotated_jpeg(image),
        "huge_declared.png": huge_declared_png(),
        "naïve_ünïcode_名前.jpg": jpeg_bytes(pattern(seed=3)),
    }
    buffer = io.BytesIO()
    Image.fromarray(image).convert("CMYK").save(buffer, format="JPEG", quality=95)
    contents["cmyk.jpg"] = buffer.getvalue()
    paths = {}
    for name, data in contents.items():
        paths[name] = os.path.join(folder, name)
        with open(paths[name], "wb") as f:
            f.write(data)
    paths["grayscale.png"] = os.path.join(folder, "grayscale.png")
    cv2.imwrite(paths["grayscale.png"], image[..., 1])
    paths["rgba.png"] = os.path.join(folder, "rgba.png")
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 200, np.uint8)], axis=-1)
    cv2.imwrite(paths["rgba.png"], cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    paths["sixteen_bit.png"] = os.path.join(folder, "sixteen_bit.png")
    cv2.imwrite(paths["sixteen_bit.png"], cv2.cvtColor(image, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    return paths
