"""Reading photo files: damaged ones are found before decoding and reported in one line."""
from __future__ import annotations

import os
import struct

import cv2
import numpy as np

from .errors import MaskclsError

# A JPEG ends with its end-of-image marker and a PNG with its IEND chunk; cameras may append a
# little after them, so the end of the file is searched, not only its last bytes.
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PNG_SIGNATURE, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"
TAIL_BYTES = 16384
HEAD_BYTES = 12


def truncation(file) -> str | None:
    """Why a photo file is cut short, or None. A decoder fills a cut-short JPEG with grey and
    goes on, so this is checked before decoding rather than left to it."""
    with open(file, "rb") as handle:
        head = handle.read(HEAD_BYTES)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read()
    return _cut_short(head, tail, size)


def truncation_of_bytes(data: bytes) -> str | None:
    """`truncation` for a photo held in memory (an upload)."""
    return _cut_short(data[:HEAD_BYTES], data[-TAIL_BYTES:], len(data))


def _cut_short(head: bytes, tail: bytes, size: int) -> str | None:
    if head.startswith(JPEG_START) and JPEG_END not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if head.startswith(PNG_SIGNATURE) and PNG_END not in tail:
        return "truncated PNG (no IEND chunk)"
    # WebP and BMP state their length in the header.
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and struct.unpack("<I", head[4:8])[0] + 8 > size:
        return "truncated WebP (shorter than its header says)"
    if head[:2] == b"BM" and len(head) >= 6 and struct.unpack("<I", head[2:6])[0] > size:
        return "truncated BMP (shorter than its header says)"
    return None


def read_rgb(file: str) -> np.ndarray:
    """Decode a photo as RGB uint8 (PNG alpha dropped); a broken or cut-short file is a one-line error."""
    reason = truncation(file)
    if reason:
        raise MaskclsError(f"{file}: {reason}; the photo is damaged: copy it again or remove it "
                           "(training can leave such photos out with data.bad_images=skip)")
    image = cv2.imread(str(file), cv2.IMREAD_COLOR)
    if image is None:
        raise MaskclsError(f"{file}: cannot be decoded as an image; replace or remove it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
