"""File names in messages: printable whatever bytes the file system gave.

POSIX file names are bytes. Python decodes them with the file-system
encoding and keeps the bytes that do not decode as lone surrogates
(``os.fsdecode``, PEP 383), so ``open()`` and ``os`` functions round-trip
them, but they cannot be printed or written as UTF-8, and libraries that
convert a path to UTF-8 (OpenCV, ``tf.constant``) fail on them. Code that
opens files keeps the original `str` (or ``os.fsencode`` bytes for
TensorFlow); messages use `display_path`.
"""

from __future__ import annotations

import os

__all__ = ["display_path", "printable"]


def printable(text) -> str:
    """`text` safe to print or write as UTF-8: bytes of a non-UTF-8 file name appear as ``\\xNN``.

    File names are bytes on POSIX; Python keeps the bytes that are not UTF-8
    as lone surrogates (``os.fsdecode``), which cannot be encoded. Use the
    result only in messages, never to open the file.
    """
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    text = str(text)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def display_path(path) -> str:
    """A file name (str, bytes or path-like) as printable text (see `printable`)."""
    return printable(os.fspath(path) if isinstance(path, os.PathLike) else path)
