"""Persons in an eval set: photos grouped by who is in them, and one gender and age per person.

The eval photos carry no person id, but each person has 7 of them. Each photo gets a small
standardised colour thumbnail of what a mask never covers: the photo's top part (hair,
forehead, eyes and background) for tight photos, the eye band of the eye-aligned face chip when
the members crop faces, since the scene around a face changes from photo to photo. A
`PersonProjection`, fitted by `maskcls fit` on the train persons (linear discriminant analysis,
a train person's 7 photos as one class), then keeps what tells persons apart and drops what
changes between one person's photos (scale, blur, noise, lighting, the mask's edge). The photos
cluster into N/7 even-sized groups, and `person_consistency` gives each person's photos one
gender x age distribution, read mostly from the photos that show the face: the unmasked one,
then the one with the mask worn wrong.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from ..data.layout import leave_out_damaged, load_train
from ..errors import MaskclsError
from ..faces import DetectorSettings, align_face, crop_face, face_boxes
from ..fileio import atomic_write
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
# In the face chip at margin 0, dlib's framing puts the eyes at a fifth of the side: the band,
# the chip's top, takes in brows, eyes and temples and stops above the nose, where a worn mask
# begins. Rows, then columns, as fractions of the chip's side; the thumbnail keeps its shape.
# Chosen with the projection below on the wide stand-in's train persons (fitted on 800, grouping
# the other 200); the README's benchmark section has the figures.
PERSON_EYE_BAND = ((0.0, 0.45), (0.0, 1.0))
PERSON_BAND_THUMB = (24, 12)  # width, height
# Each embedding in full: a projection fitted on one way of making them is refused on another.
EMBEDDINGS = {
    "photo-top": f"photo-top {PERSON_TOP_FRACTION} {PERSON_THUMB_SIDE}x{PERSON_THUMB_SIDE}",
    "eye-band": f"eye-band rows {PERSON_EYE_BAND[0]} columns {PERSON_EYE_BAND[1]} {PERSON_BAND_THUMB[0]}x{PERSON_BAND_THUMB[1]}",
}
# The projection keeps this many discriminant directions (fewer where there are fewer persons),
# and shrinks the within-person covariance a little towards its diagonal, which the few photos
# per person cannot estimate alone.
PROJECTION_COMPONENTS = 64
PROJECTION_SHRINKAGE = 0.05
PROJECTION_FILE = "persons.npz"
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


def person_embedding(file, face=None) -> np.ndarray:
    """A small standardised colour thumbnail of what a mask never covers: the photo's top part,
    or, in a wide photo, the eye band of the face chip around `face` (a detected face)."""
    image = read_rgb(file)
    part, size = image[: max(1, int(image.shape[0] * PERSON_TOP_FRACTION))], (PERSON_THUMB_SIDE, PERSON_THUMB_SIDE)
    if face is not None:
        chip = align_face(image, face.landmarks, 0.0) if face.landmarks is not None else crop_face(image, face.box, 0.0)
        (top, bottom), (left, right) = PERSON_EYE_BAND
        side = chip.shape[0]
        band = chip[int(side * top) : max(int(side * top) + 1, int(side * bottom)), int(side * left) : max(int(side * left) + 1, int(side * right))]
        size = PERSON_BAND_THUMB  # every face's embedding has the same length, a fallback's too
        if band.std() > 1:  # a face at the photo's edge can leave only padding in the band: keep the photo's top then
            part = band
    thumb = cv2.resize(part, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb -= thumb.mean(axis=(0, 1), keepdims=True)  # exposure and white balance differ between shots
    return (thumb / (thumb.std() + 1e-6)).ravel()


def person_embeddings(files, faces=None) -> tuple[np.ndarray, str]:
    """Every photo's `person_embedding` (of its main face, when `faces` gives them), and which
    embedding that is, a key of EMBEDDINGS."""
    if faces is None:
        return np.stack([person_embedding(f) for f in files]), "photo-top"
    return np.stack([person_embedding(f, face) for f, face in zip(files, faces, strict=True)]), "eye-band"


@dataclass(frozen=True)
class PersonProjection:
    """A linear map of person embeddings that keeps what tells persons apart: centred on the
    train photos' mean, times the discriminant directions fitted on train persons."""

    embedding: str  # the embedding it maps, in full (a value of EMBEDDINGS)
    mean: np.ndarray  # (dims,)
    directions: np.ndarray  # (dims, components)
    persons: int  # how many train persons it was fitted on

    @property
    def kind(self) -> str:
        return self.embedding.split()[0]

    def fits(self, kind: str) -> bool:
        """Whether it maps embeddings of this kind, made as this version of maskcls makes them."""
        return EMBEDDINGS.get(kind) == self.embedding

    def __call__(self, embeddings: np.ndarray, kind: str) -> np.ndarray:
        if kind != self.kind:
            raise MaskclsError(f"person projection: fitted on {self.kind!r} embeddings, given {kind!r} ones; "
                               "the members' face crop changed since the fit: rerun `maskcls fit` to fit it again")
        if not self.fits(kind) or embeddings.shape[1] != len(self.mean):
            raise MaskclsError(f"person projection: fitted on embeddings made otherwise ({self.embedding}, {len(self.mean)} values) "
                               f"than today's ({EMBEDDINGS.get(kind)}, {embeddings.shape[1]} values); rerun `maskcls fit` to fit it again")
        return (embeddings - self.mean) @ self.directions

    def save(self, path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, embedding=np.array(self.embedding), mean=self.mean, directions=self.directions, persons=np.array(self.persons))
        with atomic_write(path, "wb", what="person projection") as handle:
            handle.write(buffer.getvalue())

    @classmethod
    def load(cls, path) -> PersonProjection:
        try:
            with np.load(path) as stored:
                projection = cls(str(stored["embedding"]), stored["mean"], stored["directions"], int(stored["persons"]))
        except PermissionError:
            raise  # the file can't be read, which is not the same as damaged
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise MaskclsError(f"{path}: not a person projection ({str(exc).splitlines()[0][:80]}); "
                               "delete it and rerun `maskcls fit` to fit it again") from None
        if projection.kind not in EMBEDDINGS or projection.directions.shape[0] != len(projection.mean):
            raise MaskclsError(f"{path}: not a person projection (embedding {projection.embedding!r}, shapes "
                               f"{projection.mean.shape} and {projection.directions.shape}); delete it and rerun `maskcls fit`")
        return projection


