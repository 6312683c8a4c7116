"""A recipe's members over an eval set, voted into a checked submission.

Each member (a run folder's best.pt, a checkpoint, or a CV folder's folds) predicts every eval
photo with the recipe's TTA; the vote combines them (`vote.combine`), after person pooling when
the recipe asks for it. Beside the submission go the voted probabilities, the person groups and
a metadata file (the recipe, each checkpoint's preprocessing), for later ensembling and reports.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..checkpoint import checkpoints_of
from ..data.layout import load_eval
from ..fileio import atomic_write, atomic_write_text
from ..labels import NUM_CLASSES
from .persons import person_groups
from .recipe import Recipe
from .runtime import member_probs
from .submission import check_submission, write_submission
from .vote import combine


def predict(recipe: Recipe, data, out_csv, batch_size: int = 64, num_workers: int = 2, progress: bool = True) -> dict:
    """Predict the eval set in `data` with the recipe; write the submission, probs and metadata."""
    runs = recipe.trained_runs()
    checkpoints = [checkpoints_of(run) for run in runs]  # every member checked before any photo is read
    evaluation = load_eval(data)
    results = [member_probs(paths, evaluation.files, recipe.tta, batch_size, num_workers, progress) for paths in checkpoints]
    members_probs = [probs for probs, _ in results]
    groups = person_groups(evaluation.files) if recipe.by_person else None
    labels, probs = combine(members_probs, recipe.vote, groups)
    out_csv = write_submission(evaluation.info, labels, out_csv)
    stem = out_csv.with_suffix("")
    with atomic_write(f"{stem}.probs.npy", "wb", what="probabilities") as handle:
        np.save(handle, probs.astype(np.float32))
    if groups is not None:
        with atomic_write(f"{stem}.groups.npy", "wb", what="person groups") as handle:
            np.save(handle, groups)
    meta = {"recipe": recipe.to_dict(), "members": [str(run) for run in runs],
            "preprocess": [pre for _, preprocessing in results for pre in preprocessing],
            "rows": len(labels), "info": str(evaluation.root / "info.csv")}
    atomic_write_text(f"{stem}.meta.json", json.dumps(meta, indent=2) + "\n", what="metadata")
    check_submission(out_csv, evaluation.root / "info.csv")
    return {"submission": str(out_csv), "probs": f"{stem}.probs.npy", "meta": f"{stem}.meta.json",
            "counts": np.bincount(labels, minlength=NUM_CLASSES).tolist(), "members_probs": members_probs, "groups": groups,
            "info": evaluation.info}
