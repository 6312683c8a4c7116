import numpy as np
import pytest

from maskcls.errors import MaskclsError
from maskcls.infer.offsets import apply_offsets, cross_fit_offsets, fit_class_offsets, group_splits
from maskcls.infer.persons import MAX_GROUPING_DISTANCE, PersonProjection, fit_person_projection, group_by_embedding, grouping_distance, person_consistency
from maskcls.infer.prediction import checked_grouping
from maskcls.infer.recipe import Vote
from maskcls.infer.vote import combine
from maskcls.labels import decode, encode
from maskcls.metrics import batch_macro_f1, macro_f1

BIASED_CLASS = 17
BIAS = 2.0


def softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def biased_classifier(seed=0, n=3600, bias=BIAS):
    """Balanced classes with symmetric noise, so argmax is optimal by symmetry, then one class's
    log-probability pushed down by `bias`: the macro-F1-optimal offset for it is +bias."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 18
    logits = rng.normal(size=(n, 18))
    logits[np.arange(n), y] += 2.0
    logits[:, BIASED_CLASS] -= bias
    return softmax(logits), y


def test_batch_macro_f1_matches_the_competition_metric():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 18, 500)
    predictions = rng.integers(0, 18, (4, 500))
    predictions[1] = y
    predictions[2] = 0  # most classes neither predicted nor, for some, true
    y[y == 5] = 6  # class 5 absent from the truth
    expected = [macro_f1(y, row) for row in predictions]
    np.testing.assert_allclose(batch_macro_f1(y, predictions), expected, rtol=0, atol=1e-12)


def test_zero_offsets_are_argmax():
    probs, _ = biased_classifier(n=200)
    np.testing.assert_array_equal(apply_offsets(probs, np.zeros(18)), probs.argmax(axis=1))


def test_offsets_never_lose_on_fit_data():
    rng = np.random.default_rng(2)
    for _ in range(5):
        n = 300
        y = rng.integers(0, 18, n)
        logits = rng.normal(size=(n, 18)) * rng.uniform(0.5, 2.0)
        logits[np.arange(n), y] += rng.uniform(0.0, 2.0)
        probs = softmax(logits)
        offsets = fit_class_offsets(probs, y, n_rounds=2)
        assert macro_f1(y, apply_offsets(probs, offsets)) >= macro_f1(y, probs.argmax(axis=1))


def test_offsets_recover_a_known_bias():
    probs, y = biased_classifier()
    argmax_f1 = macro_f1(y, probs.argmax(axis=1))
    offsets = fit_class_offsets(probs, y)
    tuned_f1 = macro_f1(y, apply_offsets(probs, offsets))
    assert tuned_f1 > argmax_f1 + 0.02
    # Offsets are defined up to a common constant: compare with the other classes' median.
    others = np.median(np.delete(offsets, BIASED_CLASS))
    assert offsets[BIASED_CLASS] - others == pytest.approx(BIAS, abs=0.6)
    assert np.all(np.abs(np.delete(offsets, BIASED_CLASS) - others) < 1.0)


def test_unbiased_data_keeps_offsets_small():
    probs, y = biased_classifier(bias=0.0)
    offsets = fit_class_offsets(probs, y)
    assert np.abs(offsets - np.median(offsets)).max() < 1.0


def test_group_splits_keep_each_person_on_one_side():
    groups = np.repeat(np.arange(40), 7)
    splits = group_splits(groups, n_splits=5, seed=3)
    assert len(splits) == 5
    held_out = np.concatenate([held for _, held in splits])
    assert sorted(held_out.tolist()) == list(range(len(groups)))  # every row scored exactly once
    for fit_rows, held_rows in splits:
        assert not set(groups[fit_rows]) & set(groups[held_rows])


def test_group_splits_need_enough_persons():
    with pytest.raises(MaskclsError, match="only 3 persons"):
        group_splits(np.array([0, 0, 1, 2]), n_splits=5)


def test_cross_fit_offsets_is_honest_and_consistent(monkeypatch):
    probs, y = biased_classifier(n=1800)
    groups = np.arange(len(y)) // 6
    fitted_on = []
    import maskcls.infer.offsets as offsets

    real_fit = offsets.fit_class_offsets

    def recording_fit(fit_probs, fit_y, **kwargs):
        fitted_on.append(len(fit_y))
        return real_fit(fit_probs, fit_y, **kwargs)

    monkeypatch.setattr(offsets, "fit_class_offsets", recording_fit)
    result = cross_fit_offsets(probs, y, groups, n_splits=4, seed=0)
    # Four fold fits on about 3/4 of the rows, then one on all rows for the returned offsets.
    assert len(fitted_on) == 5 and fitted_on[-1] == len(y)
    assert all(size < len(y) for size in fitted_on[:-1])
    assert result["argmax_f1"] == pytest.approx(macro_f1(y, probs.argmax(axis=1)))
    assert result["gain"] == pytest.approx(result["tuned_f1"] - result["argmax_f1"])
    assert result["gain"] > 0.01  # the bias is real, so it carries to held-out persons
    np.testing.assert_array_equal(result["offsets"], real_fit(probs, y))


def test_cross_fit_tuned_f1_is_the_out_of_fold_score():
    probs, y = biased_classifier(n=900, seed=4)
    groups = np.arange(len(y)) // 9
    result = cross_fit_offsets(probs, y, groups, n_splits=3, seed=1)
    expected = np.empty_like(y)
    for fit_rows, held_rows in group_splits(groups, 3, 1):
        expected[held_rows] = apply_offsets(probs[held_rows], fit_class_offsets(probs[fit_rows], y[fit_rows]))
    assert result["tuned_f1"] == pytest.approx(macro_f1(y, expected))


def photo_probs(mask_marginal, gender_age_marginal):
    return (np.asarray(mask_marginal)[:, None] * np.asarray(gender_age_marginal)[None, :]).ravel()


def test_person_consistency_follows_the_confident_photo_and_keeps_masks():
    confident = np.array([0.01, 0.01, 0.01, 0.02, 0.90, 0.05])  # female 30-59
    unsure = np.array([0.22, 0.18, 0.15, 0.15, 0.15, 0.15])  # leans male <30
    masks = [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9], [0.7, 0.2, 0.1]]
    probs = np.stack([
        photo_probs(masks[0], confident),
        photo_probs(masks[1], unsure),
        photo_probs(masks[2], unsure),
        photo_probs(masks[3], unsure),
        photo_probs([0.9, 0.05, 0.05], unsure),  # another person, alone
    ])
    groups = np.array(["a", "a", "a", "a", "b"])
    assert len(set(decode(probs.argmax(axis=1))[2][:4].tolist())) > 1  # the photos disagree before

    adjusted = person_consistency(probs, groups)
    np.testing.assert_allclose(adjusted.sum(axis=1), 1.0)
    labels = adjusted.argmax(axis=1)
    mask, gender, age = decode(labels)
    np.testing.assert_array_equal(labels[:4], encode(np.array([0, 1, 2, 0]), 1, 1))
    assert mask.tolist() == [0, 1, 2, 0, 0]
    # Each photo's own mask marginal is untouched.
    np.testing.assert_allclose(adjusted.reshape(5, 3, 6).sum(axis=2)[:4], masks)
    # All photos of person "a" now share one gender x age distribution.
    gender_age = adjusted.reshape(5, 3, 6).sum(axis=1)
    np.testing.assert_allclose(gender_age[:4], np.broadcast_to(gender_age[0], (4, 6)))
    # A person with one photo is unchanged.
    np.testing.assert_allclose(adjusted[4], probs[4])


def test_information_weighting_beats_a_plain_mean():
    confident = np.array([0.01, 0.01, 0.01, 0.02, 0.90, 0.05])
    unsure = np.array([0.40, 0.12, 0.12, 0.12, 0.12, 0.12])
    probs = np.stack([photo_probs([1, 0, 0], confident)] + [photo_probs([1, 0, 0], unsure)] * 5)
    groups = np.zeros(6, dtype=int)
    # The plain mean lets five unsure photos outvote the confident one; information weighting does not.
    assert person_consistency(probs, groups, weighting="uniform").argmax(axis=1)[0] == encode(0, 0, 0)
    assert person_consistency(probs, groups).argmax(axis=1)[0] == encode(0, 1, 1)


def test_an_unmasked_photo_outweighs_masked_ones():
    # Equally confident photos that disagree: five masked ones say male <30, the unmasked one
    # says female 30-59. Gender and age show on the unmasked face, so it decides for the person.
    masked = np.array([0.85, 0.03, 0.03, 0.03, 0.03, 0.03])
    unmasked = np.array([0.03, 0.03, 0.03, 0.03, 0.85, 0.03])
    probs = np.stack([photo_probs([0.98, 0.01, 0.01], masked)] * 5 + [photo_probs([0.01, 0.01, 0.98], unmasked)])
    groups = np.zeros(6, dtype=int)
    labels = person_consistency(probs, groups).argmax(axis=1)
    np.testing.assert_array_equal(labels, encode(np.array([0, 0, 0, 0, 0, 2]), 1, 1))
    # Weighing every photo alike, the five masked photos outvote it.
    labels = person_consistency(probs, groups, face_weights=(1, 1, 1)).argmax(axis=1)
    np.testing.assert_array_equal(labels, encode(np.array([0, 0, 0, 0, 0, 2]), 0, 0))


def test_person_consistency_refuses_bad_face_weights():
    probs = np.full((2, 18), 1 / 18)
    for bad in ((1, 10), (1, 0, 30), (1, -1, 30)):
        with pytest.raises(MaskclsError, match="face_weights"):
            person_consistency(probs, [0, 0], face_weights=bad)


def test_group_by_embedding_finds_persons():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 16))
    person = np.repeat(np.arange(4), 7)
    embeddings = centres[person] + 0.05 * rng.normal(size=(28, 16))
    for found in (group_by_embedding(embeddings, n_groups=4), group_by_embedding(embeddings, threshold=0.3)):
        # Same partition as the true persons, whatever the cluster numbers.
        assert len(set(zip(found.tolist(), person.tolist(), strict=True))) == 4
        assert len(set(found.tolist())) == 4
    with pytest.raises(MaskclsError, match="exactly one"):
        group_by_embedding(embeddings)


def _photos_of(persons: int, rng, identity_dims: int = 8, noise_dims: int = 40):
    """Embeddings where a few dimensions say who it is and many more change from photo to photo,
    as a thumbnail's pixels change with scale, blur and lighting."""
    person = np.repeat(np.arange(persons), 7)
    identity = rng.normal(size=(persons, identity_dims))[person] + 0.2 * rng.normal(size=(len(person), identity_dims))
    return np.hstack([identity, 1.5 * rng.normal(size=(len(person), noise_dims))]), person


