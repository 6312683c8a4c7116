"""Persons in an eval set: photos grouped by who is in them, and one gender and age per person.

The eval photos carry no person id, but each person has 7 of them. Small thumbnails of the
photo's top part (hair, forehead, eyes and background: what a mask never covers) cluster into
N/7 even-sized groups. Gender and age are properties of a person, not of a photo, so
`person_consistency` then gives each person's photos one gender x age distribution, read mostly
from the photos that show the face: the unmasked one, then the one with the mask worn wrong.
"""
from __future__ import annotations

import cv2
import numpy as np
from sklearn.cluster import AgglomerativeClustering

from ..errors import MaskclsError
from ..faces import crop_face
from ..imageio import read_rgb
from ..labels import NUM_CLASSES
from .probs import N_GENDER_AGE, N_MASK, check_probs, joint_probs, log_probs, mask_and_gender_age

# How much a photo says about its person's gender and age, for (wear, incorrect, not wear): a
# masked face hides most of what shows age. Chosen on out-of-fold predictions of train persons
# grouped by the same clustering as eval photos; the README's benchmark section has the figures.
FACE_VISIBILITY_WEIGHTS = (1.0, 10.0, 30.0)
PHOTOS_PER_PERSON = 7
# The top part of a photo is above any mask, and it recovers persons far better than whole
# photos or backbone features do (the README's benchmark section has the figures).
PERSON_TOP_FRACTION = 0.35
PERSON_THUMB_SIDE = 12
PERSON_CROP_MARGIN = 0.3  # enough around the face to take in the hair
# A person's 7 photos hold the mask worn 5 times, worn wrong once and not worn once. Photos
# grouped into persons come close to those counts, photos grouped at random do not: a grouping
# whose groups lie at most this share of random groups' distance from them is kept. The limit
# sits well above where true persons lie even when the members misread one mask in ten, and
# below a grouping of wide scenes with a new background in every photo (the README's benchmark
# section has the figures).
PERSON_MASK_COUNTS = (5, 1, 1)
MAX_GROUPING_DISTANCE = 0.8
# The counts tell persons from random groups only where the members read the masks surely: the
# mean of each photo's most likely mask state's probability must reach this for the check to run.
MIN_MASK_CONFIDENCE = 0.8


