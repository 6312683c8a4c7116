"""Turning 18-class probabilities into labels that score well on macro-F1.

Argmax maximises expected accuracy, not macro-F1: a rare class that the model under-predicts
costs a whole 1/18 of the score. Per-class offsets on the log-probabilities move the decision
boundaries; `cross_fit_offsets` measures honestly (person-grouped) whether that helps.

Gender and age are properties of a person, not of a photo, so when photos can be grouped into
persons `person_consistency` makes a person's photos agree on them.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.model_selection import GroupKFold

from .errors import MaskclsError
from .labels import HEADS, NUM_CLASSES

# Probabilities are clipped before the log so a hard 0 becomes a large finite penalty, not -inf.
PROB_FLOOR = 1e-12
# Absolute offset values tried for each class; +-4 in log space is a 55x change in odds.
DEFAULT_OFFSET_GRID = np.round(np.arange(-4.0, 4.0 + 1e-9, 0.1), 10)
# Two macro-F1 values closer than this are the same score computed from different counts.
F1_TOLERANCE = 1e-12

N_MASK = HEADS["mask"]
N_GENDER_AGE = HEADS["gender"] * HEADS["age"]
# How much a photo says about its person's gender and age, for (wear, incorrect, not wear): a
# masked face hides most of what shows age. Chosen on the 5-fold out-of-fold predictions of
# cpu-face over the 2,700 stand-in train persons, grouped by the same clustering as eval photos:
# person macro-F1 0.598 with equal weights, 0.655 with these; anything from (1, 3, 30) to
# (1, 10, 100) scores within 0.003 of it.
FACE_VISIBILITY_WEIGHTS = (1.0, 10.0, 30.0)


def batch_macro_f1(y_true, predictions, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Macro-F1 of each row of `predictions` (G, N) against `y_true` (N,), as metrics.macro_f1 scores it.

    Counts with one bincount over all G candidates instead of calling sklearn G times; a class
    that is neither true nor predicted scores 0 (zero_division=0), as on the leaderboard.
    """
    y_true = np.asarray(y_true)
    predictions = np.atleast_2d(predictions)
    n_candidates = predictions.shape[0]
    flat_labels = predictions + (np.arange(n_candidates) * num_classes)[:, None]
    size = n_candidates * num_classes
    predicted = np.bincount(flat_labels.ravel(), minlength=size).reshape(n_candidates, num_classes)
    true_positive = np.bincount(flat_labels[predictions == y_true], minlength=size).reshape(n_candidates, num_classes)
    denominator = predicted + np.bincount(y_true, minlength=num_classes)
    f1 = np.divide(2.0 * true_positive, denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    return f1.mean(axis=1)


def _check_probs(probs, name: str = "probs") -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise MaskclsError(f"{name}: expected an (images, classes) probability array, got shape {probs.shape}")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise MaskclsError(f"{name}: probabilities must be finite and non-negative; pass softmax outputs, not logits")
    return probs


def check_labels(y, n_rows: int, num_classes: int) -> np.ndarray:
    """`y` as int64 labels, after checking there is one per probability row and each is a class."""
    y = np.asarray(y)
    if y.shape != (n_rows,):
        raise MaskclsError(f"labels: expected {n_rows} labels to match the probability rows, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (n_rows and (y.min() < 0 or y.max() >= num_classes)):
        raise MaskclsError(f"labels: must be whole numbers 0..{num_classes - 1}")
    return y.astype(np.int64)


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, PROB_FLOOR, None))


def apply_offsets(probs, offsets) -> np.ndarray:
    """Labels argmax(log(probs) + offsets); zero offsets give plain argmax."""
    probs = _check_probs(probs)
    offsets = np.asarray(offsets, dtype=np.float64)
    if offsets.shape != (probs.shape[1],):
        raise MaskclsError(f"offsets: expected {probs.shape[1]} values, one per class, got shape {offsets.shape}")
    return np.argmax(_log_probs(probs) + offsets, axis=1)


