"""The submission: info.csv's rows, in info.csv's order, with `ans` filled, and its checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.layout import EVAL_COLUMNS
from ..errors import MaskclsError
from ..fileio import atomic_write
from ..labels import NUM_CLASSES


def write_submission(info: pd.DataFrame, labels: np.ndarray, out_csv) -> Path:
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    submission = info[EVAL_COLUMNS].copy()
    submission["ans"] = np.asarray(labels, dtype=np.int64)
    with atomic_write(out_csv, what="submission") as handle:
        submission.to_csv(handle, index=False)
    return out_csv


def check_submission(submission_csv, info_csv) -> str:
    """Row count, ID set and order equal to info.csv, integer classes 0-17, no NaN. One-line errors."""
    submission_csv, info_csv = Path(submission_csv), Path(info_csv)
    for path in (submission_csv, info_csv):
        if not path.is_file():
            raise MaskclsError(f"{path}: not found")
    submission, info = read_table(submission_csv), read_table(info_csv)
    if list(submission.columns) != EVAL_COLUMNS:
        raise MaskclsError(f"{submission_csv}: columns are {','.join(map(str, submission.columns))}; the header must be ImageID,ans")
    if len(submission) != len(info):
        raise MaskclsError(f"{submission_csv}: {len(submission)} rows, but {info_csv} has {len(info)}; predict every image of info.csv")
    if set(submission["ImageID"]) != set(info["ImageID"]):
        missing = sorted(set(info["ImageID"]) - set(submission["ImageID"]))
        raise MaskclsError(f"{submission_csv}: ImageIDs differ from {info_csv} ({len(missing)} missing, e.g. {missing[:1]}); predict exactly info.csv's images")
    moved = np.flatnonzero(submission["ImageID"].to_numpy() != info["ImageID"].to_numpy())
    if len(moved):
        raise MaskclsError(f"{submission_csv}: rows are not in info.csv's order (first at line {moved[0] + 2}); keep info.csv's order")
    empty = np.flatnonzero(submission["ans"].isna().to_numpy())
    if len(empty):
        raise MaskclsError(f"{submission_csv}: line {empty[0] + 2}: ans is empty (NaN); every image needs a class 0-17")
    is_integer = submission["ans"].str.fullmatch(r"\d+").fillna(False).astype(bool).to_numpy()
    bad = np.flatnonzero(~is_integer | (pd.to_numeric(submission["ans"], errors="coerce").fillna(-1).to_numpy() > NUM_CLASSES - 1))
    if len(bad):
        raise MaskclsError(f"{submission_csv}: line {bad[0] + 2}: ans {submission['ans'].iloc[bad[0]]!r} is not an integer class 0-17")
    return f"{submission_csv}: OK, {len(submission)} rows in info.csv order, classes 0-17"


def read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise MaskclsError(f"{path}: empty file; a submission has the header ImageID,ans and one line per image of info.csv") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise MaskclsError(f"{path}: cannot be read as CSV ({str(exc).splitlines()[0]}); expected the columns ImageID,ans") from None