def test_a_projection_fitted_on_train_persons_groups_new_persons_that_raw_embeddings_do_not():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    train, train_person = _photos_of(60, rng)
    evaluation, person = _photos_of(20, rng)
    projection = fit_person_projection(train, train_person, "eye-band", components=8)
    assert projection.persons == 60 and projection.directions.shape == (48, 8)
    raw = group_by_embedding(evaluation, n_groups=20, linkage="ward")
    projected = group_by_embedding(projection(evaluation, "eye-band"), n_groups=20, linkage="ward")
    assert adjusted_rand_score(person, raw) < 0.3 and adjusted_rand_score(person, projected) > 0.8


def test_a_person_projection_round_trips_and_refuses_what_it_was_not_fitted_on(tmp_path):
    rng = np.random.default_rng(1)
    train, train_person = _photos_of(10, rng)
    projection = fit_person_projection(train, train_person, "photo-top")
    assert projection.directions.shape == (48, 9)  # at most one fewer than the persons
    assert fit_person_projection(train[:, :5], train_person, "photo-top").directions.shape == (5, 5)  # at most the embedding's length
    projection.save(tmp_path / "persons.npz")
    loaded = PersonProjection.load(tmp_path / "persons.npz")
    assert loaded.kind == "photo-top" and loaded.fits("photo-top") and loaded.persons == 10
    assert np.allclose(loaded(train, "photo-top"), projection(train, "photo-top"))
    with pytest.raises(MaskclsError, match="fitted on 'photo-top' embeddings, given 'eye-band'"):
        loaded(train, "eye-band")
    with pytest.raises(MaskclsError, match="fitted on embeddings made otherwise .* 48 values.* 12 values"):
        loaded(train[:, :12], "photo-top")
    older = PersonProjection("photo-top 0.5 16x16", loaded.mean, loaded.directions, 10)  # as another version made them
    assert not older.fits("photo-top")
    with pytest.raises(MaskclsError, match="made otherwise .*rerun `maskcls fit`"):
        older(train, "photo-top")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "persons.npz").read_bytes()[:100])
    with pytest.raises(MaskclsError, match="cut.npz: not a person projection"):
        PersonProjection.load(tmp_path / "cut.npz")