def fit_class_offsets(probs, y, n_rounds: int = 3, grid=DEFAULT_OFFSET_GRID) -> np.ndarray:
    """Per-class log-probability offsets that maximise macro-F1 of apply_offsets on (probs, y).

    Coordinate ascent from zeros: each class in turn tries every grid value while the others
    stay fixed, and a change is kept only when it strictly raises macro-F1, so the result never
    scores below argmax on this data. Among equally good values the middle one is kept, so the
    boundary sits inside the flat stretch rather than on its edge. Stops early after a round
    without change. Offsets are defined up to a common constant (argmax ignores it).
    """
    probs = _check_probs(probs)
    n_rows, num_classes = probs.shape
    y = check_labels(y, n_rows, num_classes)
    grid = np.asarray(grid, dtype=np.float64)
    log_probs = _log_probs(probs)
    rows = np.arange(n_rows)
    offsets = np.zeros(num_classes)
    current_f1 = batch_macro_f1(y, np.argmax(log_probs, axis=1), num_classes)[0]
    for _ in range(n_rounds):
        changed = False
        for cls in range(num_classes):
            # The best competing class does not depend on this class's offset, so find it once;
            # each candidate value then only decides, per row, between `cls` and that rival: O(N).
            others = log_probs + offsets
            others[:, cls] = -np.inf
            rival = np.argmax(others, axis=1)
            rival_score = others[rows, rival]
            candidate_score = log_probs[:, cls] + grid[:, None]
            # np.argmax keeps the first of equal maxima, so on an exact tie `cls` wins only if it comes first.
            wins = (candidate_score > rival_score) | ((candidate_score == rival_score) & (cls < rival))
            f1 = batch_macro_f1(y, np.where(wins, cls, rival), num_classes)
            best = f1.max()
            if best > current_f1 + F1_TOLERANCE:
                tied = np.flatnonzero(f1 >= best - F1_TOLERANCE)
                chosen = tied[len(tied) // 2]
                offsets[cls] = grid[chosen]
                current_f1 = f1[chosen]
                changed = True
        if not changed:
            break
    return offsets


def group_splits(groups, n_splits: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit_rows, held_out_rows) pairs with every group wholly on one side (shuffled GroupKFold)."""
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_splits < 2:
        raise MaskclsError(f"n_splits={n_splits}: need at least 2 splits")
    if n_groups < n_splits:
        raise MaskclsError(f"n_splits={n_splits}: only {n_groups} persons (groups); use fewer splits")
    splitter = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


def cross_fit_offsets(probs, y, groups, n_splits: int = 5, seed: int = 0, **fit_kwargs) -> dict:
    """Honest gain of offset tuning: fitted on K-1 person-grouped parts, scored on the held-out part.

    Returns {"argmax_f1", "tuned_f1", "gain", "offsets"}: both F1s over all rows, the tuned one
    assembled from out-of-fold predictions; "offsets" are fitted on all rows, for use on new data.
    `fit_kwargs` go to fit_class_offsets (n_rounds, grid).
    """
    probs = _check_probs(probs)
    y = check_labels(y, *probs.shape)
    groups = np.asarray(groups)
    if groups.shape != y.shape:
        raise MaskclsError(f"groups: expected one person id per row ({len(y)}), got shape {groups.shape}")
    tuned = np.empty_like(y)
    for fit_rows, held_rows in group_splits(groups, n_splits, seed):
        fold_offsets = fit_class_offsets(probs[fit_rows], y[fit_rows], **fit_kwargs)
        tuned[held_rows] = apply_offsets(probs[held_rows], fold_offsets)
    num_classes = probs.shape[1]
    argmax_f1 = float(batch_macro_f1(y, apply_offsets(probs, np.zeros(num_classes)), num_classes)[0])
    tuned_f1 = float(batch_macro_f1(y, tuned, num_classes)[0])
    return {
        "argmax_f1": argmax_f1,
        "tuned_f1": tuned_f1,
        "gain": tuned_f1 - argmax_f1,
        "offsets": fit_class_offsets(probs, y, **fit_kwargs),
    }


def person_consistency(probs, groups, weighting: str = "information", face_weights=FACE_VISIBILITY_WEIGHTS) -> np.ndarray:
    """18-class probs where each person's photos share one gender x age distribution.

    Each photo keeps its own mask marginal; its gender x age marginal is replaced by the
    person's, a weighted mean of the photos' marginals, and the two are recombined as
    independent. A photo's weight is how much face it shows, `face_weights` for (wear,
    incorrect, not wear) averaged over its own mask probabilities, times, with
    weighting="information", how far its gender x age marginal is from uniform (log 6 minus its
    entropy), so one confident photo outweighs several unsure ones; "uniform" drops that factor.
    face_weights=(1, 1, 1) weighs all photos alike.
    """
    probs = _check_probs(probs)
    if probs.shape[1] != NUM_CLASSES:
        raise MaskclsError(f"probs: person_consistency needs the {NUM_CLASSES}-class layout, got {probs.shape[1]} classes")
    groups = np.asarray(groups)
    if groups.shape != (len(probs),):
        raise MaskclsError(f"groups: expected one person id per row ({len(probs)}), got shape {groups.shape}")
    if weighting not in ("information", "uniform"):
        raise MaskclsError(f"weighting={weighting!r}: use 'information' or 'uniform'")
    face_weights = np.asarray(face_weights, dtype=np.float64)
    if face_weights.shape != (N_MASK,) or not np.all(face_weights > 0):
        raise MaskclsError(f"face_weights={face_weights.tolist()}: give {N_MASK} positive weights, for wear, incorrect and not wear")
    mask_marginal, gender_age = mask_and_gender_age(probs)
    weight = mask_marginal @ face_weights
    if weighting == "information":
        entropy = -np.sum(gender_age * _log_probs(gender_age), axis=1)
        # The small floor keeps a person whose photos are all uniform from dividing by zero.
        weight = weight * (np.clip(np.log(N_GENDER_AGE) - entropy, 0.0, None) + 1e-6)
    _, person = np.unique(groups, return_inverse=True)
    n_persons = person.max() + 1 if len(person) else 0
    person_sum = np.zeros((n_persons, N_GENDER_AGE))
    np.add.at(person_sum, person, weight[:, None] * gender_age)
    person_gender_age = person_sum / person_sum.sum(axis=1, keepdims=True)
    return joint_probs(mask_marginal, person_gender_age[person])


def mask_and_gender_age(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (N,3) mask and (N,6) gender x age marginals of (N,18) probabilities."""
    # class = mask*6 + (gender*3 + age), so axis 1 is the mask and axis 2 the gender x age cell.
    joint = probs.reshape(len(probs), N_MASK, N_GENDER_AGE)
    joint = joint / np.clip(joint.sum(axis=(1, 2), keepdims=True), PROB_FLOOR, None)
    return joint.sum(axis=2), joint.sum(axis=1)


