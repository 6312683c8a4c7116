"""Preprocessing and augmentation: the one place that turns a photo into a model input.

`Preprocess` (size as height x width, mean, std, face crop) is saved in every run and rebuilt
from there at predict time, so training and test can't drift apart. The official baseline
resized with height and width swapped at inference; here both paths call `eval_transform`
on the same recorded `Preprocess`, and height always comes first.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import albumentations as A
import cv2
import numpy as np
import torch

from ..errors import MaskclsError
from ..faces import CROP_ALIGNS, DetectorSettings, align_face, crop_face


def detector_settings(cfg) -> DetectorSettings:
    """The detector a config.PreprocessConfig's crop_* keys describe (with the packaged O-net)."""
    return DetectorSettings(thresholds=cfg.crop_thresholds, min_face=cfg.crop_min_face,
                            rescue_thresholds=cfg.crop_rescue_thresholds, rescue_below=cfg.crop_rescue_below,
                            refine_steps=cfg.crop_refine_steps, score_power=cfg.crop_score_power, cascade=cfg.crop_cascade,
                            haar_downscale=cfg.crop_haar_downscale, onet_scan=cfg.crop_onet_scan)


@dataclass(frozen=True)
class Preprocess:
    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: str = "none"  # "mtcnn": the square face crop, the same in training, prediction and serving
    crop_margin: float = 0.0
    detector: DetectorSettings = DetectorSettings()  # recorded, so a run is always cropped as it was trained
    crop_align: str = "box"  # "eyes": framed on the eye landmarks, as the face networks' chips are (maskcls/faces/crop.py)

    def __post_init__(self):
        if self.crop_align not in CROP_ALIGNS:
            raise MaskclsError(f"crop_align={self.crop_align!r}: choose one of {', '.join(CROP_ALIGNS)}")

    @classmethod
    def from_config(cls, cfg, backbone_mean, backbone_std) -> Preprocess:
        """`cfg` is the run's config.PreprocessConfig; unset mean/std follow the backbone's weights."""
        height, width = (cfg.size, cfg.size) if isinstance(cfg.size, int) else tuple(cfg.size)
        if min(height, width) < 32:
            raise MaskclsError(f"preprocess.size={cfg.size}: images under 32 px are too small for the backbones")
        mean, std = tuple(cfg.mean or backbone_mean), tuple(cfg.std or backbone_std)
        if cfg.crop == "none":  # margin and detector mean nothing without a crop; runs from before the crop compare equal
            return cls(int(height), int(width), mean, std)
        return cls(int(height), int(width), mean, std, cfg.crop, cfg.crop_margin, detector_settings(cfg), cfg.crop_align)

    def to_dict(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "detector"}
        if self.crop == "none":
            # Without a crop neither the detector nor the framing plays a part, so a change to their
            # defaults leaves such runs' records (and caches) alone.
            d.pop("crop_align")
            return {**d, "detector": None}
        return {**d, "detector": self.detector.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        # Runs recorded before the face crop existed have no crop keys: they were never cropped;
        # those recorded before the eye framing were framed on the box.
        crop = d.get("crop", "none")
        detector = DetectorSettings.from_dict(d.get("detector")) if crop != "none" else DetectorSettings()
        align = d.get("crop_align", "box") if crop != "none" else "box"
        return cls(int(d["height"]), int(d["width"]), tuple(d["mean"]), tuple(d["std"]), crop, float(d.get("crop_margin", 0.0)),
                   detector, align)

    def face_crop(self, image: np.ndarray, face) -> np.ndarray:
        """The model's view of a photo whose main face is `face` (None when this run does not crop).
        A face without landmarks (Haar's, the centre guess) is framed on its box."""
        if face is None:
            return image
        if self.crop_align == "eyes" and face.landmarks is not None:
            return align_face(image, face.landmarks, self.crop_margin)
        return crop_face(image, face.box, self.crop_margin)


def _augmentations(preset: str, pre: Preprocess) -> list:
    size = (pre.height, pre.width)
    light = [A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(0.15, 0.15, p=0.5)]
    geometric = A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), p=0.7)
    medium = light + [
        geometric,
        A.ColorJitter(0.2, 0.2, 0.2, 0.03, p=0.5),
        A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.2), hole_width_range=(0.1, 0.2), p=0.3),
    ]
    presets = {
        "none": [],
        "light": light,
        "medium": medium,
        # What a door or corridor camera does to a face that a phone photo does not: infrared
        # frames without colour, a small face read from few sensor pixels, motion and focus blur,
        # sensor noise and a hard-compressed stream. The crop is what is distorted, since that is
        # all the model sees; distortions before the crop land on it the same way.
        "camera": medium + [
            A.Downscale(scale_range=(0.3, 0.8), p=0.3),
            A.OneOf([A.MotionBlur(blur_limit=(3, 7)), A.GaussianBlur(blur_limit=(3, 5))], p=0.25),
            A.GaussNoise(std_range=(0.02, 0.08), p=0.25),
            A.RandomGamma((70, 150), p=0.3),
            A.ToGray(p=0.2),  # after the noise: an infrared sensor's noise has no colour either
            A.ImageCompression(quality_range=(30, 90), p=0.3),
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
