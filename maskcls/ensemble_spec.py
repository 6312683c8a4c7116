"""`maskcls ensemble`: members + voting method + fitted weights + macro-F1 offsets, as one JSON.

Weights and offsets are fitted on out-of-fold probabilities (a CV folder's oof_probs.npy, or a
single run's holdout val_probs.npy); every member must cover the same training photos. The
offsets' gain is reported cross-fitted by person, so it is never scored on the rows it was
fitted to. `maskcls predict --ensemble ensemble.json` applies the whole recipe.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .decision import cross_fit_offsets
from .ensemble import fit_soft_weights, hard_vote, soft_vote
from .errors import MaskclsError
from .metrics import macro_f1
from .predict import checkpoints_of


def member_oof(member) -> tuple[pd.DataFrame, np.ndarray]:
    """(images, probs) held out from training: a CV folder's OOF, or a run's validation split."""
    member = Path(member)
    for images_csv, probs_npy in (("oof_images.csv", "oof_probs.npy"), ("val_images.csv", "val_probs.npy")):
        if (member / images_csv).is_file() and (member / probs_npy).is_file():
            return pd.read_csv(member / images_csv, dtype={"id": str}), np.load(member / probs_npy)
    raise MaskclsError(f"{member}: no oof_probs.npy (CV folder) or val_probs.npy (run folder; none when trained on every person) to fit on; "
                       "drop --fit-weights/--tune-offsets or pass CV folders")


def aligned_oof(members) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The members' held-out probabilities on the same photos, in the same order."""
    tables = [member_oof(m) for m in members]
    reference = tables[0][0]
    order = reference["file"]
    probs = []
    for member, (images, member_probs) in zip(members, tables):
        if set(images["file"]) != set(order):
            raise MaskclsError(f"{member}: its held-out photos differ from {members[0]}'s; fit on members trained on the same data and folds")
        position = pd.Series(np.arange(len(images)), index=images["file"])
        probs.append(member_probs[position.loc[order].to_numpy()])
    return reference, probs


def build_ensemble(members, out_dir, method="soft", fit_weights=False, tune_offsets=False) -> dict:
    for member in members:
        checkpoints_of(member)  # fails early, with a clear line, on a folder with no model
    spec = {"members": [str(Path(m).resolve()) for m in members], "method": method, "weights": None, "offsets": None, "oof": {}}
    if fit_weights or tune_offsets:
        if method == "hard":
            raise MaskclsError("--fit-weights and --tune-offsets apply to soft voting; use --method soft")
        images, probs = aligned_oof(members)
        labels = images["label"].to_numpy()
        spec["oof"]["n_images"] = len(labels)
        spec["oof"]["members_macro_f1"] = [macro_f1(labels, p.argmax(1)) for p in probs]
        spec["oof"]["equal_weights_macro_f1"] = macro_f1(labels, soft_vote(probs).argmax(1))
        spec["oof"]["hard_vote_macro_f1"] = macro_f1(labels, hard_vote(probs))
        weights = fit_soft_weights(probs, labels) if fit_weights and len(members) > 1 else None
        if weights is not None:
            spec["weights"] = weights.tolist()
            spec["oof"]["fitted_weights_macro_f1"] = macro_f1(labels, soft_vote(probs, weights).argmax(1))
        if tune_offsets:
            tuning = cross_fit_offsets(soft_vote(probs, weights), labels, images["id"].astype(str).to_numpy())
            spec["offsets"] = tuning["offsets"].tolist()
            spec["oof"].update({"argmax_macro_f1": tuning["argmax_f1"], "offsets_crossfit_macro_f1": tuning["tuned_f1"], "offsets_gain": tuning["gain"]})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ensemble.json").write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def read_ensemble(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MaskclsError(f"{path}: ensemble file not found; create it with `maskcls ensemble ... --out DIR`")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MaskclsError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    missing = [k for k in ("members", "method", "weights", "offsets") if k not in spec]
    if missing:
        raise MaskclsError(f"{path}: missing key(s) {', '.join(missing)}; recreate it with `maskcls ensemble`")
    return spec
