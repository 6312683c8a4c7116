"""Running a model over photos: device, autocast, loaders and TTA, shared by validation,
prediction, CV and feature caching.

The model is always rebuilt with the `Preprocess` recorded in its run, and every input goes
through `eval_transform`, so training and prediction see images the same way.
"""
from __future__ import annotations

import contextlib
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..checkpoint import load_model
from ..data.dataset import PhotoDataset
from ..data.transforms import Preprocess
from ..errors import MaskclsError
from ..labels import NUM_CLASSES
from ..models.heads import class_probs

log = logging.getLogger(__name__)

TTA_PRESETS = ("none", "hflip", "multiscale")


def pick_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA when there is a GPU, else the CPU; a device this machine lacks is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MaskclsError(f"device={name!r}: not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise MaskclsError(f"device={name}: this machine has no such CUDA GPU; use device=cpu or device=auto")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs at speed here. A CPU without AVX512-BF16 or AMX emulates it, and
    bf16 autocast there is several times slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def check_training_amp(amp: str, device: torch.device) -> None:
    """Fail on an autocast this device cannot run; warn where explicit bf16 would be emulated."""
    if amp == "fp16" and device.type != "cuda":
        raise MaskclsError("train.amp=fp16 needs a CUDA GPU; use auto or bf16 on a CPU")
    if amp == "bf16" and not native_bf16(device):
        log.warning("train.amp=bf16: this %s has no native bf16 (AVX512-BF16 or AMX), so autocast is emulated and "
                    "several times slower than fp32; train.amp=auto picks fp32 here", device.type.upper())


def inference_amp(amp: str, device: torch.device) -> str:
    """The autocast to predict with for a run recorded with `amp`. The precision of inference is
    no part of the model: where the recorded one would be emulated or cannot run, fp32 gives the
    same answer sooner."""
    if amp == "fp16":
        return amp if device.type == "cuda" else "none"
    return "auto" if amp == "bf16" else amp


def autocast(device: torch.device, amp: str):
    """auto: bf16 where it is native, else fp32; bf16, fp16 or none as asked."""
    if amp == "auto":
        amp = "bf16" if native_bf16(device) else "none"
    if amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        raise MaskclsError(f"train.amp={amp!r}: choose auto, bf16, fp16 or none")
    if dtype is torch.float16 and device.type != "cuda":
        raise MaskclsError("train.amp=fp16 needs a CUDA GPU; use auto or bf16 on a CPU")
    return torch.autocast(device.type, dtype=dtype)


def check_tta(tta: str) -> None:
    """One clear line for a TTA name that is not a preset."""
    if tta not in TTA_PRESETS:
        raise MaskclsError(f"tta={tta!r}: choose one of {', '.join(TTA_PRESETS)}")


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The batch as each TTA view sees it; probabilities of the views are averaged."""
    check_tta(tta)
    views = [x]
    if tta in ("hflip", "multiscale"):
        views.append(torch.flip(x, dims=[3]))
    if tta == "multiscale":
        height, width = x.shape[2:]
        dy, dx = int(round(height * 0.05)), int(round(width * 0.05))
        zoomed = F.interpolate(x[:, :, dy:height - dy, dx:width - dx], size=(height, width), mode="bilinear", align_corners=False)
        views += [zoomed, torch.flip(zoomed, dims=[3])]
    return views


def make_loader(files, pre: Preprocess, batch_size: int, num_workers: int, device: torch.device, progress: bool = False) -> DataLoader:
    return DataLoader(
        PhotoDataset(files, None, pre, progress=progress), batch_size=batch_size, shuffle=False,
        num_workers=min(num_workers, os.cpu_count() or 1), pin_memory=device.type == "cuda",
    )


@torch.no_grad()
def predict_probs(model, pre: Preprocess, files, tta: str = "none", batch_size: int = 64, num_workers: int = 2,
                  amp: str = "auto", device=None, progress: bool = True, desc: str = "predict") -> np.ndarray:
    """(N,18) class probabilities for the photo files, averaged over the TTA views."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for x, _ in tqdm(make_loader(files, pre, batch_size, num_workers, device, progress), desc=desc, unit="batch", disable=not progress, leave=False):
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            probs = [class_probs(model(view), model.layout) for view in tta_views(x, tta)]
        out.append(torch.stack(probs).mean(0).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, NUM_CLASSES), np.float32)


@torch.no_grad()
def embed_files(model, pre: Preprocess, files, batch_size: int = 64, num_workers: int = 2, amp: str = "auto",
                device=None, progress: bool = True) -> np.ndarray:
    """(N,F) backbone features."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for x, _ in tqdm(make_loader(files, pre, batch_size, num_workers, device, progress), desc="embed", unit="batch", disable=not progress, leave=False):
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out.append(model.forward_features(x).float().cpu())
    return torch.cat(out).numpy()


def member_probs(member_checkpoints, files, tta="none", batch_size=64, num_workers=2, progress=True, device=None) -> tuple[np.ndarray, list[dict]]:
    """Mean (N,18) probabilities over a member's checkpoints (the folds of a CV folder), and
    the preprocessing each checkpoint used."""
    device = device or pick_device()
    probs, preprocessing = [], []
    for checkpoint_path in member_checkpoints:
        model, pre, checkpoint = load_model(checkpoint_path, device)
        amp = inference_amp(checkpoint["config"]["train"]["amp"], device)
        probs.append(predict_probs(model, pre, files, tta, batch_size, num_workers, amp, progress=progress,
                                   desc=f"predict {checkpoint_path.parent.name}"))
        preprocessing.append(pre.to_dict())
    return np.mean(probs, axis=0), preprocessing
