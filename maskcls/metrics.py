"""The competition metric: macro-F1 over all 18 labels (sklearn, zero_division=0), then accuracy.

`macro_f1` is the metric itself (sklearn's); `batch_macro_f1` scores many candidate labelings at
once with the same counts, for the searches over weights and offsets, and is tested against it.
`paired_person_bootstrap` says how far a gap between two runs on the same holdout can be trusted.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

from .labels import HEADS, NUM_CLASSES, decode


def macro_f1(y_true, y_pred, num_classes: int = NUM_CLASSES) -> float:
    """Macro-F1 over every label 0..num_classes-1, absent ones included, as the leaderboard scores it."""
    return float(f1_score(y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0))


def accuracy(y_true, y_pred) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def head_scores(y_true, y_pred) -> dict[str, float]:
    """Macro-F1 and accuracy of each head (mask, gender, age) from 18-class labels."""
    parts_true, parts_pred = decode(np.asarray(y_true)), decode(np.asarray(y_pred))
    out = {}
    for (name, n), t, p in zip(HEADS.items(), parts_true, parts_pred, strict=True):
        out[f"{name}_f1"] = macro_f1(t, p, n)
        out[f"{name}_acc"] = accuracy(t, p)
    return out


def score(y_true, y_pred) -> dict[str, float]:
    """All the figures a report or a metrics.csv row needs."""
    return {"macro_f1": macro_f1(y_true, y_pred), "accuracy": accuracy(y_true, y_pred), **head_scores(y_true, y_pred)}


def confusion(y_true, y_pred, num_classes: int = NUM_CLASSES) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


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


def paired_person_bootstrap(y_true, predictions: dict, persons, reference: str, n_resamples: int = 1000,
                            seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Each run's macro-F1 gap to `reference` on the same photos: (gap, 5th, 95th percentile).

    The holdout's persons are drawn with replacement, all of a person's photos together, as a
    person's seven photos are not independent; every run is scored on the same draw, so what the
    runs share (which persons are hard) cancels and only their difference is left to chance.
    """
    y_true, persons = np.asarray(y_true), np.asarray(persons)
    names = list(predictions)
    stacked = np.stack([np.asarray(predictions[name]) for name in names])
    base = names.index(reference)
    _, person_index = np.unique(persons, return_inverse=True)
    rows_of = np.split(np.argsort(person_index, kind="stable"), np.cumsum(np.bincount(person_index))[:-1])
    rng = np.random.default_rng(seed)
    gaps = np.empty((n_resamples, len(names)))
    for draw in range(n_resamples):
        rows = np.concatenate([rows_of[i] for i in rng.integers(0, len(rows_of), len(rows_of))])
        f1 = batch_macro_f1(y_true[rows], stacked[:, rows])
        gaps[draw] = f1 - f1[base]
    full = batch_macro_f1(y_true, stacked)
    full = full - full[base]
    low, high = np.percentile(gaps, [5, 95], axis=0)
    return {name: (float(full[i]), float(low[i]), float(high[i])) for i, name in enumerate(names)}
