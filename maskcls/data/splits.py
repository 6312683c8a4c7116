"""Person-grouped, stratified splits: no person is ever on both sides.

Stratified by gender x age group (6 strata); grouped by id, so folders that share an id stay
together. Deterministic for a seed.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from ..errors import MaskclsError

log = logging.getLogger(__name__)


def person_folds(persons: pd.DataFrame, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..n_folds-1) for each person row."""
    if n_folds < 2:
        raise MaskclsError(f"folds={n_folds}: need at least 2 folds")
    if n_folds > len(persons):
        raise MaskclsError(f"folds={n_folds}: only {len(persons)} persons; use fewer folds")
    strata = persons["gender_code"].to_numpy() * 3 + persons["age_group"].to_numpy()
    if np.bincount(strata).max() < n_folds:
        raise MaskclsError(f"folds={n_folds}: no gender x age group has {n_folds} persons ({len(persons)} in all); "
                           "use fewer folds (or a larger data.val_fraction), or more persons")
    smallest = np.bincount(strata)[np.unique(strata)].min()
    if smallest < n_folds:
        log.warning("%d folds: the smallest gender x age group has %d person(s), so some folds hold none of it; "
                    "the folds are stratified as far as the persons allow", n_folds, smallest)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of = np.full(len(persons), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)  # said above, in our words
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(persons)), strata, groups=persons["id"].to_numpy())):
            fold_of[held_out] = fold
    return fold_of


def holdout_split(persons: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, val) over person rows; val is one fold of round(1/val_fraction).
    val_fraction=0 trains on every person (no validation)."""
    if val_fraction == 0:
        return np.ones(len(persons), dtype=bool), np.zeros(len(persons), dtype=bool)
    if not 0 < val_fraction < 0.5:
        raise MaskclsError(f"val_fraction={val_fraction}: must be 0 (train on every person) or between 0 and 0.5")
    folds = person_folds(persons, max(2, round(1 / val_fraction)), seed)
    val = folds == 0
    return ~val, val


def images_of(images: pd.DataFrame, persons: pd.DataFrame, person_mask: np.ndarray) -> pd.DataFrame:
    """The photo rows of the selected persons."""
    return images[images["path"].isin(set(persons.loc[person_mask, "path"]))].reset_index(drop=True)