def test_too_few_persons_fit_no_projection():
    rng = np.random.default_rng(2)
    assert fit_person_projection(rng.normal(size=(7, 5)), np.zeros(7), "eye-band") is None  # one person
    assert fit_person_projection(rng.normal(size=(3, 5)), np.arange(3), "eye-band") is None  # one photo each
    with pytest.raises(MaskclsError, match="kind='pixels'"):
        fit_person_projection(rng.normal(size=(14, 5)), np.repeat([0, 1], 7), "pixels")


def test_mask_weights_take_the_mask_from_chosen_members_and_keep_the_vote_elsewhere():
    female_old = np.array([0.0, 0.0, 0.05, 0.0, 0.05, 0.9])
    male_young = np.array([0.9, 0.05, 0.05, 0.0, 0.0, 0.0])
    low_res = photo_probs([0.2, 0.7, 0.1], female_old)  # confident about gender x age, wrong about the mask
    full_res = photo_probs([0.9, 0.05, 0.05], male_young * 0.3 + female_old * 0.7)
    members = [low_res[None], low_res[None], full_res[None]]
    plain_labels, plain = combine(members, Vote())
    labels, probs = combine(members, Vote(mask_weights=[0, 0, 1]))
    assert decode(plain_labels)[0][0] == 1 and decode(labels)[0][0] == 0  # incorrect -> wear
    np.testing.assert_allclose(probs.reshape(3, 6).sum(0), plain.reshape(3, 6).sum(0))  # gender x age: the plain vote
    np.testing.assert_allclose(probs.reshape(3, 6).sum(1), [0.9, 0.05, 0.05])
    with pytest.raises(MaskclsError, match="mask weights apply to soft voting"):
        combine(members, Vote(method="hard", mask_weights=[0, 0, 1]))
    with pytest.raises(MaskclsError, match="expected 3 weights"):
        combine(members, Vote(mask_weights=[1, 0]))


