"""A prediction's output files: the submission and its companions, checked before any work.

A light room (no torch): the CLI runs the same check before it imports a model, so a kept
submission or a misplaced --out is refused at once.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import MaskclsError


def output_paths(out_csv, eval_root: Path, force: bool) -> dict[str, Path]:
    """The submission and its companions (.probs.npy, .groups.npy, .meta.json), checked before any work."""
    out_csv = Path(out_csv)
    stem = out_csv.with_suffix("")
    outputs = {"submission": out_csv, "probs": Path(f"{stem}.probs.npy"), "groups": Path(f"{stem}.groups.npy"),
               "meta": Path(f"{stem}.meta.json")}
    if out_csv.is_dir():
        raise MaskclsError(f"{out_csv}: is a folder; --out takes the submission's file path, e.g. {out_csv / 'submission.csv'}")
    inputs = {(eval_root / name).resolve() for name in ("info.csv", "truth.csv", "meta.csv")}
    for path in outputs.values():
        if path.resolve() in inputs or path.resolve().parent == (eval_root / "images").resolve():
            raise MaskclsError(f"{path}: is an input of this prediction; write the submission elsewhere (--out)")
    existing = [path for path in outputs.values() if path.exists()]
    if existing and not force:
        raise MaskclsError(f"{existing[0]}: exists; pass --force to replace it, or choose another --out")
    return outputs
