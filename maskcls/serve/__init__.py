"""Serving: a trained recipe exported to ONNX (`export`), loaded with its face crop and vote as
one model (`model.ServedModel`), behind a FastAPI service and its page (`app`).

This module stays light (no torch, no ONNX Runtime), so the CLI refuses a missing model folder
before it imports them."""
from __future__ import annotations

from pathlib import Path

from ..errors import MaskclsError


def model_source(folder) -> Path:
    """`folder` as a Path, refused when nothing is there to serve."""
    folder = Path(folder)
    if not folder.exists():
        raise MaskclsError(f"{folder}: not found; pass a folder that `maskcls export` wrote, or a fit, ensemble or run folder")
    return folder