def person_photos(persons=60, accuracy=0.97, seed=0):
    """18-class probs of `persons` x 7 photos (5 worn, 1 incorrect, 1 bare each), the mask read
    right at about `accuracy`, and the true person ids."""
    rng = np.random.default_rng(seed)
    masks = np.tile([0, 0, 0, 0, 0, 1, 2], persons)
    read = np.where(rng.random(len(masks)) < accuracy, masks, rng.integers(0, 3, len(masks)))
    logits = rng.normal(size=(len(masks), 18))
    logits[np.arange(len(masks)), read * 6 + rng.integers(0, 6, len(masks))] += 6.0
    return softmax(logits), np.repeat(np.arange(persons), 7)


def test_grouping_distance_tells_persons_from_random_groups():
    probs, persons = person_photos()
    mask = probs.reshape(-1, 3, 6).sum(2)
    assert grouping_distance(mask, persons) < MAX_GROUPING_DISTANCE / 2
    assert grouping_distance(person_photos(accuracy=0.9)[0].reshape(-1, 3, 6).sum(2), persons) < MAX_GROUPING_DISTANCE
    scrambled = np.random.default_rng(1).permutation(persons)
    assert MAX_GROUPING_DISTANCE < grouping_distance(mask, scrambled) < 1.2
    assert grouping_distance(mask[:7], persons[:7]) is None  # one group: every shuffle is the grouping itself


def test_a_grouping_that_found_no_persons_is_dropped_with_a_warning(caplog):
    probs, persons = person_photos()
    kept, distance = checked_grouping(persons, probs)
    assert kept is persons and distance < MAX_GROUPING_DISTANCE
    dropped, distance = checked_grouping(np.random.default_rng(1).permutation(persons), probs)
    assert dropped is None and distance > MAX_GROUPING_DISTANCE
    assert "each photo is predicted on its own" in caplog.text
    unsure = softmax(np.random.default_rng(2).normal(size=probs.shape))  # masks read unsurely: the check cannot tell, so it keeps them
    scrambled = np.random.default_rng(1).permutation(persons)
    kept, distance = checked_grouping(scrambled, unsure)
    assert kept is scrambled and distance is None
