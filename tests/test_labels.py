import numpy as np
import pytest

from maskcls.labels import age_group, class_name, decode, encode
from maskcls.metrics import head_scores, macro_f1


def test_encode_decode_round_trip_all_classes():
    for label in range(18):
        mask, gender, age = decode(label)
        assert encode(mask, gender, age) == label
    labels = np.arange(18)
    assert (encode(*decode(labels)) == labels).all()
    assert encode(2, 1, 2) == 17 and encode(1, 0, 1) == 7
    assert class_name(7) == "incorrect/male/30-59"


@pytest.mark.parametrize("cuts,expected", [((30, 60), [0, 0, 1, 1, 1, 1, 2]), ((30, 58), [0, 0, 1, 1, 2, 2, 2])])
def test_age_group_cut_points_are_configurable(cuts, expected):
    ages = [18, 29, 30, 45, 58, 59, 60]
    assert age_group(np.array(ages), cuts).tolist() == expected
    assert [age_group(a, cuts) for a in ages] == expected


def test_age_cuts_must_increase():
    with pytest.raises(ValueError):
        age_group(40, (60, 30))


def test_macro_f1_counts_absent_labels_as_zero():
    # Two classes present and perfectly predicted: 2 of 18 labels at F1 1.
    assert macro_f1([0, 1], [0, 1]) == pytest.approx(2 / 18)
    scores = head_scores([0, 17], [0, 17])
    assert scores["mask_f1"] == pytest.approx(2 / 3) and scores["gender_acc"] == 1.0


def test_paired_person_bootstrap_gap_and_interval():
    from maskcls.metrics import paired_person_bootstrap

    rng = np.random.default_rng(0)
    persons = np.repeat(np.arange(120), 7)
    y = rng.integers(0, 18, len(persons))
    noisy = np.where(rng.random(len(y)) < 0.5, y, rng.integers(0, 18, len(y)))
    a_little_different = noisy.copy()
    flip = rng.choice(len(y), 10, replace=False)
    a_little_different[flip] = rng.integers(0, 18, 10)
    gaps = paired_person_bootstrap(y, {"noisy": noisy, "perfect": y, "other": a_little_different}, persons, "noisy", 300)
    assert gaps["noisy"] == (0.0, 0.0, 0.0)
    gap, low, high = gaps["perfect"]
    assert gap == pytest.approx(macro_f1(y, y) - macro_f1(y, noisy))
    assert 0 < low <= gap <= high
    gap, low, high = gaps["other"]
    assert gap == pytest.approx(macro_f1(y, a_little_different) - macro_f1(y, noisy))
    assert low < gap < high and high - low < 0.05
