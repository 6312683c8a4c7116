"""Read and validate the competition layout.

    train/train.csv            id,gender,race,age,path      (path = person folder name)
    train/images/<path>/{mask1..mask5,incorrect_mask,normal}.{jpg|jpeg|png}
    eval/info.csv              ImageID,ans
    eval/images/<ImageID>

Every problem a user can fix is a `MaskclsError` whose one line names the file, what is wrong
and what to do. Persons are keyed by folder (`path`); the real data has one id shared by two
folders, so a duplicate id is a warning, grouped together in splits, not an error.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MaskclsError
from ..imageio import truncation
from ..labels import DEFAULT_AGE_CUTS, GENDER_CODES, NUM_CLASSES, PHOTO_MASK, age_group, encode

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ["id", "gender", "race", "age", "path"]
EVAL_COLUMNS = ["ImageID", "ans"]
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}


@dataclass
class TrainData:
    """One row per person and one row per photo, with labels, ready for splitting."""

    root: Path
    persons: pd.DataFrame  # id, gender, race, age, path, gender_code, age_group
    images: pd.DataFrame  # file, path, id, photo, mask, gender, age_group, age, label
    skipped: dict = field(default_factory=dict)  # reason -> count of files ignored
    warnings: list = field(default_factory=list)


@dataclass
class EvalData:
    root: Path
    info: pd.DataFrame  # ImageID, ans, in the file's order
    files: list  # absolute image paths aligned with info rows
    warnings: list = field(default_factory=list)


# Ages above this are more likely a typing error than a person (the competition caps at 60).
AGE_PLAUSIBLE_MAX = 100
# Photos smaller than this on either side carry no face to classify.
MIN_PHOTO_SIDE = 16


def train_folder(root: Path) -> Path:
    """Accept the dataset root (holding train/) or the train folder itself."""
    root = Path(root)
    return root / "train" if (root / "train" / "train.csv").exists() or not (root / "train.csv").exists() else root


def eval_folder(root: Path) -> Path:
    root = Path(root)
    return root / "eval" if (root / "eval" / "info.csv").exists() or not (root / "info.csv").exists() else root


def read_csv_checked(csv_path: Path, columns: list[str], hint: str) -> pd.DataFrame:
    if not csv_path.is_file():
        raise MaskclsError(f"{csv_path}: not found; {hint}")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MaskclsError(f"{csv_path}: cannot be read as CSV ({exc}); expected columns {','.join(columns)}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise MaskclsError(
            f"{csv_path}: missing column(s) {','.join(missing)}; the header must be {','.join(columns)} "
            f"(found {','.join(map(str, table.columns))})"
        )
    return table


def _parse_persons(table: pd.DataFrame, csv_path: Path, age_cuts) -> tuple[pd.DataFrame, list[str]]:
    warnings = []
    if table.empty:
        raise MaskclsError(f"{csv_path}: lists no persons (only a header); add one line per person folder under train/images/")
    table = table[TRAIN_COLUMNS].copy()
    for column in TRAIN_COLUMNS:
        table[column] = table[column].str.strip()
    for row_no, row in enumerate(table.itertuples(index=False), start=2):  # row 1 is the header
        _check_person_row(row, row_no, csv_path, warnings)
    # `./X` and `X` name the same folder: compare the folders, not the spellings.
    table["path"] = table["path"].map(os.path.normpath)
    repeated_paths = table["path"][table["path"].duplicated()]
    if len(repeated_paths):
        raise MaskclsError(
            f"{csv_path}: folder {repeated_paths.iloc[0]!r} is listed {int((table['path'] == repeated_paths.iloc[0]).sum())} times; "
            "remove the repeated line(s)"
        )
    repeated_ids = sorted(set(table["id"][table["id"].duplicated()]))
    if repeated_ids:
        folders = table.loc[table["id"].isin(repeated_ids), "path"].tolist()
        warnings.append(
            f"{csv_path}: id(s) {', '.join(repeated_ids)} shared by folders {', '.join(folders)}; "
            "kept as separate persons, always on the same side of a split"
        )
    table["gender"] = table["gender"].str.lower()
    table["age"] = table["age"].astype(int)
    table["gender_code"] = table["gender"].map(GENDER_CODES).astype(int)
    table["age_group"] = age_group(table["age"].to_numpy(), age_cuts)
    return table.reset_index(drop=True), warnings


def _check_person_row(row, row_no: int, csv_path: Path, warnings: list) -> None:
    where = f"{csv_path}: line {row_no} (id {row.id})"
    if row.gender.lower() not in GENDER_CODES:
        raise MaskclsError(f"{where}: gender {row.gender!r} is not male/female; fix that line")
    if not row.age.isdigit():
        raise MaskclsError(f"{where}: age {row.age!r} is not a whole number; fix that line")
    if not row.path:
        raise MaskclsError(f"{where}: empty path; give the person's folder name")
    if os.path.isabs(row.path) or ".." in Path(row.path).parts:
        raise MaskclsError(f"{where}: path {row.path!r} must be a folder name under train/images/, not a path out of it")
    if int(row.age) > AGE_PLAUSIBLE_MAX:
        warnings.append(f"{where}: age {row.age} is above {AGE_PLAUSIBLE_MAX}; check it (the competition caps ages at 60)")


def _unlisted(folder: Path, listed) -> list[str]:
    """Names in `folder` (dot-files aside) that the CSV does not list, sorted: never used, so worth a warning."""
    if not folder.is_dir():
        return []
    listed = set(listed)
    return sorted(e.name for e in os.scandir(folder) if not e.name.startswith(".") and e.name not in listed)


def _scan_person_folder(folder: Path, skipped: dict) -> dict[str, Path]:
    """Map photo name (mask1 ... normal) to its file, skipping dot-files and unknown names."""
    photos = {}
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith("."):
            skipped["dot-files"] = skipped.get("dot-files", 0) + 1
            continue
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS or stem not in PHOTO_MASK or not entry.is_file():
            skipped["unknown names"] = skipped.get("unknown names", 0) + 1
            continue
        if stem in photos:
            raise MaskclsError(
                f"{folder}: two files for photo {stem!r} ({photos[stem].name}, {name}); keep one of them"
            )
        photos[stem] = Path(entry.path)
    return photos


_LOGGED_WARNINGS: set[str] = set()


def load_train(root, age_cuts=DEFAULT_AGE_CUTS, label_fixes=None) -> TrainData:
    """Read train.csv and the person folders; validate everything but image decoding (see `check`)."""
    train_dir = train_folder(Path(root))
    csv_path = train_dir / "train.csv"
    table = read_csv_checked(csv_path, TRAIN_COLUMNS, "point maskcls at the folder holding train/train.csv")
    persons, warnings = _parse_persons(table, csv_path, age_cuts)
    images_dir = train_dir / "images"
    if not images_dir.is_dir():
        raise MaskclsError(f"{images_dir}: not found; train.csv needs the person folders under train/images/")
    skipped: dict = {}
    unlisted = _unlisted(images_dir, persons["path"])
    if unlisted:
        warnings.append(f"{images_dir}: {len(unlisted)} entr{'y' if len(unlisted) == 1 else 'ies'} not in train.csv "
                        f"(e.g. {unlisted[0]}); they are not used: add them to train.csv or move them away")
    rows = []
    for person in persons.itertuples(index=False):
        folder = images_dir / person.path
        if not folder.is_dir():
            raise MaskclsError(
                f"{folder}: listed in {csv_path.name} (id {person.id}) but not on disk; restore the folder or remove the line"
            )
        photos = _scan_person_folder(folder, skipped)
        missing = [p for p in PHOTO_MASK if p not in photos]
        if missing:
            raise MaskclsError(
                f"{folder}: missing photo(s) {', '.join(missing)}; each person needs mask1..mask5, incorrect_mask "
                "and normal (.jpg/.jpeg/.png)"
            )
        for photo, file in photos.items():
            if file.stat().st_size == 0:
                raise MaskclsError(f"{file}: zero-byte image; copy the photo again or remove the person from train.csv")
            rows.append((str(file), person.path, person.id, photo))
    images = pd.DataFrame(rows, columns=["file", "path", "id", "photo"])
    images = images.sort_values(["path", "photo"], kind="stable").reset_index(drop=True)
    data = TrainData(train_dir, persons, images, skipped, warnings)
    if label_fixes:
        from .fixes import apply_label_fixes

        apply_label_fixes(data, label_fixes, age_cuts)
    relabel(data)
    for line in warnings:
        if line not in _LOGGED_WARNINGS:
            # a fit loads the same folder once per member: say each thing once, `data.warnings` keeps them all
            _LOGGED_WARNINGS.add(line)
            log.warning(line)
    return data


def leave_out_damaged(data: TrainData, bad_images: str = "error") -> TrainData:
    """Find photos that are cut short before training reads them: an error naming the first, or,
    with bad_images="skip", each one logged and left out."""
    damaged = [(file, reason) for file in data.images["file"] if (reason := truncation(file))]
    if not damaged:
        return data
    if bad_images == "error":
        raise MaskclsError(f"{damaged[0][0]}: {damaged[0][1]} ({len(damaged)} damaged photo(s) in {data.root}); copy them again, "
                           "or pass data.bad_images=skip to train without them")
    for file, reason in damaged:
        log.warning("%s: %s; left out of training (data.bad_images=skip)", file, reason)
    data.images = data.images[~data.images["file"].isin({file for file, _ in damaged})].reset_index(drop=True)
    return data


def relabel(data: TrainData) -> None:
    """(Re)derive each photo's mask, gender, age group and 18-class label from the person table."""
    by_path = data.persons.set_index("path")
    images = data.images
    images["mask"] = images["photo"].map(PHOTO_MASK).astype(int)
    images["gender"] = images["path"].map(by_path["gender_code"]).astype(int)
    images["age_group"] = images["path"].map(by_path["age_group"]).astype(int)
    images["age"] = images["path"].map(by_path["age"]).astype(int)
    images["label"] = encode(images["mask"].to_numpy(), images["gender"].to_numpy(), images["age_group"].to_numpy())


