"""Label fixes: a versioned CSV of corrections, applied only when asked, every change logged.

Format (see configs/label_fixes.example.csv):

    # maskcls-label-fixes v1
    path,field,value,note
    000004_male_Asian_54,gender,female,face is clearly female
    000005_female_Asian_58,age,61,
    000006_male_Asian_33,swap_incorrect_normal,,incorrect_mask and normal photos swapped

`path` is the person folder; `field` is gender (male/female), age (whole years) or
swap_incorrect_normal (value empty). The first line names the format version.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ..errors import MaskclsError
from ..labels import GENDER_CODES, age_group

log = logging.getLogger(__name__)

FIXES_HEADER = "# maskcls-label-fixes v1"
FIX_FIELDS = ("gender", "age", "swap_incorrect_normal")
SWAPPED_PHOTO = {"incorrect_mask": "normal", "normal": "incorrect_mask"}


def fixes_digest(path) -> str:
    """Short content hash, recorded in a run so the exact fixes used are known."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def read_label_fixes(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise MaskclsError(f"{path}: label-fixes file not found; see configs/label_fixes.example.csv for the format")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != FIXES_HEADER:
        raise MaskclsError(f"{path}: first line must be {FIXES_HEADER!r} (the format version)")
    if len(lines) < 2 or [c.strip() for c in lines[1].split(",")][:3] != ["path", "field", "value"]:
        raise MaskclsError(f"{path}: second line must be the header path,field,value,note")
    fixes = []
    for line_no, line in enumerate(lines[2:], start=3):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in line.split(",", 3)] + ["", "", ""]
        folder, field, value = cells[:3]
        if field not in FIX_FIELDS:
            raise MaskclsError(f"{path}: line {line_no}: field {field!r} is not one of {', '.join(FIX_FIELDS)}")
        if field == "gender" and value.lower() not in GENDER_CODES:
            raise MaskclsError(f"{path}: line {line_no}: gender value {value!r} is not male/female")
        if field == "age" and not value.isdigit():
            raise MaskclsError(f"{path}: line {line_no}: age value {value!r} is not a whole number")
        fixes.append({"line": line_no, "path": folder, "field": field, "value": value})
    return fixes


def apply_label_fixes(data, fixes_path, age_cuts) -> list[str]:
    """Apply the fixes to a TrainData in place; return (and log) one line per change."""
    fixes = read_label_fixes(fixes_path)
    persons, images = data.persons, data.images
    changes = []
    for fix in fixes:
        rows = persons.index[persons["path"] == fix["path"]]
        if len(rows) == 0:
            raise MaskclsError(f"{fixes_path}: line {fix['line']}: folder {fix['path']!r} is not in train.csv; fix or drop the line")
        row = rows[0]
        if fix["field"] == "gender":
            new = fix["value"].lower()
            changes.append(f"{fix['path']}: gender {persons.at[row, 'gender']} -> {new}")
            persons.at[row, "gender"] = new
            persons.at[row, "gender_code"] = GENDER_CODES[new]
        elif fix["field"] == "age":
            new = int(fix["value"])
            changes.append(f"{fix['path']}: age {persons.at[row, 'age']} -> {new}")
            persons.at[row, "age"] = new
            persons.at[row, "age_group"] = age_group(new, age_cuts)
        else:
            person_photos = images["path"] == fix["path"]
            images.loc[person_photos, "photo"] = images.loc[person_photos, "photo"].replace(SWAPPED_PHOTO)
            changes.append(f"{fix['path']}: incorrect_mask <-> normal swapped")
    for line in changes:
        log.info("label fix: %s", line)
    data.warnings.append(f"applied {len(changes)} label fix(es) from {fixes_path} (sha256 {fixes_digest(fixes_path)})")
    return changes
