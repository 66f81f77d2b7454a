"""The one validated loading path for image files.

Rules, the same for ``train``, ``evaluate``, ``detect`` and the exported
``serving_bytes`` signature (docs/data.md, docs/serving.md):

* **EXIF orientation is ignored**: the stored pixels are used, as
  TensorFlow's decoders do (OpenCV is told ``IMREAD_IGNORE_ORIENTATION``).
  Annotations refer to the stored pixels.
* **Truncated JPEGs are rejected** (no end-of-image marker after the last
  scan), never grey-filled.
* Grayscale, RGBA, 16-bit and CMYK inputs become RGB uint8.
* Images above `MAX_PIXELS` decoded pixels are rejected from their header,
  before decoding.

`check_image_file` is the cheap check a training dataset runs on every
file when it is opened (header and tail only); `load_image` decodes.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

MAX_PIXELS = 100_000_000  # 100 megapixels
_TAIL = 4096
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)


class ImageError(ValueError):
    """An image file that cannot be used; ``reason`` is a short skip key."""

    def __init__(self, path: str, reason: str, detail: str):
        from tf_centernet.data.paths import display_path

        super().__init__(f"{display_path(path)}: {detail}")
        self.path = path
        self.reason = reason


def _format(head: bytes) -> Optional[str]:
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def jpeg_is_complete(data: bytes, tail_only: bool = False) -> bool:
    """True when a JPEG's end-of-image marker (FF D9) follows its last scan.

    Args:
        data: the file's bytes (or only its last bytes when `tail_only`).
        tail_only: `data` is the end of the file: an EOI marker among the
            last bytes (trailing padding allowed) is enough.
    """
    if tail_only:
        return b"\xff\xd9" in data
    eoi = data.rfind(b"\xff\xd9")
    return eoi > data.rfind(b"\xff\xda") and data.rfind(b"\xff\xda") >= 0


def check_image_file(path: str, max_pixels: int = MAX_PIXELS) -> Tuple[int, int]:
    """Checks an image file without decoding it (header and last 4 KiB).

    Args:
        path: str. Image file.
        max_pixels: int. Largest accepted ``height * width``.

    Returns:
        (height, width) in stored pixels.

    Raises:
        ImageError: ``reason`` one of ``missing_image``, ``empty_image``,
            ``not_an_image``, ``truncated_image``, ``image_too_large``,
            ``undecodable_image``; the message names the file.
    """
    from PIL import Image

    if not os.path.isfile(path):
        raise ImageError(path, "missing_image", "image file not found")
    size = os.path.getsize(path)
    if size == 0:
        raise ImageError(path, "empty_image", "image file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(32)
        kind = _format(head)
        if kind is None:
            raise ImageError(path, "not_an_image", "cannot decode: not a JPEG, PNG, GIF, BMP or WebP file (unknown signature)")
        if kind == "JPEG":
            if size <= 65536:
                f.seek(0)
                complete = jpeg_is_complete(f.read())
            else:
                f.seek(size - _TAIL)
                complete = jpeg_is_complete(f.read(), tail_only=True)
            if not complete:
                raise ImageError(path, "truncated_image", "truncated JPEG (no end-of-image marker)")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise ImageError(path, "image_too_large", f"image header declares more than {max_pixels} pixels") from None
    except Exception as error:  # Pillow raises many types for a bad header
        raise ImageError(path, "undecodable_image", f"cannot read the image header ({error})") from None
    if height * width > max_pixels or height <= 0 or width <= 0:
        raise ImageError(
            path, "image_too_large", f"{width}x{height} image exceeds the limit of {max_pixels} pixels"
        )
    return int(height), int(width)


def check_image_bytes(data: bytes, name: str = "<bytes>") -> str:
    """Checks encoded image bytes without decoding them.

    Returns:
        str: the format (``"JPEG"``, ``"PNG"``, ``"GIF"``, ``"BMP"``, ``"WEBP"``).

    Raises:
        ImageError: ``reason`` ``empty_image``, ``not_an_image`` or
            ``truncated_image``; the message names `name`.
    """
    if not data:
        raise ImageError(name, "empty_image", "image is empty (0 bytes)")
    kind = _format(bytes(data[:32]))
    if kind is None:
        raise ImageError(name, "not_an_image", "cannot decode: not a JPEG, PNG, GIF, BMP or WebP file (unknown signature)")
    if kind == "JPEG" and not jpeg_is_complete(bytes(data)):
        raise ImageError(name, "truncated_image", "truncated JPEG (no end-of-image marker)")
    return kind


def decode_image_bytes(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decodes an encoded image with the rules of this module.

    Returns:
        uint8 ``(height, width, 3)`` RGB, stored pixel order (EXIF ignored).

    Raises:
        ImageError: empty, unknown format, truncated JPEG, too large or
            undecodable; the message names `name`.
    """
    import cv2

    check_image_bytes(data, name)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as error:
        raise ImageError(name, "image_too_large", f"OpenCV refused the image ({str(error).strip()[-80:]})") from None
    if image is None:
        raise ImageError(name, "undecodable_image", "cannot decode the image (corrupt or unsupported format)")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageError(name, "image_too_large", f"{image.shape[1]}x{image.shape[0]} exceeds {max_pixels} pixels")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_image(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Reads an image file as RGB uint8 ``(height, width, 3)`` (stored pixels).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageError (a ValueError): see `decode_image_bytes`; names the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    return decode_image_bytes(data, path, max_pixels)


def usable_records(dataset, logger, max_pixels: int = MAX_PIXELS, limit_listed: int = 20,
                   max_objects: int = 0):
    """The records of a training dataset whose image passes `check_image_file`.

    Each bad image is a counted skip: added to ``dataset.skipped`` under its
    reason and logged in one warning naming the files (the first
    `limit_listed`). Encoded (TFRecord) images get the same checks in memory.
    Images with more than `max_objects` objects (when > 0) are logged with
    the number of objects that get no embedding slot.

    Returns:
        list of records, in order.

    Raises:
        ValueError: no usable image is left.
    """
    import collections

    kept, reasons, problems = [], collections.Counter(), []
    for record in dataset.records:
        try:
            if record.encoded is None:
                check_image_file(record.file_name, max_pixels)
            else:
                check_image_bytes(record.encoded, record.display_name)
        except ImageError as error:
            reasons[error.reason] += 1
            problems.append(str(error))
            continue
        kept.append(record)
    if reasons:
        skipped = getattr(dataset, "skipped", None)
        if isinstance(skipped, dict):
            for reason, count in reasons.items():
                skipped[reason] = skipped.get(reason, 0) + count
        logger.warning(
            "Skipping %d unusable training images (%s); training on %d of %d: %s%s",
            len(problems), ", ".join(f"{v} {k}" for k, v in sorted(reasons.items())),
            len(kept), len(dataset.records), "; ".join(problems[:limit_listed]),
            " ..." if len(problems) > limit_listed else "",
        )
    crowded = [r for r in kept if max_objects and r.num_objects > max_objects]
    if crowded:
        logger.warning(
            "%d training images have more than data.max_objects=%d objects; the %d objects beyond "
            "get no embedding/offset slot (heatmaps keep them): %s",
            len(crowded), max_objects, sum(r.num_objects - max_objects for r in crowded),
            ", ".join(r.display_name if r.source else os.path.basename(r.display_name) for r in crowded[:limit_listed]),
        )
    if not kept:
        raise ValueError(f"{dataset!r}: no usable training image left (all {len(problems)} rejected).")
    return kept
