"""The competition metric: macro-F1 over all 18 labels (sklearn, zero_division=0), then accuracy."""
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
    for (name, n), t, p in zip(HEADS.items(), parts_true, parts_pred):
        out[f"{name}_f1"] = macro_f1(t, p, n)
        out[f"{name}_acc"] = accuracy(t, p)
    return out


def score(y_true, y_pred) -> dict[str, float]:
    """All the figures a report or a metrics.csv row needs."""
    return {"macro_f1": macro_f1(y_true, y_pred), "accuracy": accuracy(y_true, y_pred), **head_scores(y_true, y_pred)}


def confusion(y_true, y_pred, num_classes: int = NUM_CLASSES) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))
