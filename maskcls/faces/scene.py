"""Whether a data set's photos are wide scenes or tight faces: what `preprocess.crop=auto` decides on.

A model trained on whole 384x512 scenes scores near chance, so training there without the face
crop is a mistake no user means to make; a tight face photo, on the other hand, is already the
crop, and a detector run over it only adds its errors. The face in a tight photo spans most of
its width, the face in a scene a fraction of it, so the main face's width tells the two apart.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .cache import face_boxes
from .detect import DetectorSettings

SAMPLE_PHOTOS = 16
# A tight crop's face spans most of the photo's width, a scene's (an upper-body shot, a door
# camera's frame) a fraction of it.
WIDE_FACE_WIDTH = 0.6


@dataclass(frozen=True)
class SceneCheck:
    photos: int  # sampled
    faces: int  # of them with a face a detector found (not the centre guess)
    median_width: float | None  # of those faces, as a fraction of their photo's width

    @property
    def wide(self) -> bool:
        """Scenes when most sampled photos hold a found face that is narrow for its photo."""
        return self.faces * 2 > self.photos and self.median_width is not None and self.median_width < WIDE_FACE_WIDTH

    def describe(self) -> str:
        if self.median_width is None:
            return f"no face found in {self.photos} sampled photos"
        return (f"a face found in {self.faces} of {self.photos} sampled photos, spanning a median "
                f"{self.median_width:.0%} of the photo's width")


def scene_check(files, settings: DetectorSettings | None = None) -> SceneCheck:
    """Detect the main face of up to SAMPLE_PHOTOS of `files`, spread evenly over them (bare-faced
    photos are the surest to be found); detections go to the shared cache."""
    files = list(files)
    sample = [files[i] for i in np.linspace(0, len(files) - 1, min(SAMPLE_PHOTOS, len(files))).round().astype(int)]
    widths = []
    for file, face in zip(sample, face_boxes(sample, settings), strict=True):
        if face.source != "centre":
            with Image.open(file) as image:
                widths.append((face.box[2] - face.box[0]) / image.width)
    return SceneCheck(len(sample), len(widths), float(np.median(widths)) if widths else None)