def person_embedding(file, top_fraction: float = PERSON_TOP_FRACTION, face=None) -> np.ndarray:
    """A small standardised colour thumbnail of the photo's top part; in a wide photo, of the top
    part of the face crop around `face` (a detected face), since the scene around it changes."""
    image = read_rgb(file)
    top = image[: max(1, int(image.shape[0] * top_fraction))]
    if face is not None:
        crop = crop_face(image, face.box, PERSON_CROP_MARGIN)
        crop_top = crop[: max(1, int(crop.shape[0] * top_fraction))]
        if crop_top.std() > 1:  # a box at the photo's edge can leave only padding above the face: keep the photo's top then
            top = crop_top
    thumb = cv2.resize(top, (PERSON_THUMB_SIDE, PERSON_THUMB_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb -= thumb.mean(axis=(0, 1), keepdims=True)  # exposure and white balance differ between shots
    return (thumb / (thumb.std() + 1e-6)).ravel()


def person_groups(files, top_fraction: float = PERSON_TOP_FRACTION, faces=None) -> np.ndarray:
    """Person ids for eval photos: N/7 even-sized clusters of their top-part thumbnails (of the
    face crops, when `faces` gives each photo's main face)."""
    faces = [None] * len(files) if faces is None else faces
    embeddings = np.stack([person_embedding(f, top_fraction, face) for f, face in zip(files, faces, strict=True)])
    return group_by_embedding(embeddings, n_groups=max(1, round(len(files) / PHOTOS_PER_PERSON)), linkage="ward")


def grouping_distance(mask_probs, groups, shuffles: int = 20, seed: int = 0) -> float | None:
    """How far the groups' expected mask counts (their photos' summed wear / incorrect / not-wear
    probabilities) lie from a person's 5 / 1 / 1, as a share of how far the same groups lie
    with their photos shuffled among them: near 0 for persons, about 1 for a grouping that found
    none. None where shuffling cannot tell: a single group, or masks that leave every shuffle at
    the counts."""
    mask_probs, groups = np.asarray(mask_probs, dtype=np.float64), np.asarray(groups)
    _, groups = np.unique(groups, return_inverse=True)
    if groups.max(initial=0) < 1:
        return None

    def distance(ids) -> float:
        counts = np.zeros((groups.max() + 1, mask_probs.shape[1]))
        np.add.at(counts, ids, mask_probs)
        return float(np.abs(counts - np.asarray(PERSON_MASK_COUNTS)).sum(axis=1).mean())

    rng = np.random.default_rng(seed)
    shuffled = np.mean([distance(rng.permutation(groups)) for _ in range(shuffles)])
    return distance(groups) / shuffled if shuffled > 0 else None


def person_consistency(probs, groups, weighting: str = "information", face_weights=FACE_VISIBILITY_WEIGHTS) -> np.ndarray:
    """18-class probs where each person's photos share one gender x age distribution.

    Each photo keeps its own mask marginal; its gender x age marginal is replaced by the
    person's, a weighted mean of the photos' marginals, and the two are recombined as
    independent. A photo's weight is how much face it shows, `face_weights` for (wear,
    incorrect, not wear) averaged over its own mask probabilities, times, with
    weighting="information", how far its gender x age marginal is from uniform (log 6 minus its
    entropy), so one confident photo outweighs several unsure ones; "uniform" drops that factor.
    face_weights=(1, 1, 1) weighs all photos alike.
    """
    probs = check_probs(probs)
    if probs.shape[1] != NUM_CLASSES:
        raise MaskclsError(f"probs: person_consistency needs the {NUM_CLASSES}-class layout, got {probs.shape[1]} classes")
    groups = np.asarray(groups)
    if groups.shape != (len(probs),):
        raise MaskclsError(f"groups: expected one person id per row ({len(probs)}), got shape {groups.shape}")
    if weighting not in ("information", "uniform"):
        raise MaskclsError(f"weighting={weighting!r}: use 'information' or 'uniform'")
    face_weights = np.asarray(face_weights, dtype=np.float64)
    if face_weights.shape != (N_MASK,) or not np.all(face_weights > 0):
        raise MaskclsError(f"face_weights={face_weights.tolist()}: give {N_MASK} positive weights, for wear, incorrect and not wear")
    mask_marginal, gender_age = mask_and_gender_age(probs)
    weight = mask_marginal @ face_weights
    if weighting == "information":
        entropy = -np.sum(gender_age * log_probs(gender_age), axis=1)
        # The small floor keeps a person whose photos are all uniform from dividing by zero.
        weight = weight * (np.clip(np.log(N_GENDER_AGE) - entropy, 0.0, None) + 1e-6)
    _, person = np.unique(groups, return_inverse=True)
    n_persons = person.max() + 1 if len(person) else 0
    person_sum = np.zeros((n_persons, N_GENDER_AGE))
    np.add.at(person_sum, person, weight[:, None] * gender_age)
    person_gender_age = person_sum / person_sum.sum(axis=1, keepdims=True)
    return joint_probs(mask_marginal, person_gender_age[person])


def group_by_embedding(embeddings, threshold: float | None = None, n_groups: int | None = None, linkage: str = "average") -> np.ndarray:
    """Person ids from embeddings by agglomerative clustering.

    linkage="average" clusters on cosine distance (`threshold` is a cosine distance);
    linkage="ward" clusters the unit-normalised rows, which gives even-sized groups (`threshold`
    is then a Ward merge cost). Give exactly one of `threshold` or `n_groups`. Memory grows
    with N^2 (the pairwise distances).
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise MaskclsError(f"embeddings: expected an (images, dims) array, got shape {embeddings.shape}")
    if (threshold is None) == (n_groups is None):
        raise MaskclsError("group_by_embedding: give exactly one of threshold= or n_groups=")
    if linkage not in ("average", "ward"):
        raise MaskclsError(f"linkage={linkage!r}: use 'average' or 'ward'")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise MaskclsError("embeddings: some rows are all zeros, which have no cosine distance; drop or fix them")
    if len(embeddings) < 2:
        return np.zeros(len(embeddings), dtype=np.int64)
    if linkage == "ward":
        clustering = AgglomerativeClustering(n_clusters=n_groups, distance_threshold=threshold, linkage="ward")
        return clustering.fit_predict(embeddings / norms).astype(np.int64)
    clustering = AgglomerativeClustering(
        n_clusters=n_groups, distance_threshold=threshold, metric="cosine", linkage="average"
    )
    return clustering.fit_predict(embeddings).astype(np.int64)
