"""Per-class offsets on the log-probabilities, fitted for macro-F1.

Argmax maximises expected accuracy, not macro-F1: a rare class that the model under-predicts
costs a whole 1/18 of the score. Offsets move the decision boundaries; `cross_fit_offsets`
measures honestly (person-grouped) whether that helps.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold

from ..errors import MaskclsError
from ..metrics import batch_macro_f1
from .probs import check_labels, check_probs, log_probs

# Absolute offset values tried for each class; +-4 in log space is a 55x change in odds.
DEFAULT_OFFSET_GRID = np.round(np.arange(-4.0, 4.0 + 1e-9, 0.1), 10)
# Two macro-F1 values closer than this are the same score computed from different counts.
F1_TOLERANCE = 1e-12


def apply_offsets(probs, offsets) -> np.ndarray:
    """Labels argmax(log(probs) + offsets); zero offsets give plain argmax."""
    probs = check_probs(probs)
    offsets = np.asarray(offsets, dtype=np.float64)
    if offsets.shape != (probs.shape[1],):
        raise MaskclsError(f"offsets: expected {probs.shape[1]} values, one per class, got shape {offsets.shape}")
    return np.argmax(log_probs(probs) + offsets, axis=1)


def fit_class_offsets(probs, y, n_rounds: int = 3, grid=DEFAULT_OFFSET_GRID) -> np.ndarray:
    """Per-class log-probability offsets that maximise macro-F1 of apply_offsets on (probs, y).

    Coordinate ascent from zeros: each class in turn tries every grid value while the others
    stay fixed, and a change is kept only when it strictly raises macro-F1, so the result never
    scores below argmax on this data. Among equally good values the middle one is kept, so the
    boundary sits inside the flat stretch rather than on its edge. Stops early after a round
    without change. Offsets are defined up to a common constant (argmax ignores it).
    """
    probs = check_probs(probs)
    n_rows, num_classes = probs.shape
    y = check_labels(y, n_rows, num_classes)
    grid = np.asarray(grid, dtype=np.float64)
    logp = log_probs(probs)
    rows = np.arange(n_rows)
    offsets = np.zeros(num_classes)
    current_f1 = batch_macro_f1(y, np.argmax(logp, axis=1), num_classes)[0]
    for _ in range(n_rounds):
        changed = False
        for cls in range(num_classes):
            # The best competing class does not depend on this class's offset, so find it once;
            # each candidate value then only decides, per row, between `cls` and that rival: O(N).
            others = logp + offsets
            others[:, cls] = -np.inf
            rival = np.argmax(others, axis=1)
            rival_score = others[rows, rival]
            candidate_score = logp[:, cls] + grid[:, None]
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
    probs = check_probs(probs)
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
