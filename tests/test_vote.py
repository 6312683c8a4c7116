import numpy as np
import pytest

from maskcls.errors import MaskclsError
from maskcls.infer.vote import fit_soft_weights, hard_vote, simplex_grid, soft_vote
from maskcls.metrics import macro_f1


def rows(*values):
    return np.array(values, dtype=np.float64)


def test_soft_vote_weights_are_normalised():
    first = rows([0.8, 0.2, 0.0], [0.1, 0.1, 0.8])
    second = rows([0.2, 0.8, 0.0], [0.5, 0.5, 0.0])
    # Weights 3:1 behave like 0.75/0.25.
    expected = 0.75 * first + 0.25 * second
    np.testing.assert_allclose(soft_vote([first, second], weights=[3, 1]), expected)
    np.testing.assert_allclose(soft_vote(np.stack([first, second])), (first + second) / 2)


def test_soft_vote_rejects_bad_weights():
    member = rows([0.5, 0.5])
    with pytest.raises(MaskclsError, match="non-negative"):
        soft_vote([member, member], weights=[1, -1])
    with pytest.raises(MaskclsError, match="expected 2 weights"):
        soft_vote([member, member], weights=[1, 1, 1])


def test_hard_vote_majority_beats_confident_minority():
    # Two members say class 0 weakly; one says class 2 very confidently: the majority wins.
    members = [rows([0.5, 0.2, 0.3]), rows([0.4, 0.3, 0.3]), rows([0.0, 0.0, 1.0])]
    assert hard_vote(members).tolist() == [0]
    # The mean would have picked class 2, so this really is a vote.
    assert soft_vote(members).argmax(axis=1).tolist() == [2]


def test_hard_vote_tie_goes_to_highest_mean_probability():
    # Votes 0, 0, 1, 1: a real tie. Class 2 has the highest mean but no vote, so it must not win.
    members = [
        rows([0.40, 0.21, 0.39]),
        rows([0.40, 0.21, 0.39]),
        rows([0.20, 0.41, 0.39]),
        rows([0.10, 0.51, 0.39]),
    ]
    assert [int(np.argmax(member)) for member in members] == [0, 0, 1, 1]
    np.testing.assert_allclose(np.mean(members, axis=0), [[0.275, 0.335, 0.39]])
    assert hard_vote(members).tolist() == [1]
    # Same votes, but now class 0 has the higher mean of the two tied classes.
    members = [
        rows([0.51, 0.00, 0.49]),
        rows([0.51, 0.00, 0.49]),
        rows([0.02, 0.50, 0.48]),
        rows([0.02, 0.50, 0.48]),
    ]
    assert [int(np.argmax(member)) for member in members] == [0, 0, 1, 1]
    np.testing.assert_allclose(np.mean(members, axis=0), [[0.265, 0.25, 0.485]])
    assert hard_vote(members).tolist() == [0]


def test_hard_vote_works_row_by_row():
    first = rows([0.9, 0.1, 0.0], [0.2, 0.7, 0.1])
    second = rows([0.6, 0.4, 0.0], [0.1, 0.1, 0.8])
    third = rows([0.1, 0.8, 0.1], [0.1, 0.1, 0.8])
    assert hard_vote([first, second, third]).tolist() == [0, 2]


def test_shape_mismatch_is_an_error():
    with pytest.raises(MaskclsError, match=r"member 1: shape \(3, 18\) differs from member 0's \(2, 18\)"):
        soft_vote([np.full((2, 18), 1 / 18), np.full((3, 18), 1 / 18)])
    with pytest.raises(MaskclsError, match="member 1"):
        hard_vote([np.full((2, 18), 1 / 18), np.full((2, 17), 1 / 17)])


def test_simplex_grid_enumerates_every_point_once():
    grid = simplex_grid(3, 10)
    assert grid.shape == (66, 3)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    assert np.all(grid >= 0)
    assert len({tuple(np.round(point * 10).astype(int)) for point in grid}) == 66


def synthetic_members(seed=0, n=1800, classes=18):
    """Three members of different quality: a good one, a weak one and a noise one."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    members = []
    for signal in (2.5, 1.0, 0.0):
        logits = rng.normal(size=(n, classes))
        logits[np.arange(n), y] += signal
        probs = np.exp(logits)
        members.append(probs / probs.sum(axis=1, keepdims=True))
    return members, y


def test_fit_soft_weights_is_a_simplex_vector_not_worse_than_equal():
    members, y = synthetic_members()
    weights = fit_soft_weights(members, y)
    assert weights.shape == (3,)
    assert np.all(weights >= 0)
    assert weights.sum() == pytest.approx(1.0)
    fitted_f1 = macro_f1(y, soft_vote(members, weights).argmax(axis=1))
    equal_f1 = macro_f1(y, soft_vote(members).argmax(axis=1))
    assert fitted_f1 >= equal_f1
    # The pure-noise member should get (almost) nothing, and the strong one the most.
    assert weights[2] <= 0.1
    assert weights[0] == weights.max()


def test_fit_soft_weights_coarsens_grid_for_many_members():
    members, y = synthetic_members(n=360)
    weights = fit_soft_weights(members * 3, y, max_candidates=200)
    assert weights.shape == (9,)
    assert weights.sum() == pytest.approx(1.0)
