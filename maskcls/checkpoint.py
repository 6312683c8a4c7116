"""The checkpoint format, in one place: training writes it, prediction, export and serving read it.

A checkpoint is a dict saved with torch: the model's `state_dict` under "model", the run's whole
config under "config" (a plain dict, so any version of the code can read it), the recorded
"preprocess" and "layout", the "age_cuts", and the "epoch" and "val" scores it was taken at.
`last.pt` adds the optimizer, scheduler, scaler, EMA and RNG state that a resume needs.
"""
from __future__ import annotations

import errno
import pickle
import zipfile
from dataclasses import replace
from pathlib import Path

import torch

from .config import config_from_dict
from .data.transforms import Preprocess
from .errors import MaskclsError
from .faces.onet import adopt_onet
from .fileio import atomic_write
from .models import build_model


def save(state: dict, path) -> None:
    """Write atomically: a crash or a full disk keeps the previous checkpoint whole."""
    with atomic_write(path, "wb", what="checkpoint") as handle:
        torch.save(state, handle)


def load(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MaskclsError(f"{path}: checkpoint not found; train a run first or check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EIO):
            raise  # the file can't be read, which is not the same as damaged
        raise MaskclsError(f"{path}: damaged or not a maskcls checkpoint (cut short); "
                           "resume from the run's other checkpoint (best.pt / last.pt) or train again") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise MaskclsError(f"{path}: damaged or not a maskcls checkpoint ({str(exc).splitlines()[0][:80]}); "
                           "resume from the run's other checkpoint (best.pt / last.pt) or train again") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise MaskclsError(f"{path}: not a maskcls checkpoint (no model and config inside); pass a best.pt or last.pt that `maskcls train` wrote")
    return state


def checkpoints_of(member) -> list[Path]:
    """The best.pt files a member stands for: a checkpoint, a run folder or a CV folder (its folds)."""
    member = Path(member)
    if member.is_file():
        return [member]
    if (member / "best.pt").is_file():
        return [member / "best.pt"]
    folds = sorted(member.glob("fold*/best.pt"))
    if folds:
        return folds
    raise MaskclsError(f"{member}: no best.pt here or in fold*/; pass a run folder, a CV folder or a checkpoint file")


def load_model(path, device=None):
    """(model, preprocess, checkpoint) rebuilt from the checkpoint alone, in eval mode on `device`."""
    path = Path(path)
    checkpoint = load(path)
    cfg = config_from_dict(checkpoint["config"], where=f"{path}: ")
    model_cfg = cfg.model.replace(weights="none")  # the checkpoint carries the weights
    model, pre = build_model(model_cfg, cfg.preprocess, tuple(checkpoint["age_cuts"]))
    recorded = Preprocess.from_dict(checkpoint["preprocess"])
    # The record is the truth for what a config from before a setting existed rebuilds as today's
    # default: the detector's steps, and the crop's framing.
    before = {} if "crop_align" in checkpoint["config"].get("preprocess", {}) else {"crop_align": recorded.crop_align}
    if replace(pre, detector=recorded.detector, **before) != recorded:
        raise MaskclsError(f"{path}: the preprocessing rebuilt from its config differs from the recorded one; the checkpoint is inconsistent")
    pre = recorded
    if pre.detector.onet is not None:
        adopt_onet(pre.detector.onet, path.parent)  # the run folder's copy of its tuned O-net, for a store that lacks it
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        raise MaskclsError(f"{path}: its weights don't fit the model its config describes ({str(exc).splitlines()[0][:100]}); "
                           "the checkpoint is inconsistent: train again") from None
    model.to(device or torch.device("cpu")).eval()
    return model, pre, checkpoint