def load_eval(root) -> EvalData:
    """Read info.csv and check every listed image is on disk and non-empty."""
    eval_dir = eval_folder(Path(root))
    csv_path = eval_dir / "info.csv"
    info = read_csv_checked(csv_path, EVAL_COLUMNS, "point maskcls at the folder holding eval/info.csv")
    images_dir = eval_dir / "images"
    repeated = info["ImageID"][info["ImageID"].duplicated()]
    if len(repeated):
        line = int(np.flatnonzero(info["ImageID"].to_numpy() == repeated.iloc[0])[1]) + 2
        raise MaskclsError(f"{csv_path}: line {line}: ImageID {repeated.iloc[0]!r} is listed twice; remove the repeated line")
    files = []
    for image_id in info["ImageID"]:
        file = images_dir / image_id
        if not file.is_file():
            raise MaskclsError(f"{file}: listed in {csv_path} but not on disk; restore the image or use the matching info.csv")
        if file.stat().st_size == 0:
            raise MaskclsError(f"{file}: zero-byte image; copy the image again")
        files.append(str(file))
    unlisted = _unlisted(images_dir, info["ImageID"])
    warnings = [f"{images_dir}: {len(unlisted)} image(s) not in info.csv (e.g. {unlisted[0]}); they are not predicted"] if unlisted else []
    return EvalData(eval_dir, info, files, warnings)


