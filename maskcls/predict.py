"""Turn trained runs into a submission: info.csv with `ans` filled, same rows, same order.

A member is a run folder (its best.pt), a checkpoint file, or a cross-validation folder (all
its folds). Members are soft-voted (weights optional) or hard-voted; per-class offsets fitted
for macro-F1 are applied when given. Probabilities and a metadata file (members, TTA,
preprocessing) are written beside the submission for later ensembling.

Person consistency (optional): the eval photos are grouped into persons by clustering small
thumbnails of the photo's top part (hair, forehead, eyes and background: what a mask never
covers) into N/7 groups, as each person has 7 photos; each person's photos then share one
gender x age distribution (`decision.person_consistency`), read mostly from the photos that
show the face: the unmasked one, then the one with the mask worn wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .data.layout import EVAL_COLUMNS, load_eval
from .data.transforms import Preprocess, read_rgb
from .decision import apply_offsets, group_by_embedding, joint_probs, mask_and_gender_age, person_consistency
from .ensemble import hard_vote, soft_vote
from .errors import MaskclsError
from .inference import pick_device, predict_probs
from .labels import NUM_CLASSES
from .models import build_model
from .train.run import load_checkpoint


def checkpoints_of(member) -> list[Path]:
    """The best.pt files a member stands for: a checkpoint, a run folder or a CV folder."""
    member = Path(member)
    if member.is_file():
        return [member]
    if (member / "best.pt").is_file():
        return [member / "best.pt"]
    folds = sorted(member.glob("fold*/best.pt"))
    if folds:
        return folds
    raise MaskclsError(f"{member}: no best.pt here or in fold*/; pass a run folder, a CV folder or a checkpoint file")


def load_model(checkpoint_path, device=None):
    """Rebuild a model from its checkpoint alone: architecture, weights and preprocessing."""
    checkpoint = load_checkpoint(checkpoint_path)
    model_cfg = {**checkpoint["config"]["model"], "weights": "none"}  # the checkpoint carries the weights
    model, pre = build_model(model_cfg, checkpoint["config"]["preprocess"], tuple(checkpoint["age_cuts"]))
    if pre != Preprocess.from_dict(checkpoint["preprocess"]):
        raise MaskclsError(f"{checkpoint_path}: the preprocessing rebuilt from its config differs from the recorded one; the checkpoint is inconsistent")
    model.load_state_dict(checkpoint["model"])
    model.to(device or pick_device()).eval()
    return model, pre, checkpoint


def member_probs(member, files, tta="none", batch_size=64, num_workers=2, progress=True) -> tuple[np.ndarray, list[dict]]:
    """Mean (N,18) probabilities over a member's checkpoints (the folds of a CV folder), and
    the preprocessing each checkpoint used."""
    probs, preprocessing = [], []
    for checkpoint_path in checkpoints_of(member):
        model, pre, checkpoint = load_model(checkpoint_path)
        amp = checkpoint["config"]["train"]["amp"]
        probs.append(predict_probs(model, pre, files, tta, batch_size, num_workers, amp, progress=progress, desc=f"predict {checkpoint_path.parent.name}"))
        preprocessing.append(pre.to_dict())
    return np.mean(probs, axis=0), preprocessing


PHOTOS_PER_PERSON = 7
# The top 35% of a photo is above any mask; on the stand-in eval set, ward clustering of these
# thumbnails recovers the persons with adjusted Rand 0.94 (whole photos: 0.11; backbone features: 0.01).
PERSON_TOP_FRACTION = 0.35
PERSON_THUMB_SIDE = 12


def person_embedding(file, top_fraction: float = PERSON_TOP_FRACTION) -> np.ndarray:
    """A small standardised colour thumbnail of the photo's top part."""
    image = read_rgb(file)
    top = image[: max(1, int(image.shape[0] * top_fraction))]
    thumb = cv2.resize(top, (PERSON_THUMB_SIDE, PERSON_THUMB_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb -= thumb.mean(axis=(0, 1), keepdims=True)  # exposure and white balance differ between shots
    return (thumb / (thumb.std() + 1e-6)).ravel()


def person_groups(files, top_fraction: float = PERSON_TOP_FRACTION) -> np.ndarray:
    """Person ids for eval photos: N/7 even-sized clusters of their top-part thumbnails."""
    embeddings = np.stack([person_embedding(f, top_fraction) for f in files])
    return group_by_embedding(embeddings, n_groups=max(1, round(len(files) / PHOTOS_PER_PERSON)), linkage="ward")


def combine(members_probs: list[np.ndarray], method: str = "soft", weights=None, offsets=None, groups=None,
            mask_weights=None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) from the members' probabilities; `groups` (person ids) make each
    person's photos agree on gender and age. `mask_weights` (soft voting) give the mask its own
    vote, e.g. only the members that see the photo at full size; gender x age keep `weights`."""
    if method not in ("soft", "hard"):
        raise MaskclsError(f"method={method!r}: choose soft or hard")
    if method == "hard":
        if mask_weights is not None:
            raise MaskclsError("mask weights apply to soft voting; use --method soft")
        if groups is not None:
            members_probs = [person_consistency(p, groups) for p in members_probs]
        return hard_vote(members_probs), soft_vote(members_probs, weights)
    probs = soft_vote(members_probs, weights)
    if mask_weights is not None:
        probs = joint_probs(mask_and_gender_age(soft_vote(members_probs, mask_weights))[0], mask_and_gender_age(probs)[1])
    if groups is not None:
        # After the vote, so each photo's weight in its person reflects the ensemble's confidence.
        probs = person_consistency(probs, groups)
    return (apply_offsets(probs, offsets) if offsets is not None else probs.argmax(1)), probs


def write_submission(info: pd.DataFrame, labels: np.ndarray, out_csv) -> Path:
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    submission = info[EVAL_COLUMNS].copy()
    submission["ans"] = np.asarray(labels, dtype=np.int64)
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    submission.to_csv(tmp, index=False)
    tmp.replace(out_csv)
    return out_csv


def predict(members, data, out_csv, tta="none", method="soft", weights=None, offsets=None, batch_size=64,
            num_workers=2, progress=True, by_person: bool = False, mask_weights=None) -> dict:
    """Predict the eval set in `data` with the members; write the submission, probs and metadata."""
    evaluation = load_eval(data)
    results = [member_probs(m, evaluation.files, tta, batch_size, num_workers, progress) for m in members]
    groups = person_groups(evaluation.files) if by_person else None
    labels, probs = combine([probs for probs, _ in results], method, weights, offsets, groups, mask_weights)
    out_csv = write_submission(evaluation.info, labels, out_csv)
    stem = out_csv.with_suffix("")
    np.save(f"{stem}.probs.npy", probs.astype(np.float32))
    meta = {
        "members": [str(m) for m in members], "tta": tta, "method": method,
        "weights": None if weights is None else list(map(float, weights)),
        "offsets": None if offsets is None else list(map(float, offsets)),
        "mask_weights": None if mask_weights is None else list(map(float, mask_weights)),
        "preprocess": [pre for _, preprocessing in results for pre in preprocessing],
        "by_person": by_person,
        "rows": len(labels), "info": str(evaluation.root / "info.csv"),
    }
    Path(f"{stem}.meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if groups is not None:
        np.save(f"{stem}.groups.npy", groups)
    check_submission(out_csv, evaluation.root / "info.csv")
    return {"submission": str(out_csv), "probs": f"{stem}.probs.npy", "meta": f"{stem}.meta.json", "counts": np.bincount(labels, minlength=NUM_CLASSES).tolist()}


def check_submission(submission_csv, info_csv) -> str:
    """Row count, ID set and order equal to info.csv, integer classes 0-17, no NaN. One-line errors."""
    submission_csv, info_csv = Path(submission_csv), Path(info_csv)
    for path in (submission_csv, info_csv):
        if not path.is_file():
            raise MaskclsError(f"{path}: not found")
    submission = pd.read_csv(submission_csv, dtype=str, keep_default_na=True)
    info = pd.read_csv(info_csv, dtype=str)
    if list(submission.columns) != EVAL_COLUMNS:
        raise MaskclsError(f"{submission_csv}: columns are {','.join(map(str, submission.columns))}; the header must be ImageID,ans")
    if len(submission) != len(info):
        raise MaskclsError(f"{submission_csv}: {len(submission)} rows, but {info_csv} has {len(info)}; predict every image of info.csv")
    if set(submission["ImageID"]) != set(info["ImageID"]):
        missing = sorted(set(info["ImageID"]) - set(submission["ImageID"]))
        raise MaskclsError(f"{submission_csv}: ImageIDs differ from {info_csv} ({len(missing)} missing, e.g. {missing[:1]}); predict exactly info.csv's images")
    moved = np.flatnonzero(submission["ImageID"].to_numpy() != info["ImageID"].to_numpy())
    if len(moved):
        raise MaskclsError(f"{submission_csv}: rows are not in info.csv's order (first at line {moved[0] + 2}); keep info.csv's order")
    empty = np.flatnonzero(submission["ans"].isna().to_numpy())
    if len(empty):
        raise MaskclsError(f"{submission_csv}: line {empty[0] + 2}: ans is empty (NaN); every image needs a class 0-17")
    is_integer = submission["ans"].str.fullmatch(r"\d+").fillna(False).astype(bool).to_numpy()
    bad = np.flatnonzero(~is_integer | (pd.to_numeric(submission["ans"], errors="coerce").fillna(-1).to_numpy() > NUM_CLASSES - 1))
    if len(bad):
        raise MaskclsError(f"{submission_csv}: line {bad[0] + 2}: ans {submission['ans'].iloc[bad[0]]!r} is not an integer class 0-17")
    return f"{submission_csv}: OK, {len(submission)} rows in info.csv order, classes 0-17"
