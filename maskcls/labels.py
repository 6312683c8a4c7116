"""The 18-class label: class = mask*6 + gender*3 + age_group."""
from __future__ import annotations

import numpy as np

NUM_CLASSES = 18
MASK_NAMES = ("wear", "incorrect", "not wear")
GENDER_NAMES = ("male", "female")
AGE_NAMES = ("<30", "30-59", ">=60")
HEADS = {"mask": 3, "gender": 2, "age": 3}

# The competition's photo names per person folder and the mask state each one shows.
PHOTO_MASK = {
    "mask1": 0, "mask2": 0, "mask3": 0, "mask4": 0, "mask5": 0,
    "incorrect_mask": 1,
    "normal": 2,
}
GENDER_CODES = {"male": 0, "female": 1}
DEFAULT_AGE_CUTS = (30, 60)
AGE_CAP = 60  # the competition's train.csv never says more than 60: "60" means 60 or older


def age_group(age, cuts=DEFAULT_AGE_CUTS):
    """Age group 0/1/2 for `age` (scalar or array). Competitors move the upper cut (57, 58)."""
    lo, hi = cuts
    if not lo < hi:
        raise ValueError(f"age cuts must be increasing, got {cuts}")
    return np.digitize(np.asarray(age), [lo, hi]).astype(np.int64) if np.ndim(age) else int(np.digitize(age, [lo, hi]))


def encode(mask, gender, age):
    """18-class label from mask (0-2), gender (0-1) and age group (0-2); works on arrays."""
    return np.asarray(mask) * 6 + np.asarray(gender) * 3 + np.asarray(age) if np.ndim(mask) else int(mask) * 6 + int(gender) * 3 + int(age)


def decode(label):
    """(mask, gender, age_group) from the 18-class label; works on arrays."""
    label = np.asarray(label) if np.ndim(label) else int(label)
    return label // 6, (label // 3) % 2, label % 3


def class_name(label: int) -> str:
    m, g, a = decode(label)
    return f"{MASK_NAMES[m]}/{GENDER_NAMES[g]}/{AGE_NAMES[a]}"
