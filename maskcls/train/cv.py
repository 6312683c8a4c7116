"""K-fold cross-validation by person, with out-of-fold probabilities for every training photo.

    CV_DIR/cv.yaml            the config every fold shares
    CV_DIR/fold{k}/           an ordinary run folder (resumable on its own)
    CV_DIR/fold{k}/done.json  written when fold k has finished
    CV_DIR/oof_probs.npy      (N,18) out-of-fold probabilities, rows as in oof_images.csv
    CV_DIR/oof_images.csv     every training photo exactly once, with its fold
    CV_DIR/summary.json       per-fold and OOF macro-F1 (mean +- std)

An interrupted CV continues at the fold level: finished folds are skipped, a fold with a
last.pt is resumed, a fold that never finished an epoch restarts. Under torchrun the processes
train each fold together and the main process alone writes the CV folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config, dump_config, load_config
from ..errors import MaskclsError
from ..fileio import atomic_write, atomic_write_text
from ..infer.runtime import pick_device
from ..metrics import score
from .distributed import is_main_process, on_main, process_group
from .engine import train
from .run import new_run_dir


def run_cv(cfg: Config | None = None, folds: int = 5, resume=None, progress: bool = True) -> dict:
    if resume:
        cv_dir = Path(resume)
        if not (cv_dir / "cv.yaml").is_file():
            raise MaskclsError(f"{cv_dir}: no cv.yaml here; pass the folder a previous `maskcls cv` created")
        cfg = load_config(cv_dir / "cv.yaml")
        folds = cfg.data.folds
    else:
        if folds < 2:
            raise MaskclsError(f"--folds {folds}: use at least 2 folds")
        cfg = cfg.updated({"data.folds": folds})
    with process_group(pick_device(cfg.device)):
        if not resume:
            cv_dir = on_main(start_cv_dir, cfg, folds)
        try:
            for fold in range(folds):
                run_fold(cv_dir, cfg, fold, folds, progress)
        except BaseException:
            # A new CV that fails before any fold trained an epoch leaves nothing behind, so the
            # corrected command can take the same name.
            if not resume and is_main_process() and not list(cv_dir.glob("fold*/last.pt")):
                shutil.rmtree(cv_dir, ignore_errors=True)
            raise
        return on_main(collect_oof, cv_dir, folds)


def start_cv_dir(cfg: Config, folds: int) -> Path:
    cv_dir = new_run_dir(cfg.out, cfg.name, f"cv{folds}-{cfg.model.backbone}")
    atomic_write_text(cv_dir / "cv.yaml", dump_config(cfg))
    return cv_dir


def run_fold(cv_dir: Path, cfg: Config, fold: int, folds: int, progress: bool) -> None:
    """Train (or resume, or skip when done) one fold."""
    fold_dir = cv_dir / f"fold{fold}"
    state = on_main(fold_state, fold_dir)
    if state == "done":
        return
    if state == "started":
        result = train(resume=fold_dir, progress=progress)
    else:
        if progress:
            print(f"== fold {fold + 1}/{folds}", flush=True)
        result = train(cfg.updated({"data.fold": fold, "out": str(cv_dir), "name": f"fold{fold}"}), progress=progress)
    on_main(atomic_write_text, fold_dir / "done.json", json.dumps(result, indent=2) + "\n")


def fold_state(fold_dir: Path) -> str:
    """done, started (a last.pt to resume) or new; a fold that never finished an epoch is removed."""
    if (fold_dir / "done.json").is_file():
        return "done"
    if (fold_dir / "last.pt").is_file():
        return "started"
    if fold_dir.exists():
        shutil.rmtree(fold_dir)  # started but never finished an epoch: nothing to keep
    return "new"


def collect_oof(cv_dir: Path, folds: int) -> dict:
    """Gather the folds' best-epoch validation probabilities into one OOF table and summary."""
    tables, probs, fold_scores = [], [], []
    for fold in range(folds):
        fold_dir = cv_dir / f"fold{fold}"
        images = pd.read_csv(fold_dir / "val_images.csv", dtype={"id": str})
        fold_probs = np.load(fold_dir / "val_probs.npy")
        tables.append(images.assign(fold=fold))
        probs.append(fold_probs)
        fold_scores.append(score(images["label"].to_numpy(), fold_probs.argmax(1)))
    oof_images = pd.concat(tables, ignore_index=True)
    oof_probs = np.concatenate(probs)
    if oof_images["file"].duplicated().any():
        raise MaskclsError(f"{cv_dir}: a photo is in more than one fold's validation set; the folds were not made from one split")
    order = np.argsort(oof_images["file"].to_numpy(), kind="stable")
    oof_images, oof_probs = oof_images.iloc[order].reset_index(drop=True), oof_probs[order]
    with atomic_write(cv_dir / "oof_images.csv", what="OOF table") as handle:
        oof_images.to_csv(handle, index=False)
    with atomic_write(cv_dir / "oof_probs.npy", "wb", what="OOF probabilities") as handle:
        np.save(handle, oof_probs)
    fold_f1 = [s["macro_f1"] for s in fold_scores]
    summary = {
        "folds": folds,
        "fold_macro_f1": fold_f1,
        "macro_f1_mean": float(np.mean(fold_f1)),
        "macro_f1_std": float(np.std(fold_f1)),
        "oof": score(oof_images["label"].to_numpy(), oof_probs.argmax(1)),
        "n_images": len(oof_images),
    }
    atomic_write_text(cv_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return {"cv_dir": str(cv_dir), **summary}