def joint_probs(mask_marginal: np.ndarray, gender_age: np.ndarray) -> np.ndarray:
    """(N,18) probabilities from the two marginals, taken as independent."""
    return (mask_marginal[:, :, None] * gender_age[:, None, :]).reshape(len(mask_marginal), NUM_CLASSES)


def group_by_embedding(embeddings, threshold: float | None = None, n_groups: int | None = None, linkage: str = "average") -> np.ndarray:
    """Person ids from embeddings by agglomerative clustering.

    linkage="average" clusters on cosine distance (`threshold` is a cosine distance);
    linkage="ward" clusters the unit-normalised rows, which gives even-sized groups (`threshold`
    is then a Ward merge cost). Give exactly one of `threshold` or `n_groups`. Memory grows
    with N^2 (the pairwise distances): about 0.6 GB for 12,600 photos.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise MaskclsError(f"embeddings: expected an (images, dims) array, got shape {embeddings.shape}")
    if (threshold is None) == (n_groups is None):
        raise MaskclsError("group_by_embedding: give exactly one of threshold= or n_groups=")
    if linkage not in ("average", "ward"):
        raise MaskclsError(f"linkage={linkage!r}: use 'average' or 'ward'")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise MaskclsError("embeddings: some rows are all zeros, which have no cosine distance; drop or fix them")
    if len(embeddings) < 2:
        return np.zeros(len(embeddings), dtype=np.int64)
    if linkage == "ward":
        clustering = AgglomerativeClustering(n_clusters=n_groups, distance_threshold=threshold, linkage="ward")
        return clustering.fit_predict(embeddings / norms).astype(np.int64)
    clustering = AgglomerativeClustering(
        n_clusters=n_groups, distance_threshold=threshold, metric="cosine", linkage="average"
    )
    return clustering.fit_predict(embeddings).astype(np.int64)
