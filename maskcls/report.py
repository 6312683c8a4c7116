"""Evaluation report: scores, per-class table, confusion images and the worst-predicted persons.

`write_report` works on label arrays; `evaluate_files` reads a submission and a truth CSV.
The HTML is self-contained (images are embedded as base64 PNG), so it can be mailed or archived.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

from .data.layout import read_csv_checked
from .errors import MaskclsError
from .htmlpage import data_uri, escape, page
from .htmlpage import table as html_table
from .labels import AGE_NAMES, NUM_CLASSES, class_name, decode
from .metrics import confusion, score

SUBMISSION_COLUMNS = ("ImageID", "ans")
META_COLUMNS = ("ImageID", "id")
THUMBNAIL_PX = 64
WORST_SHOWN = 12
CLASS_LABELS = [f"{label} {class_name(label)}" for label in range(NUM_CLASSES)]
# The competition has 7 photos per person; a person row shows at most this many.
PHOTOS_PER_PERSON_SHOWN = 8

# This page's additions to htmlpage.BASE_STYLE: numbers right-aligned, names left, photos in rows.
PAGE_STYLE = """
table { margin: 0.5em 0 1.5em; }
th, td { text-align: right; }
td.name { text-align: left; }
.headline { font-size: 1.4em; }
.photos { display: flex; flex-wrap: wrap; gap: 6px; }
figure { margin: 0; width: 110px; font-size: 0.75em; text-align: center; }
figure.wrong figcaption { color: #b00; font-weight: bold; }
.missing { width: 64px; height: 64px; background: #eee; display: inline-block; line-height: 64px; }
"""


def _check_inputs(y_true, y_pred, probs, groups, thumbnails):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise MaskclsError(f"report: y_true {y_true.shape} and y_pred {y_pred.shape} must be 1-D and the same length")
    for name, labels in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.issubdtype(labels.dtype, np.integer) or (labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES)):
            raise MaskclsError(f"report: {name} must hold class numbers 0..{NUM_CLASSES - 1}")
    n_images = len(y_true)
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (n_images, NUM_CLASSES):
            raise MaskclsError(f"report: probs shape {probs.shape} should be ({n_images}, {NUM_CLASSES}), one row per image")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n_images,):
            raise MaskclsError(f"report: groups need one person id per image ({n_images}), got shape {groups.shape}")
    if thumbnails is not None and len(thumbnails) != n_images:
        raise MaskclsError(f"report: thumbnails need one image path per image ({n_images}), got {len(thumbnails)}")
    return y_true.astype(np.int64), y_pred.astype(np.int64), probs, groups


def per_class_table(y_true, y_pred) -> pd.DataFrame:
    """Precision, recall, F1, support (true count) and predicted count for each of the 18 classes."""
    labels = list(range(NUM_CLASSES))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return pd.DataFrame({
        "label": labels,
        "name": [class_name(label) for label in labels],
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "predicted": np.bincount(y_pred, minlength=NUM_CLASSES),
    })


def confusion_figure(matrix: np.ndarray, names: list[str], title: str) -> Figure:
    """Counts written in the cells; colour is the row share (recall), so rare classes stay visible."""
    size = len(names)
    row_share = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    side = 3 + 0.55 * size
    figure = Figure(figsize=(side + 2, side))
    axes = figure.add_subplot()
    image = axes.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of the true class")
    for row, col in zip(*np.nonzero(matrix), strict=True):
        axes.text(col, row, str(matrix[row, col]), ha="center", va="center", fontsize=8,
                  color="white" if row_share[row, col] > 0.5 else "black")
    axes.set_xticks(range(size), names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(size), names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    return figure


def _thumbnail_html(path) -> str:
    """An <img> with the photo shrunk to 64 px, or a grey box saying why it is not shown."""
    try:
        with Image.open(path) as photo:
            photo = photo.convert("RGB")
            photo.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            photo.save(buffer, format="PNG")
    except FileNotFoundError:
        return '<span class="missing">missing</span>'
    except OSError:
        return '<span class="missing">unreadable</span>'
    return f'<img src="{data_uri(buffer.getvalue())}" alt="{escape(Path(path).name)}">'


def _photo_html(index: int, y_true, y_pred, probs, thumbnails) -> str:
    wrong = y_true[index] != y_pred[index]
    caption = [
        escape(Path(thumbnails[index]).name if thumbnails is not None else f"row {index}"),
        f"true: {escape(class_name(y_true[index]))}",
        f"pred: {escape(class_name(y_pred[index]))}",
    ]
    if probs is not None:
        caption.append(f"p(true) = {probs[index, y_true[index]]:.2f}")
    picture = _thumbnail_html(thumbnails[index]) if thumbnails is not None else ""
    return f'<figure class="{"wrong" if wrong else "right"}">{picture}<figcaption>{"<br>".join(caption)}</figcaption></figure>'


def worst_persons(y_true, y_pred, groups, probs=None, top: int = WORST_SHOWN) -> pd.DataFrame:
    """Persons with at least one wrong photo: most wrong photos first, then lowest mean p(true class)."""
    true_prob = probs[np.arange(len(y_true)), y_true] if probs is not None else np.full(len(y_true), np.nan)
    per_photo = pd.DataFrame({"person": groups, "wrong": y_true != y_pred, "true_prob": true_prob})
    persons = per_photo.groupby("person", sort=False).agg(
        n_photos=("wrong", "size"), n_wrong=("wrong", "sum"), mean_true_prob=("true_prob", "mean")
    )
    persons = persons[persons["n_wrong"] > 0]
    return persons.sort_values(["n_wrong", "mean_true_prob"], ascending=[False, True]).head(top).reset_index()


def _worst_section(y_true, y_pred, probs, groups, thumbnails) -> str:
    if groups is not None:
        persons = worst_persons(y_true, y_pred, groups, probs)
        if persons.empty:
            return "<h2>Worst-predicted persons</h2><p>Every photo is predicted correctly.</p>"
        parts = ["<h2>Worst-predicted persons</h2>"]
        for person in persons.itertuples():
            rows = np.flatnonzero(groups == person.person)
            # Wrong photos first, so the reason the person is listed is visible even when truncated.
            rows = rows[np.argsort(y_true[rows] == y_pred[rows], kind="stable")][:PHOTOS_PER_PERSON_SHOWN]
            mean_prob = "" if np.isnan(person.mean_true_prob) else f", mean p(true) {person.mean_true_prob:.2f}"
            parts.append(
                f"<h3>person {escape(person.person)}: {person.n_wrong} of {person.n_photos} photos wrong{mean_prob}</h3>"
                f'<div class="photos">{"".join(_photo_html(i, y_true, y_pred, probs, thumbnails) for i in rows)}</div>'
            )
        return "".join(parts)
    if probs is not None:
        heading = "Worst images (lowest probability of the true class)"
        rows = np.argsort(probs[np.arange(len(y_true)), y_true], kind="stable")[:WORST_SHOWN]
    else:
        heading = "Wrongly predicted images"
        rows = np.flatnonzero(y_true != y_pred)[:WORST_SHOWN]
    if len(rows) == 0:
        return f"<h2>{heading}</h2><p>Every image is predicted correctly.</p>"
    return f'<h2>{heading}</h2><div class="photos">{"".join(_photo_html(i, y_true, y_pred, probs, thumbnails) for i in rows)}</div>'


def _cell_html(value) -> str:
    if isinstance(value, str):
        return f'<td class="name">{escape(value)}</td>'
    if isinstance(value, (float, np.floating)):
        return f"<td>{value:.4f}</td>"
    return f"<td>{value}</td>"


def _table_html(frame: pd.DataFrame) -> str:
    return html_table(frame.columns, ([_cell_html(value) for value in row] for row in frame.itertuples(index=False)))


def write_report(y_true, y_pred, out_dir, probs=None, groups=None, thumbnails=None,
                 title: str = "maskcls evaluation report") -> dict:
    """Write report.html, confusion_18.png, confusion_age.png, per_class.csv and summary.json to out_dir.

    `probs` (N, 18) ranks the worst images by p(true class); `groups` (person id per image) turns
    the worst-images list into worst persons; `thumbnails` (image paths aligned with y) shows
    the photos. Returns the summary: metrics.score plus the image count.
    """
    y_true, y_pred, probs, groups = _check_inputs(y_true, y_pred, probs, groups, thumbnails)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    summary = {**score(y_true, y_pred), "n_images": int(len(y_true))}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    classes = per_class_table(y_true, y_pred)
    classes.to_csv(out_dir / "per_class.csv", index=False)

    confusion_figure(confusion(y_true, y_pred), CLASS_LABELS, "18-class confusion").savefig(out_dir / "confusion_18.png", dpi=100)
    age_true, age_pred = decode(y_true)[2], decode(y_pred)[2]
    confusion_figure(confusion(age_true, age_pred, len(AGE_NAMES)), list(AGE_NAMES), "age-group confusion").savefig(
        out_dir / "confusion_age.png", dpi=100)

    heads = pd.DataFrame({
        "head": ["mask", "gender", "age"],
        "macro_f1": [summary[f"{head}_f1"] for head in ("mask", "gender", "age")],
        "accuracy": [summary[f"{head}_acc"] for head in ("mask", "gender", "age")],
    })
    images = {
        name: data_uri((out_dir / name).read_bytes()) for name in ("confusion_18.png", "confusion_age.png")
    }
    body = f"""<p class="headline">macro-F1 <b>{summary["macro_f1"]:.4f}</b> &nbsp; accuracy <b>{summary["accuracy"]:.4f}</b>
&nbsp; ({summary["n_images"]} images)</p>
<h2>Per head</h2>{_table_html(heads)}
<h2>Per class</h2>{_table_html(classes)}
<h2>Confusion</h2>
<img src="{images["confusion_18.png"]}" alt="18-class confusion matrix">
<img src="{images["confusion_age.png"]}" alt="age-group confusion matrix">
{_worst_section(y_true, y_pred, probs, groups, thumbnails)}"""
    (out_dir / "report.html").write_text(page(title, body, PAGE_STYLE), encoding="utf-8")
    return summary


def _read_id_table(path: Path, columns: tuple[str, ...], role: str) -> pd.DataFrame:
    """A CSV keyed by unique ImageID, with `columns` present; one-line errors otherwise."""
    table = read_csv_checked(path, list(columns), f"the {role} is missing; check the path")
    repeated = table["ImageID"][table["ImageID"].duplicated()]
    if len(repeated):
        raise MaskclsError(f"{path}: {len(repeated)} repeated ImageID(s), e.g. {repeated.iloc[0]!r}; list each image once")
    return table


def _answers(table: pd.DataFrame, path: Path) -> np.ndarray:
    answers = pd.to_numeric(table["ans"], errors="coerce")
    bad = answers.isna() | (answers % 1 != 0) | (answers < 0) | (answers >= NUM_CLASSES)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise MaskclsError(
            f"{path}: line {row + 2} (ImageID {table['ImageID'].iloc[row]}): ans {table['ans'].iloc[row]!r} "
            f"is not a class 0..{NUM_CLASSES - 1}; fix that line"
        )
    return answers.to_numpy().astype(np.int64)


def _aligned_labels(pred_csv: Path, truth_csv: Path) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """The submission's ImageIDs, in its order, with the truth and predicted class of each."""
    predictions = _read_id_table(pred_csv, SUBMISSION_COLUMNS, "submission CSV")
    truth = _read_id_table(truth_csv, SUBMISSION_COLUMNS, "truth CSV")
    _check_same_ids(predictions["ImageID"], truth["ImageID"], pred_csv, truth_csv)
    image_ids = predictions["ImageID"]
    y_pred = _answers(predictions, pred_csv)
    y_true = pd.Series(_answers(truth, truth_csv), index=truth["ImageID"]).loc[image_ids].to_numpy()
    return image_ids, y_true, y_pred


def _check_same_ids(pred_ids: pd.Series, truth_ids: pd.Series, pred_csv: Path, truth_csv: Path) -> None:
    pred_ids, truth_ids = set(pred_ids), set(truth_ids)
    not_predicted = sorted(truth_ids - pred_ids)
    not_in_truth = sorted(pred_ids - truth_ids)
    if not_predicted or not_in_truth:
        problems = []
        if not_predicted:
            problems.append(f"{len(not_predicted)} truth ID(s) missing from the submission (e.g. {not_predicted[0]})")
        if not_in_truth:
            problems.append(f"{len(not_in_truth)} extra ID(s) not in the truth (e.g. {not_in_truth[0]})")
        raise MaskclsError(f"{pred_csv}: ImageIDs differ from {truth_csv}: {'; '.join(problems)}; predict exactly the truth's images")


def _load_probs(probs_path, n_images: int, pred_csv: Path) -> np.ndarray:
    """The (n_images, 18) probabilities saved as .npy, rows in the submission's order."""
    probs_path = Path(probs_path)
    if not probs_path.is_file():
        raise MaskclsError(f"{probs_path}: probabilities file not found; check the path or leave it out")
    try:
        probs = np.load(probs_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise MaskclsError(f"{probs_path}: cannot be read as a .npy array ({exc})") from None
    if probs.shape != (n_images, NUM_CLASSES):
        raise MaskclsError(
            f"{probs_path}: shape {probs.shape}, expected ({n_images}, {NUM_CLASSES}): "
            f"one row of probabilities per row of {pred_csv.name}, in the same order"
        )
    return probs


def _thumbnail_paths(images_dir, image_ids: pd.Series) -> list[str]:
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise MaskclsError(f"{images_dir}: images folder not found; check the path or leave it out")
    return [str(images_dir / image_id) for image_id in image_ids]


def _person_ids(meta_csv, image_ids: pd.Series) -> np.ndarray:
    """Each image's person id from the meta CSV, in the submission's order."""
    meta_csv = Path(meta_csv)
    meta = _read_id_table(meta_csv, META_COLUMNS, "meta CSV")
    unknown = sorted(set(image_ids) - set(meta["ImageID"]))
    if unknown:
        raise MaskclsError(f"{meta_csv}: {len(unknown)} submission ImageID(s) have no person id (e.g. {unknown[0]}); add them")
    return meta.set_index("ImageID").loc[image_ids, "id"].to_numpy()


def evaluate_files(pred_csv, truth_csv, out_dir, probs_path=None, images_dir=None, meta_csv=None) -> dict:
    """Score a submission CSV (ImageID,ans) against a truth CSV and write the report to out_dir.

    Rows are aligned on ImageID in the submission's order. Optional: `probs_path`, a .npy
    (rows aligned with the submission) of 18-class probabilities; `images_dir` holding the
    photos as images_dir/ImageID, for thumbnails; `meta_csv` (ImageID,id) giving each image's
    person, for the worst-persons list.
    """
    pred_csv, truth_csv = Path(pred_csv), Path(truth_csv)
    image_ids, y_true, y_pred = _aligned_labels(pred_csv, truth_csv)
    # Every input is checked before write_report creates out_dir, so a bad input leaves no half report.
    probs = _load_probs(probs_path, len(image_ids), pred_csv) if probs_path is not None else None
    thumbnails = _thumbnail_paths(images_dir, image_ids) if images_dir is not None else None
    groups = _person_ids(meta_csv, image_ids) if meta_csv is not None else None
    return write_report(y_true, y_pred, out_dir, probs=probs, groups=groups, thumbnails=thumbnails,
                        title=f"{pred_csv.name} vs {truth_csv.name}")
