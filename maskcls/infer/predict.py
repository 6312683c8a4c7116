"""A recipe's members over an eval set, voted into a checked submission.

Each member (a run folder's best.pt, a checkpoint, or a CV folder's folds) predicts every eval
photo with the recipe's TTA; the vote combines them (`vote.combine`), after person pooling when
the recipe asks for it. Beside the submission go the voted probabilities, the person groups and
a metadata file (the recipe, each checkpoint's preprocessing), for later ensembling and reports.
"""
from __future__ import annotations

import json

import numpy as np

from ..checkpoint import checkpoints_of
from ..data.layout import load_eval
from ..errors import MaskclsError
from ..faces import DetectorSettings, face_boxes
from ..fileio import atomic_write, atomic_write_text
from ..labels import NUM_CLASSES
from .outputs import output_paths
from .persons import person_groups
from .recipe import Recipe
from .runtime import member_probs
from .submission import check_submission, write_submission
from .vote import combine


def predict(recipe: Recipe, data, out_csv, batch_size: int = 64, num_workers: int = 2, progress: bool = True, force: bool = False) -> dict:
    """Predict the eval set in `data` with the recipe; write the submission, probs and metadata.
    An existing output is refused unless `force`; an input of the prediction never is written."""
    runs = recipe.trained_runs()
    checkpoints = [checkpoints_of(run) for run in runs]  # every member checked before any photo is read
    if batch_size < 1:
        raise MaskclsError(f"batch size {batch_size}: must be at least 1")
    evaluation = load_eval(data)
    outputs = output_paths(out_csv, evaluation.root, force)
    outputs["submission"].parent.mkdir(parents=True, exist_ok=True)
    results = [member_probs(paths, evaluation.files, recipe.tta, batch_size, num_workers, progress) for paths in checkpoints]
    members_probs = [probs for probs, _ in results]
    preprocessing = [pre for _, member_preprocessing in results for pre in member_preprocessing]
    groups = person_groups(evaluation.files, faces=eval_faces(preprocessing, evaluation.files)) if recipe.by_person else None
    labels, probs = combine(members_probs, recipe.vote, groups)
    # The submission is written last, so a complete submission means its companions are complete too.
    with atomic_write(outputs["probs"], "wb", what="probabilities") as handle:
        np.save(handle, probs.astype(np.float32))
    if groups is not None:
        with atomic_write(outputs["groups"], "wb", what="person groups") as handle:
            np.save(handle, groups)
    meta = {"recipe": recipe.to_dict(), "members": [str(run) for run in runs],
            "preprocess": preprocessing,
            "rows": len(labels), "info": str(evaluation.root / "info.csv")}
    atomic_write_text(outputs["meta"], json.dumps(meta, indent=2) + "\n", what="metadata")
    out_csv = write_submission(evaluation.info, labels, outputs["submission"])
    check_submission(out_csv, evaluation.root / "info.csv")
    return {"submission": str(out_csv), "probs": str(outputs["probs"]), "meta": str(outputs["meta"]),
            "counts": np.bincount(labels, minlength=NUM_CLASSES).tolist(), "members_probs": members_probs, "groups": groups,
            "info": evaluation.info}


def eval_faces(preprocessing: list[dict], files):
    """The main face of each eval photo when the members crop faces (from the detection cache
    their prediction just filled), so persons are grouped by face, not by the scene around it."""
    cropping = [pre for pre in preprocessing if pre.get("crop", "none") != "none"]
    return face_boxes(files, DetectorSettings.from_dict(cropping[0]["detector"])) if cropping else None
