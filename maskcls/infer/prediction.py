"""A recipe's members over an eval set, voted into a checked submission.

Each member (a run folder's best.pt, a checkpoint, or a CV folder's folds) predicts every eval
photo with the recipe's TTA; the vote combines them (`vote.combine`), after person pooling when
the recipe asks for it. Beside the submission go the voted probabilities, the person groups and
a metadata file (the recipe, each checkpoint's preprocessing), for later ensembling and reports.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..checkpoint import checkpoints_of, load
from ..data.layout import load_eval
from ..errors import MaskclsError
from ..fileio import atomic_write, atomic_write_text
from ..labels import NUM_CLASSES
from .outputs import output_paths
from .persons import (
    MAX_GROUPING_DISTANCE,
    MIN_MASK_CONFIDENCE,
    PROJECTION_FILE,
    PersonProjection,
    embedding_kind,
    grouping_distance,
    load_person_projection,
    main_faces,
    person_groups,
    train_person_projection,
)
from .probs import mask_and_gender_age
from .recipe import Recipe
from .runtime import member_probs
from .submission import check_submission, write_submission
from .vote import combine

log = logging.getLogger(__name__)


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
    labels, probs = combine(members_probs, recipe.vote)  # photo by photo, the answer unless persons are pooled
    groups, persons = None, {"asked": recipe.by_person}
    if recipe.by_person:
        projection, persons["projection"] = person_projection(recipe, checkpoints[0][0], preprocessing)
        groups = person_groups(evaluation.files, faces=main_faces(preprocessing, evaluation.files), projection=projection)
        groups, persons["distance"] = checked_grouping(groups, probs)
        if groups is not None:
            labels, probs = combine(members_probs, recipe.vote, groups)
    persons["grouped"] = groups is not None
    # The submission is written last, so a complete submission means its companions are complete too.
    with atomic_write(outputs["probs"], "wb", what="probabilities") as handle:
        np.save(handle, probs.astype(np.float32))
    if groups is not None:
        with atomic_write(outputs["groups"], "wb", what="person groups") as handle:
            np.save(handle, groups)
    else:
        outputs["groups"].unlink(missing_ok=True)  # replaced with --force: an earlier prediction's groups are not this one's
    meta = {"recipe": recipe.to_dict(), "members": [str(run) for run in runs],
            "preprocess": preprocessing, "persons": persons,
            "rows": len(labels), "info": str(evaluation.root / "info.csv")}
    atomic_write_text(outputs["meta"], json.dumps(meta, indent=2) + "\n", what="metadata")
    out_csv = write_submission(evaluation.info, labels, outputs["submission"])
    check_submission(out_csv, evaluation.root / "info.csv")
    return {"submission": str(out_csv), "probs": str(outputs["probs"]), "meta": str(outputs["meta"]),
            "counts": np.bincount(labels, minlength=NUM_CLASSES).tolist(), "members_probs": members_probs, "groups": groups,
            "info": evaluation.info}


def person_projection(recipe: Recipe, checkpoint, preprocessing: list[dict]) -> tuple[PersonProjection | None, str | None]:
    """The fit's person projection beside the recipe ("stored"); else one fitted now on the
    train persons the first member was trained on ("fitted now"), where they are on disk; else
    none, and photos are grouped on their raw thumbnails, which tell persons apart less surely."""
    kept = load_person_projection(recipe.home) if recipe.home is not None else None
    if kept is not None and kept.fits(embedding_kind(preprocessing)):
        return kept, "stored"
    if kept is not None:
        log.warning("%s: made for other embeddings (%s); fitting one now (rerun `maskcls fit` to store it)",
                    Path(recipe.home) / PROJECTION_FILE, kept.embedding)
    train_root = load(checkpoint)["config"]["data"].get("root")
    if not train_root:
        log.warning("person grouping: no person projection beside the recipe, and no train data recorded in %s to fit one now, "
                    "so photos are grouped on raw thumbnails", checkpoint)
        return None, None
    log.info("person grouping: fitting a person projection on the train persons of %s (`maskcls fit` stores one with "
             "its recipe; with a face crop this detects faces in train photos the cache has not seen)", train_root)
    try:
        projection = train_person_projection(train_root, preprocessing)
    except MaskclsError as exc:
        log.warning("person grouping: no person projection beside the recipe, and none fitted now on the members' train "
                    "persons (%s), so photos are grouped on raw thumbnails", exc)
        return None, None
    if projection is None:
        log.warning("person grouping: no person projection beside the recipe, and too few train persons to fit one now, "
                    "so photos are grouped on raw thumbnails")
        return None, None
    return projection, "fitted now"


def checked_grouping(groups: np.ndarray, photo_probs: np.ndarray) -> tuple[np.ndarray | None, float | None]:
    """The person groups, or None where they are no persons: pooling photos of different persons
    would give each of them someone else's gender and age. Also the grouping's distance (see
    `grouping_distance`), None where it cannot tell: too few groups, or masks read too unsurely."""
    mask_probs = mask_and_gender_age(photo_probs)[0]
    distance = grouping_distance(mask_probs, groups) if mask_probs.max(axis=1).mean() >= MIN_MASK_CONFIDENCE else None
    if distance is None:
        log.info("person grouping kept unchecked: too few groups, or masks read too unsurely, to tell persons from random groups")
        return groups, None
    if distance > MAX_GROUPING_DISTANCE:
        log.warning("person grouping: the %d groups found are no closer to a person's masks (5 worn, 1 incorrect, 1 not worn) "
                    "than random groups (distance %.2f of random's, at most %.2f kept), so each photo is predicted on its own; "
                    "photos of one person taken in different scenes group badly (--no-by-person skips the grouping)",
                    len(np.unique(groups)), distance, MAX_GROUPING_DISTANCE)
        return None, round(distance, 4)
    return groups, round(distance, 4)
