"""Preprocessing and augmentation: the one place that turns a photo into a model input.

`Preprocess` (size as height x width, mean, std, face crop) is saved in every run and rebuilt
from there at predict time, so training and test can't drift apart. The official baseline
resized with height and width swapped at inference; here both paths call `eval_transform`
on the same recorded `Preprocess`, and height always comes first.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import albumentations as A
import cv2
import numpy as np
import torch

from ..errors import MaskclsError


@dataclass(frozen=True)
class Preprocess:
    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: str = "none"  # a face crop (MTCNN) joins here, applied identically in training and prediction

    @classmethod
    def from_config(cls, cfg, backbone_mean, backbone_std) -> Preprocess:
        """`cfg` is the run's config.PreprocessConfig; unset mean/std follow the backbone's weights."""
        height, width = (cfg.size, cfg.size) if isinstance(cfg.size, int) else tuple(cfg.size)
        if min(height, width) < 32:
            raise MaskclsError(f"preprocess.size={cfg.size}: images under 32 px are too small for the backbones")
        return cls(int(height), int(width), tuple(cfg.mean or backbone_mean), tuple(cfg.std or backbone_std), cfg.crop)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(int(d["height"]), int(d["width"]), tuple(d["mean"]), tuple(d["std"]), d.get("crop", "none"))


def _augmentations(preset: str, pre: Preprocess) -> list:
    size = (pre.height, pre.width)
    light = [A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(0.15, 0.15, p=0.5)]
    geometric = A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), p=0.7)
    presets = {
        "none": [],
        "light": light,
        "medium": light + [
            geometric,
            A.ColorJitter(0.2, 0.2, 0.2, 0.03, p=0.5),
            A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.2), hole_width_range=(0.1, 0.2), p=0.3),
        ],
        "strong": light + [
            A.RandomResizedCrop(size=size, scale=(0.7, 1.0), ratio=(0.85, 1.15), p=0.7),
            geometric,
            A.ColorJitter(0.3, 0.3, 0.3, 0.05, p=0.7),
            A.ToGray(p=0.1),
            A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.1, 0.25), hole_width_range=(0.1, 0.25), p=0.5),
        ],
    }
    if preset not in presets:
        raise MaskclsError(f"augment.preset={preset!r}: choose one of {', '.join(presets)}")
    return presets[preset]


def train_transform(pre: Preprocess, preset: str) -> A.Compose:
    return A.Compose([A.Resize(pre.height, pre.width, interpolation=cv2.INTER_AREA), *_augmentations(preset, pre)])


def eval_transform(pre: Preprocess) -> A.Compose:
    return A.Compose([A.Resize(pre.height, pre.width, interpolation=cv2.INTER_AREA)])


def to_tensor(image_rgb: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """uint8 HxWx3 -> normalised float 3xHxW."""
    mean = np.asarray(pre.mean, np.float32) * 255
    std = np.asarray(pre.std, np.float32) * 255
    return torch.from_numpy(((image_rgb.astype(np.float32) - mean) / std).transpose(2, 0, 1).copy())


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
