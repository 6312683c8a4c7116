"""Reading photo files: damaged ones are found before decoding and reported in one line."""
from __future__ import annotations

import os

import cv2
import numpy as np

from .errors import MaskclsError

# A JPEG ends with its end-of-image marker and a PNG with its IEND chunk; cameras may append a
# little after them, so the end of the file is searched, not only its last bytes.
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PNG_SIGNATURE, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"
TAIL_BYTES = 16384


def truncation(file) -> str | None:
    """Why a photo file is cut short, or None. A decoder fills a cut-short JPEG with grey and
    goes on, so this is checked before decoding rather than left to it."""
    with open(file, "rb") as handle:
        head = handle.read(8)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read()
    if head.startswith(JPEG_START) and JPEG_END not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if head.startswith(PNG_SIGNATURE) and PNG_END not in tail:
        return "truncated PNG (no IEND chunk)"
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
