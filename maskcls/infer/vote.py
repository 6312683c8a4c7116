"""Combining several models' (N, classes) probability arrays: soft vote, hard vote, fitted
weights, a separate vote for the mask, and person pooling (`combine` applies a recipe's whole vote)."""
from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np

from ..errors import MaskclsError
from ..metrics import batch_macro_f1
from .offsets import apply_offsets
from .persons import person_consistency
from .probs import PROB_FLOOR, check_labels, joint_probs, mask_and_gender_age

# Weight-grid resolution: 0.1 steps. With more members the grid is coarsened until it has at
# most this many points.
DEFAULT_WEIGHT_STEPS = 10
MAX_WEIGHT_CANDIDATES = 2000
# Candidates mixed per batch: the (batch, N, classes) mixture stays small enough to sit in cache.
SCORING_BATCH = 16
# F1 values this close are the same score reached through different counts.
F1_DECIMALS = 12


def _stack(probs) -> np.ndarray:
    """(members, N, classes) float array from a list of (N, classes) arrays or one 3-D array."""
    members = [np.asarray(member, dtype=np.float64) for member in probs]
    if not members:
        raise MaskclsError("ensemble: no member probabilities given; pass one (images, classes) array per model")
    for index, member in enumerate(members):
        if member.ndim != 2:
            raise MaskclsError(f"ensemble member {index}: expected an (images, classes) array, got shape {member.shape}")
        if member.shape != members[0].shape:
            raise MaskclsError(
                f"ensemble member {index}: shape {member.shape} differs from member 0's {members[0].shape}; "
                "every model must predict the same images in the same order"
            )
    return np.stack(members)


def _check_weights(weights, n_members: int) -> np.ndarray:
    if weights is None:
        return np.full(n_members, 1.0 / n_members)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n_members,):
        raise MaskclsError(f"ensemble weights: expected {n_members} weights, one per member, got shape {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise MaskclsError(f"ensemble weights {weights.tolist()}: must be non-negative with a positive sum")
    return weights / weights.sum()


def soft_vote(probs, weights=None) -> np.ndarray:
    """Weighted mean of the members' probabilities; weights are normalised to sum to 1 (default equal)."""
    stacked = _stack(probs)
    return np.tensordot(_check_weights(weights, len(stacked)), stacked, axes=1)


def hard_vote(probs) -> np.ndarray:
    """(N,) labels: the class most members' argmax picks; a tie goes to the tied class with the highest mean probability."""
    stacked = _stack(probs)
    n_classes = stacked.shape[2]
    votes = np.argmax(stacked, axis=2)
    counts = np.eye(n_classes, dtype=np.int64)[votes].sum(axis=0)
    tied = counts == counts.max(axis=1, keepdims=True)
    return np.argmax(np.where(tied, stacked.mean(axis=0), -np.inf), axis=1)


def simplex_grid(n_members: int, steps: int) -> np.ndarray:
    """Every weight vector with entries in multiples of 1/steps that sums to 1, (candidates, n_members)."""
    # Stars and bars: choosing n_members-1 bar positions among steps+n_members-1 slots.
    bars = np.array(list(combinations(range(steps + n_members - 1), n_members - 1)), dtype=np.int64)
    bars = bars.reshape(len(bars), n_members - 1)
    edges = np.hstack([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), steps + n_members - 1)])
    return (np.diff(edges, axis=1) - 1) / steps


def fit_soft_weights(oof_probs_list, y, steps: int = DEFAULT_WEIGHT_STEPS, max_candidates: int = MAX_WEIGHT_CANDIDATES) -> np.ndarray:
    """Soft-vote weights (non-negative, summing to 1) that maximise out-of-fold macro-F1.

    Exhaustive search over a simplex grid (steps of 1/steps, coarsened for many members so at
    most `max_candidates` points), plus the equal-weight vector, so the result never scores
    below equal weights on this data. Macro-F1 is a step function of the weights, so many
    candidates tie; ties go to the lowest log loss, which prefers smooth, well-calibrated
    mixtures over an arbitrary corner of the plateau. A grid was chosen over a gradient
    optimiser because it optimises the metric itself and cannot get stuck with few members.
    """
    stacked = _stack(oof_probs_list)
    n_members, n_rows, n_classes = stacked.shape
    if n_rows == 0:
        raise MaskclsError("fit_soft_weights: the out-of-fold probabilities have no rows; nothing to fit")
    y = check_labels(y, n_rows, n_classes)
    if n_members == 1:
        return np.ones(1)
    while steps > 1 and comb(steps + n_members - 1, n_members - 1) > max_candidates:
        steps -= 1
    candidates = np.vstack([np.full((1, n_members), 1.0 / n_members), simplex_grid(n_members, steps)])
    # One matrix product mixes a whole batch of candidates: (batch, members) @ (members, N*classes).
    flat_members = stacked.reshape(n_members, n_rows * n_classes)
    f1 = np.concatenate([
        batch_macro_f1(y, np.argmax((batch @ flat_members).reshape(len(batch), n_rows, n_classes), axis=2), n_classes)
        for batch in np.array_split(candidates, -(-len(candidates) // SCORING_BATCH))
    ])
    # The mixture's probability of the true class is linear in the weights: one matrix product.
    true_class_probs = stacked[:, np.arange(n_rows), y]
    log_loss = -np.mean(np.log(np.clip(candidates @ true_class_probs, PROB_FLOOR, None)), axis=1)
    best = np.lexsort((log_loss, -np.round(f1, F1_DECIMALS)))[0]
    return candidates[best]


def combine(members_probs: list[np.ndarray], vote, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) from the members' probabilities under `vote` (a recipe.Vote);
    `groups` (person ids) make each person's photos agree on gender and age. The vote's
    `mask_weights` (soft voting) give the mask its own vote, e.g. only the members that see the
    photo at full size; gender x age keep its `weights`."""
    if vote.method == "hard":
        if vote.mask_weights is not None:
            raise MaskclsError("mask weights apply to soft voting; use --method soft")
        if groups is not None:
            members_probs = [person_consistency(p, groups) for p in members_probs]
        return hard_vote(members_probs), soft_vote(members_probs, vote.weights)
    probs = soft_vote(members_probs, vote.weights)
    if vote.mask_weights is not None:
        probs = joint_probs(mask_and_gender_age(soft_vote(members_probs, vote.mask_weights))[0], mask_and_gender_age(probs)[1])
    if groups is not None:
        # After the vote, so each photo's weight in its person reflects the ensemble's confidence.
        probs = person_consistency(probs, groups)
    return (apply_offsets(probs, vote.offsets) if vote.offsets is not None else probs.argmax(1)), probs
