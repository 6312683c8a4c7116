"""(images, 18) probability arrays: the checks every consumer makes, and the split into the
mask and the gender x age marginals that the vote and person pooling work on."""
from __future__ import annotations

import numpy as np

from ..errors import MaskclsError
from ..labels import HEADS, NUM_CLASSES

# Probabilities are clipped before the log so a hard 0 becomes a large finite penalty, not -inf.
PROB_FLOOR = 1e-12
N_MASK = HEADS["mask"]
N_GENDER_AGE = HEADS["gender"] * HEADS["age"]


def check_probs(probs, name: str = "probs") -> np.ndarray:
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


def log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, PROB_FLOOR, None))


def mask_and_gender_age(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (N,3) mask and (N,6) gender x age marginals of (N,18) probabilities."""
    # class = mask*6 + (gender*3 + age), so axis 1 is the mask and axis 2 the gender x age cell.
    joint = probs.reshape(len(probs), N_MASK, N_GENDER_AGE)
    joint = joint / np.clip(joint.sum(axis=(1, 2), keepdims=True), PROB_FLOOR, None)
    return joint.sum(axis=2), joint.sum(axis=1)


def joint_probs(mask_marginal: np.ndarray, gender_age: np.ndarray) -> np.ndarray:
    """(N,18) probabilities from the two marginals, taken as independent."""
    return (mask_marginal[:, :, None] * gender_age[:, None, :]).reshape(len(mask_marginal), NUM_CLASSES)
