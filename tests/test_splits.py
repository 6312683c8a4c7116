"""Person-grouped, stratified splits."""
import numpy as np
import pandas as pd
import pytest

from maskcls.data.splits import holdout_split, images_of, person_folds
from maskcls.errors import MaskclsError


def synthetic_persons(n=600, seed=0):
    rng = np.random.default_rng(seed)
    persons = pd.DataFrame({
        "id": [f"{i:06d}" for i in range(n)],
        "path": [f"{i:06d}_x" for i in range(n)],
        "gender_code": rng.choice(2, n, p=[0.4, 0.6]),
        "age_group": rng.choice(3, n, p=[0.45, 0.45, 0.1]),
    })
    persons.loc[5, "id"] = persons.loc[4, "id"]  # a shared id, as in the real data
    return persons


def test_folds_group_persons_and_balance_strata():
    persons = synthetic_persons()
    folds = person_folds(persons, 5, seed=1)
    assert set(folds) == set(range(5))
    assert folds[4] == folds[5]  # folders sharing an id stay on one side
    for _, group in persons.assign(fold=folds).groupby("id"):
        assert group["fold"].nunique() == 1
    strata = persons["gender_code"] * 3 + persons["age_group"]
    overall = np.bincount(strata, minlength=6) / len(persons)
    for fold in range(5):
        share = np.bincount(strata[folds == fold], minlength=6) / (folds == fold).sum()
        assert np.abs(share - overall).max() < 0.03
    assert np.abs(np.bincount(folds) - len(persons) / 5).max() <= 3


def test_splits_are_deterministic_by_seed():
    persons = synthetic_persons()
    assert (person_folds(persons, 5, 7) == person_folds(persons, 5, 7)).all()
    assert (person_folds(persons, 5, 7) != person_folds(persons, 5, 8)).any()


def test_holdout_never_shares_a_person():
    persons = synthetic_persons()
    train, val = holdout_split(persons, 0.2, seed=0)
    assert not (train & val).any() and (train | val).all()
    assert 0.17 < val.mean() < 0.23
    images = pd.DataFrame({"path": np.repeat(persons["path"], 7).to_numpy(), "photo": np.tile(range(7), len(persons))})
    train_images, val_images = images_of(images, persons, train), images_of(images, persons, val)
    assert not set(train_images["path"]) & set(val_images["path"])
    assert len(train_images) + len(val_images) == len(images)


@pytest.mark.parametrize("folds,message", [(1, "need at least 2 folds"), (10_000, "only 600 persons")])
def test_bad_fold_counts(folds, message):
    with pytest.raises(MaskclsError, match=message):
        person_folds(synthetic_persons(), folds)


def test_a_group_smaller_than_the_folds_is_said_once_in_our_words(caplog, recwarn):
    persons = synthetic_persons(60)
    persons.loc[persons["age_group"] == 2, "age_group"] = 1
    persons.loc[0, ["gender_code", "age_group"]] = (0, 2)  # one older man: a group of one person
    with caplog.at_level("WARNING", logger="maskcls"):
        folds = person_folds(persons, 5)
    assert set(folds) == set(range(5))
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("maskcls")]
    assert len(lines) == 1 and "smallest gender x age group has 1 person" in lines[0], lines
    assert not [w for w in recwarn if "least populated" in str(w.message)]  # not sklearn's own warning as well
    caplog.clear()
    with caplog.at_level("WARNING", logger="maskcls"):
        person_folds(synthetic_persons(), 5)
    assert not caplog.records  # every group large enough: nothing to say