def verify_images(files, progress: bool = True) -> list[str]:
    """Decode-check every image (Pillow's verify, and whether the file is cut short); raise on the
    first damaged one, return a warning for photos too small to hold a face."""
    from PIL import Image
    from tqdm import tqdm

    tiny = []
    for file in tqdm(files, desc="checking images", unit="img", disable=not progress, leave=False):
        try:
            with Image.open(file) as image:
                size = image.size
                image.verify()
        except Exception as exc:  # Pillow raises many types for broken files
            raise MaskclsError(f"{file}: cannot be decoded as an image ({type(exc).__name__}); replace or remove it") from None
        reason = truncation(file)
        if reason:
            raise MaskclsError(f"{file}: {reason}; the photo is damaged: copy it again, or remove it")
        if min(size) < MIN_PHOTO_SIDE:
            tiny.append(file)
    if not tiny:
        return []
    return [f"{len(tiny)} photo(s) smaller than {MIN_PHOTO_SIDE} px on a side (e.g. {tiny[0]}); they hold no face to classify"]


def check(root, age_cuts=DEFAULT_AGE_CUTS, label_fixes=None, progress: bool = True, strict: bool = False) -> list[str]:
    """Validate whatever of train/ and eval/ exists under `root`; return summary lines. With
    `strict`, a warning (an implausible age, a tiny photo, files nothing lists) is an error."""
    root = Path(root)
    lines, warnings = [], []
    train_dir, eval_dir = train_folder(root), eval_folder(root)
    has_train, has_eval = (train_dir / "train.csv").exists(), (eval_dir / "info.csv").exists()
    for folder, csv_name, has in ((train_dir, "train.csv", has_train), (eval_dir, "info.csv", has_eval)):
        if (folder / "images").is_dir() and not has:
            raise MaskclsError(f"{folder / csv_name}: not found, but {folder / 'images'} is there; restore {csv_name}")
    if not has_train and not has_eval:
        raise MaskclsError(f"{root}: holds neither train/train.csv nor eval/info.csv; point maskcls at the dataset folder")
    if has_train:
        data = load_train(root, age_cuts, label_fixes)
        warnings += data.warnings + verify_images(data.images["file"], progress)
        lines += _train_summary(data, age_cuts)
    if has_eval:
        evaluation = load_eval(root)
        warnings += evaluation.warnings + verify_images(evaluation.files, progress)
        lines.append(f"eval: {len(evaluation.info)} images listed, all present and decodable")
    if strict and warnings:
        raise MaskclsError(f"--strict: {warnings[0]}" + (f" (and {len(warnings) - 1} more warning(s))" if len(warnings) > 1 else ""))
    return lines + [f"warning: {w}" for w in warnings]


def _train_summary(data: TrainData, age_cuts) -> list[str]:
    persons = data.persons
    extensions = data.images["file"].map(lambda f: os.path.splitext(f)[1].lower()).value_counts().to_dict()
    return [
        f"train: {len(persons)} persons, {len(data.images)} photos, all decodable",
        f"  gender: {persons['gender'].value_counts().to_dict()}",
        f"  age groups (cuts {age_cuts[0]}, {age_cuts[1]}): {persons['age_group'].value_counts().sort_index().to_dict()}",
        f"  age range {persons['age'].min()}-{persons['age'].max()}; extensions: {extensions}",
        f"  skipped files: {data.skipped or 'none'}",
        f"  photos per class 0-17: {np.bincount(data.images['label'], minlength=NUM_CLASSES).tolist()}",
    ]