def fit_person_projection(embeddings, persons, kind: str, components: int = PROJECTION_COMPONENTS,
                          shrinkage: float = PROJECTION_SHRINKAGE) -> PersonProjection | None:
    """Linear discriminant analysis of the embeddings with each person as a class; None where
    there are too few persons with several photos to tell anything apart."""
    embeddings, persons = np.asarray(embeddings, dtype=np.float64), np.asarray(persons)
    if kind not in EMBEDDINGS:
        raise MaskclsError(f"kind={kind!r}: use one of {', '.join(EMBEDDINGS)}")
    if embeddings.ndim != 2 or len(embeddings) != len(persons):
        raise MaskclsError(f"embeddings: expected one (dims,) row per person id ({len(persons)}), got shape {embeddings.shape}")
    names, counts = np.unique(persons, return_counts=True)
    if (counts > 1).sum() < 2:
        return None
    components = min(components, len(names) - 1, embeddings.shape[1])
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage, n_components=components).fit(embeddings, persons)
    return PersonProjection(EMBEDDINGS[kind], embeddings.mean(axis=0), lda.scalings_[:, :components], len(names))


def person_groups(files, faces=None, projection: PersonProjection | None = None) -> np.ndarray:
    """Person ids for eval photos: N/7 even-sized clusters of their person embeddings (of the
    face crops, when `faces` gives each photo's main face), mapped by `projection` when given."""
    embeddings, kind = person_embeddings(files, faces)
    if projection is not None:
        embeddings = projection(embeddings, kind)
    return group_by_embedding(embeddings, n_groups=max(1, round(len(files) / PHOTOS_PER_PERSON)), linkage="ward")


def _cropping(preprocessing: list[dict]) -> list[dict]:
    return [pre for pre in preprocessing if pre.get("crop", "none") != "none"]


def main_faces(preprocessing: list[dict], files):
    """The main face of each photo when the members crop faces (from the detection cache their
    training or prediction filled), so persons are grouped by face, not by the scene around it."""
    cropping = _cropping(preprocessing)
    return face_boxes(files, DetectorSettings.from_dict(cropping[0]["detector"])) if cropping else None


def embedding_kind(preprocessing: list[dict]) -> str:
    """Which person embedding eval photos read by members with this preprocessing are grouped on."""
    return "eye-band" if _cropping(preprocessing) else "photo-top"


def train_person_projection(data, preprocessing: list[dict]) -> PersonProjection | None:
    """The projection for eval photos read by members with this preprocessing, fitted on the
    train persons of the dataset `data` (each person folder one person)."""
    train = leave_out_damaged(load_train(data), "skip")
    files = train.images["file"].tolist()
    embeddings, kind = person_embeddings(files, main_faces(preprocessing, files))
    return fit_person_projection(embeddings, train.images["path"].to_numpy(), kind)


def load_person_projection(folder) -> PersonProjection | None:
    """The projection a fit wrote in `folder`, or None where it wrote none."""
    path = Path(folder) / PROJECTION_FILE
    return PersonProjection.load(path) if path.is_file() else None


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
