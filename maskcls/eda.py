"""Exploratory data analysis of the competition layout: plots, one self-contained HTML report, a summary.

`run_eda` reads train/ (and eval/ when it sits beside train/) and writes into `out_dir`:

    *.png          charts and sample grids
    report.html    every chart embedded as base64, plus tables; opens without any other file
    summary.json   the returned summary (counts, normalisation statistics, suspicious items)

Every training image is read once, in a process pool: the file bytes give an exact-copy digest,
the header gives the real size and mode, and a 64 px downscale (JPEG `draft` decodes at 1/2..1/8
scale directly) gives the brightness, a mean-hash and 16x16 colour cells for the duplicate checks. Only the images drawn for the channel
statistics are decoded at full size, so the normalisation matches what training sees.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image, ImageOps
from tqdm import tqdm

from .data.layout import EVAL_COLUMNS, IMAGE_EXTENSIONS, load_train, read_csv_checked
from .htmlpage import data_uri, escape, page
from .htmlpage import table as html_table
from .labels import AGE_NAMES, DEFAULT_AGE_CUTS, GENDER_NAMES, MASK_NAMES, NUM_CLASSES, class_name

SMALL_SIDE = 64  # downscale used for brightness and hashing
HASH_SIDE = 16  # mean-hash grid: 256 bits, each bit a 4x4 block of the 64 px image
# A `normal` photo and a masked one of the same person usually differ in many mean-hash bits, a
# re-encoded copy in almost none. A mask close to the skin's brightness can leave the mean-hash
# almost unchanged, so a hash candidate must also pass a colour check: a near-duplicate changes
# only a sliver of the colour cells, while even a small incorrectly worn mask changes clearly more.
# DUPLICATE_MAX_CHANGED_AREA sits in the gap between the two.
DUPLICATE_MAX_DISTANCE = 8
DUPLICATE_CELL_CHANGE = 0.1
DUPLICATE_MAX_CHANGED_AREA = 0.02
# Modified z-score (median / MAD) cut-off of Iglewicz & Hoaglin: robust to the outliers it hunts.
BRIGHTNESS_MAX_Z = 3.5
THUMB_SIDE = 96
MAX_LISTED_IN_HTML = 60  # summary.json lists every suspicious item; the page shows the worst ones
# Two processes keep the scan of the stand-in set well inside its time budget on a two-core machine.
WORKERS = min(2, os.cpu_count() or 1)


def _counts(values) -> dict[str, int]:
    """Value -> count, most frequent first, JSON-ready."""
    return {str(value): int(count) for value, count in pd.Series(values).dropna().value_counts().items()}


def _scan_image(file: str, full_stats: bool) -> dict:
    """Everything the EDA needs from one image, from a single read of the file."""
    raw = Path(file).read_bytes()
    with Image.open(io.BytesIO(raw)) as image:
        size, mode, image_format = image.size, image.mode, image.format
        if not full_stats:
            image.draft("RGB", (SMALL_SIDE, SMALL_SIDE))
        rgb = image.convert("RGB")
    result = {"size": f"{size[0]}x{size[1]}", "mode": mode, "format": image_format, "md5": hashlib.md5(raw).hexdigest()}
    if full_stats:
        pixels = np.asarray(rgb, dtype=np.float32).reshape(-1, 3) / 255.0
        result["channel_sum"] = pixels.sum(axis=0, dtype=np.float64)
        result["channel_sq_sum"] = np.square(pixels).sum(axis=0, dtype=np.float64)
        result["pixel_count"] = len(pixels)
    small = np.asarray(rgb.resize((SMALL_SIDE, SMALL_SIDE), Image.Resampling.BOX), dtype=np.float32)
    gray = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0  # ITU-R 601 luma, as Pillow's "L"
    block = SMALL_SIDE // HASH_SIDE
    gray_cells = gray.reshape(HASH_SIDE, block, HASH_SIDE, block).mean(axis=(1, 3))
    result["brightness"] = float(gray.mean())
    result["hash"] = np.packbits(gray_cells > gray_cells.mean())
    result["colour_cells"] = small.reshape(HASH_SIDE, block, HASH_SIDE, block, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    return result


def _scan_chunk(files: list[str], full_stats: list[bool]) -> list[dict]:
    results = []
    for file, full in zip(files, full_stats, strict=True):
        try:
            results.append(_scan_image(file, full))
        except Exception as exc:  # Pillow raises many types for broken files; the report lists them
            results.append({"error": f"{type(exc).__name__}: {exc}"})
    return results


def _scan_all(files: list[str], full_stats: np.ndarray, progress: bool) -> list[dict]:
    """Scan images in a process pool (decoding is CPU-bound), results in the input order."""
    chunk = int(np.clip(len(files) // (WORKERS * 8), 16, 512))
    starts = range(0, len(files), chunk)
    results: list = [None] * len(starts)
    with ProcessPoolExecutor(max_workers=WORKERS) as pool, tqdm(
        total=len(files), desc="scanning images", unit="img", disable=not progress
    ) as bar:
        futures = {
            pool.submit(_scan_chunk, files[start:start + chunk], full_stats[start:start + chunk].tolist()): number
            for number, start in enumerate(starts)
        }
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(len(results[futures[future]]))
    return list(itertools.chain.from_iterable(results))


def _stats_sample(n_images: int, sample_stats: int | None, seed: int) -> np.ndarray:
    """Boolean mask of the images decoded at full size for the channel statistics."""
    chosen = np.zeros(n_images, dtype=bool)
    if sample_stats is None or sample_stats >= n_images:
        chosen[:] = True
    elif sample_stats > 0:
        chosen[np.random.default_rng(seed).choice(n_images, size=sample_stats, replace=False)] = True
    return chosen


def _channel_stats(scans: list[dict]) -> tuple[list[float], list[float], int]:
    sampled = [s for s in scans if "pixel_count" in s]
    if not sampled:
        return [float("nan")] * 3, [float("nan")] * 3, 0
    count = sum(s["pixel_count"] for s in sampled)
    mean = sum(s["channel_sum"] for s in sampled) / count
    variance = sum(s["channel_sq_sum"] for s in sampled) / count - np.square(mean)
    return mean.round(4).tolist(), np.sqrt(np.maximum(variance, 0)).round(4).tolist(), len(sampled)


class _Scanned(NamedTuple):
    """The image table with each image's scan results, and the arrays the duplicate checks compare."""

    images: pd.DataFrame  # the training image table plus row, size, mode, format, md5 and brightness
    hashes: np.ndarray  # packed mean-hash bits, one row per image
    colour_cells: np.ndarray  # HASH_SIDE x HASH_SIDE mean colours, one per image
    unreadable: list[dict]
    channel_stats: tuple[list[float], list[float], int]


def _scan_dataset(images: pd.DataFrame, sample_stats: int | None, seed: int, progress: bool) -> _Scanned:
    """Scan every training image once and line the results up with the image table."""
    images = images.copy()
    images["row"] = np.arange(len(images))
    scans = _scan_all(images["file"].tolist(), _stats_sample(len(images), sample_stats, seed), progress)
    readable = ["error" not in s for s in scans]
    for key in ("size", "mode", "format", "md5", "brightness"):
        images[key] = [s.get(key) for s in scans]
    images["brightness"] = images["brightness"].astype(float)
    # Unreadable images get zero placeholders; every check below skips them (their md5 is missing).
    hashes = np.stack([
        s["hash"] if ok else np.zeros(HASH_SIDE * HASH_SIDE // 8, np.uint8) for s, ok in zip(scans, readable, strict=True)
    ])
    colour_cells = np.stack([
        s["colour_cells"] if ok else np.zeros((HASH_SIDE, HASH_SIDE, 3), np.uint8) for s, ok in zip(scans, readable, strict=True)
    ])
    unreadable = [{"file": f, "error": s["error"]} for f, s, ok in zip(images["file"], scans, readable, strict=True) if not ok]
    return _Scanned(images, hashes, colour_cells, unreadable, _channel_stats(scans))


def _normal_distances(images: pd.DataFrame, hashes: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Each readable non-`normal` photo (with its person's `normal` row) and its mean-hash distance to it."""
    readable = images[images["md5"].notna()]
    normal_row = readable[readable["photo"] == "normal"].set_index("path")["row"]
    others = readable[(readable["photo"] != "normal") & readable["path"].isin(normal_row.index)]
    others = others.assign(normal_row=normal_row.loc[others["path"]].to_numpy())
    distances = np.unpackbits(hashes[others["normal_row"].to_numpy()] ^ hashes[others["row"].to_numpy()], axis=1).sum(axis=1)
    return others, distances


def _changed_area(colour_cells: np.ndarray, rows_a, rows_b) -> np.ndarray:
    """Share of colour cells that differ by more than DUPLICATE_CELL_CHANGE, per pair of rows.

    Each image's mean colour is removed first, so an exposure change alone does not count.
    """
    cells_a, cells_b = (colour_cells[rows].astype(np.float32) / 255.0 for rows in (rows_a, rows_b))
    cells_a -= cells_a.mean(axis=(1, 2), keepdims=True)
    cells_b -= cells_b.mean(axis=(1, 2), keepdims=True)
    return (np.abs(cells_a - cells_b).max(axis=-1) > DUPLICATE_CELL_CHANGE).mean(axis=(1, 2))


def _near_duplicates(images, hashes, colour_cells, others: pd.DataFrame, distances: np.ndarray) -> list[dict]:
    """Pairs within a person that should differ but look the same.

    `normal` against every other photo (a masked photo that looks like the bare face is a copy or
    a mislabelled file): mean-hash distance picks candidates, the colour check confirms them.
    Also any two photos of one person with byte-identical files.
    """
    found: dict[tuple, dict] = {}

    def add(a, b, distance, changed_area, identical):
        key = (a["path"], a["photo"], b["photo"])
        found[key] = {
            "path": a["path"], "photo_a": a["photo"], "photo_b": b["photo"], "distance": int(distance),
            "changed_area": round(float(changed_area), 4), "identical_file": bool(identical),
            "file_a": a["file"], "file_b": b["file"],
        }

    close = distances <= DUPLICATE_MAX_DISTANCE
    candidates = others[close].assign(distance=distances[close])
    candidates = candidates.assign(
        changed_area=_changed_area(colour_cells, candidates["normal_row"].to_numpy(), candidates["row"].to_numpy())
    )
    for _, other in candidates[candidates["changed_area"] < DUPLICATE_MAX_CHANGED_AREA].iterrows():
        normal = images.loc[other["normal_row"]]
        add(normal, other, other["distance"], other["changed_area"], normal["md5"] == other["md5"])
    # `normal` sorts first so an identical normal/mask pair gets the same key as above.
    copies = images[images["md5"].notna() & images.duplicated(["path", "md5"], keep=False)]
    for _, group in copies.groupby(["path", "md5"]):
        for (_, a), (_, b) in itertools.combinations(group.sort_values("photo", key=lambda p: p != "normal", kind="stable").iterrows(), 2):
            distance = np.unpackbits(hashes[a["row"]] ^ hashes[b["row"]]).sum()
            add(a, b, distance, _changed_area(colour_cells, [a["row"]], [b["row"]])[0], True)
    return sorted(found.values(), key=lambda d: (d["distance"], d["path"], d["photo_b"]))


def _brightness_outliers(images: pd.DataFrame) -> tuple[list[dict], dict]:
    """Photos far darker or brighter than the rest, by the modified z-score of mean brightness."""
    brightness = images["brightness"].dropna()
    median = float(brightness.median()) if len(brightness) else float("nan")
    scale = 1.4826 * float((brightness - median).abs().median()) if len(brightness) else 0.0
    if not scale > 0:  # more than half the photos share one brightness: fall back to the spread
        scale = float(brightness.std(ddof=0)) if len(brightness) > 1 else 0.0
    limits = {"median": round(median, 4), "scale": round(scale, 4), "max_abs_z": BRIGHTNESS_MAX_Z}
    if not scale > 0:
        return [], limits
    z = (images["brightness"] - median) / scale
    limits["low"], limits["high"] = round(median - BRIGHTNESS_MAX_Z * scale, 4), round(median + BRIGHTNESS_MAX_Z * scale, 4)
    flagged = images.assign(z=z)[z.abs() > BRIGHTNESS_MAX_Z].sort_values("z", key=np.abs, ascending=False)
    return [
        {"file": r.file, "path": r.path, "photo": r.photo, "brightness": round(r.brightness, 4), "z": round(r.z, 2)}
        for r in flagged.itertuples(index=False)
    ], limits


# ---- summary parts --------------------------------------------------------------------------


def _person_counts(persons: pd.DataFrame) -> dict:
    return {
        "persons_by_gender": {name: int((persons["gender_code"] == code).sum()) for code, name in enumerate(GENDER_NAMES)},
        "persons_by_age_group": {name: int((persons["age_group"] == code).sum()) for code, name in enumerate(AGE_NAMES)},
        "persons_by_race": _counts(persons["race"]),
        "age": {"min": int(persons["age"].min()), "max": int(persons["age"].max()), "mean": round(float(persons["age"].mean()), 2)},
    }


def _image_counts(scanned: _Scanned) -> dict:
    images = scanned.images
    channel_mean, channel_std, stats_images = scanned.channel_stats
    return {
        "class_counts": np.bincount(images["label"], minlength=NUM_CLASSES).tolist(),
        "class_names": [class_name(i) for i in range(NUM_CLASSES)],
        "mask_ratio": {name: round(float((images["mask"] == code).mean()), 4) for code, name in enumerate(MASK_NAMES)},
        "image_sizes": _counts(images["size"]),
        "image_modes": _counts(images["mode"]),
        "image_formats": _counts(images["format"]),
        "channel_mean": channel_mean,
        "channel_std": channel_std,
        "stats_images": stats_images,
    }


def _suspicious_items(scanned: _Scanned, others: pd.DataFrame, distances: np.ndarray) -> dict:
    brightness_outliers, brightness_limits = _brightness_outliers(scanned.images)
    return {
        "duplicate_rule": {
            "max_hash_distance": DUPLICATE_MAX_DISTANCE, "cell_change": DUPLICATE_CELL_CHANGE,
            "max_changed_area": DUPLICATE_MAX_CHANGED_AREA,
        },
        "near_duplicates": _near_duplicates(scanned.images, scanned.hashes, scanned.colour_cells, others, distances),
        "brightness_limits": brightness_limits,
        "brightness_outliers": brightness_outliers,
        "unreadable": scanned.unreadable,
    }


# ---- pictures -------------------------------------------------------------------------------


def _thumbnail(file: str) -> Image.Image:
    """A square thumbnail (aspect kept, padded white); a grey square when the file is unreadable."""
    box = (THUMB_SIDE, THUMB_SIDE)
    try:
        with Image.open(file) as image:
            image.draft("RGB", box)
            return ImageOps.pad(image.convert("RGB"), box, color=(255, 255, 255))
    except Exception:  # already listed as unreadable; the grid just shows a placeholder
        return Image.new("RGB", box, (128, 128, 128))


def _thumbnail_uri(file: str) -> str:
    buffer = io.BytesIO()
    _thumbnail(file).save(buffer, format="JPEG", quality=85)
    return data_uri(buffer.getvalue(), "image/jpeg")


def _save(figure: Figure, out_dir: Path, name: str, plots: list[str], tight: bool = True) -> None:
    if tight:
        figure.tight_layout()
    figure.savefig(out_dir / name, dpi=100)
    plots.append(name)


def _bar_chart(out_dir, name, title, counts: pd.Series, plots, colours="#4c72b0", long_labels=False) -> None:
    figure = Figure(figsize=(max(4.0, 0.5 * len(counts) + 1.5), 4.8 if long_labels else 3.6))
    axes = figure.add_subplot()
    bars = axes.bar([str(k) for k in counts.index], counts.to_numpy(), color=colours)
    axes.bar_label(bars, fontsize=8)
    axes.set_title(title)
    axes.set_ylabel("count")
    if long_labels:
        for label in axes.get_xticklabels():
            label.set(rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    _save(figure, out_dir, name, plots)


def _age_histogram(out_dir, persons, age_cuts, plots) -> None:
    figure = Figure(figsize=(8, 3.6))
    axes = figure.add_subplot()
    ages = persons["age"].to_numpy()
    # One bar per year, [age, age + 1): a cut at c then separates group boundaries exactly.
    axes.hist(ages, bins=np.arange(ages.min(), ages.max() + 2), color="#4c72b0", edgecolor="white")
    for cut in age_cuts:
        axes.axvline(cut, color="#c44e52", linestyle="--", label=f"cut {cut}")
    axes.set_title(f"person ages (groups {', '.join(AGE_NAMES)}; cuts {age_cuts[0]}, {age_cuts[1]})")
    axes.set_xlabel("age")
    axes.set_ylabel("persons")
    axes.legend()
    _save(figure, out_dir, "age_histogram.png", plots)


def _value_histogram(out_dir, name, title, values, lines: dict, plots, bins=50) -> None:
    figure = Figure(figsize=(8, 3.4))
    axes = figure.add_subplot()
    axes.hist(values, bins=bins, color="#4c72b0")
    for label, x in lines.items():
        axes.axvline(x, color="#c44e52", linestyle="--")
        axes.annotate(label, (x, 0.95), xycoords=("data", "axes fraction"), fontsize=8, ha="center", va="top")
    axes.set_yscale("log")
    axes.set_title(title)
    _save(figure, out_dir, name, plots)


def _sample_grid(out_dir, name, title, rows: dict[str, list[str]], columns: int, plots) -> None:
    """One row of thumbnails per entry of `rows` (label -> files), drawn as a single image."""
    gap = 4
    step = THUMB_SIDE + gap
    mosaic = Image.new("RGB", (columns * step - gap, len(rows) * step - gap), (255, 255, 255))
    for row_number, files in enumerate(rows.values()):
        for column, file in enumerate(files[:columns]):
            mosaic.paste(_thumbnail(file), (column * step, row_number * step))
    # Axes placed by hand at 100 dpi: thumbnails stay pixel-sharp and the row labels get a fixed margin.
    label_inches, title_inches, edge_inches = 2.0, 0.4, 0.1
    width, height = mosaic.width / 100, mosaic.height / 100
    figure = Figure(figsize=(label_inches + width + edge_inches, title_inches + height + edge_inches))
    axes = figure.add_axes((
        label_inches / figure.get_figwidth(), edge_inches / figure.get_figheight(),
        width / figure.get_figwidth(), height / figure.get_figheight(),
    ))
    axes.imshow(np.asarray(mosaic))
    axes.set_yticks([row * step + THUMB_SIDE / 2 for row in range(len(rows))], list(rows), fontsize=9)
    axes.set_xticks([])
    axes.set_title(title)
    _save(figure, out_dir, name, plots, tight=False)


def _pick(files: pd.Series, count: int, rng: np.random.Generator) -> list[str]:
    return files.iloc[np.sort(rng.choice(len(files), size=min(count, len(files)), replace=False))].tolist() if len(files) else []


def _person_charts(out_dir: Path, persons: pd.DataFrame, summary: dict, plots: list[str]) -> None:
    _bar_chart(out_dir, "persons_gender.png", "persons by gender", pd.Series(summary["persons_by_gender"]), plots)
    _bar_chart(out_dir, "persons_age_group.png", "persons by age group", pd.Series(summary["persons_by_age_group"]), plots)
    _bar_chart(out_dir, "persons_race.png", "persons by race", pd.Series(summary["persons_by_race"]), plots)
    _age_histogram(out_dir, persons, summary["age_cuts"], plots)


def _class_charts(out_dir: Path, images: pd.DataFrame, summary: dict, plots: list[str]) -> None:
    """Images per class and per mask state; both colour a bar by its mask state."""
    mask_colours = ["#4c72b0", "#dd8452", "#c44e52"]
    class_counts = pd.Series(summary["class_counts"], index=summary["class_names"])
    _bar_chart(
        out_dir, "class_counts.png", "images per class (colour = mask state)", class_counts,
        plots, colours=[mask_colours[label // 6] for label in range(NUM_CLASSES)], long_labels=True,
    )
    mask_counts = pd.Series(np.bincount(images["mask"], minlength=len(MASK_NAMES)), index=MASK_NAMES)
    _bar_chart(out_dir, "mask_ratio.png", "images per mask state", mask_counts, plots, colours=mask_colours)


def _sample_grids(out_dir: Path, images: pd.DataFrame, seed: int, plots: list[str]) -> None:
    """Thumbnails drawn at random with `seed`: 8 per mask state, then 6 per class."""
    rng = np.random.default_rng(seed)
    _sample_grid(
        out_dir, "grid_mask_states.png", "samples per mask state",
        {name: _pick(images.loc[images["mask"] == code, "file"], 8, rng) for code, name in enumerate(MASK_NAMES)}, 8, plots,
    )
    _sample_grid(
        out_dir, "grid_classes.png", "samples per class",
        {f"{i} {class_name(i)}": _pick(images.loc[images["label"] == i, "file"], 6, rng) for i in range(NUM_CLASSES)}, 6, plots,
    )


def _suspicious_histograms(out_dir: Path, images: pd.DataFrame, distances: np.ndarray, limits: dict, plots: list[str]) -> None:
    """The distributions behind the two checks, with their cut-offs; skipped when there is nothing to draw."""
    if len(distances):
        _value_histogram(
            out_dir, "hash_distance.png", "mean-hash distance: normal vs each other photo of the person",
            distances, {f"candidates <= {DUPLICATE_MAX_DISTANCE}": DUPLICATE_MAX_DISTANCE}, plots,
            bins=np.arange(HASH_SIDE * HASH_SIDE + 2) - 0.5,  # one bar per whole distance
        )
    brightness = images["brightness"].dropna()
    if len(brightness):
        limit_lines = {"low": limits["low"], "high": limits["high"]} if "low" in limits else {}
        _value_histogram(out_dir, "brightness_histogram.png", "mean brightness per image (0..1)", brightness, limit_lines, plots)


def _draw_plots(out_dir: Path, persons: pd.DataFrame, images: pd.DataFrame, summary: dict, distances: np.ndarray) -> list[str]:
    """Every chart and sample grid, in the order the report shows them; returns the file names written."""
    plots: list[str] = []
    _person_charts(out_dir, persons, summary, plots)
    _class_charts(out_dir, images, summary, plots)
    _sample_grids(out_dir, images, summary["seed"], plots)
    _suspicious_histograms(out_dir, images, distances, summary["brightness_limits"], plots)
    return plots


# ---- eval -----------------------------------------------------------------------------------


def _eval_summary(eval_dir: Path, progress: bool) -> dict | None:
    """Image count and size/mode distribution of eval/images (headers only, no decoding)."""
    images_dir = eval_dir / "images"
    if not images_dir.is_dir():
        return None
    files = sorted(
        entry.path for entry in os.scandir(images_dir)
        if not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
    )
    sizes, modes, unreadable = [], [], []
    for file in tqdm(files, desc="eval headers", unit="img", disable=not progress, leave=False):
        try:
            with Image.open(file) as image:
                sizes.append(f"{image.size[0]}x{image.size[1]}")
                modes.append(image.mode)
        except Exception as exc:  # listed in the report, not fatal for an overview
            unreadable.append({"file": file, "error": f"{type(exc).__name__}: {exc}"})
    info_csv = eval_dir / "info.csv"
    listed = len(read_csv_checked(info_csv, EVAL_COLUMNS, "eval/info.csv lists the eval images")) if info_csv.is_file() else None
    return {
        "dir": str(eval_dir), "n_images": len(files), "n_listed_in_info_csv": listed,
        "image_sizes": _counts(sizes), "image_modes": _counts(modes), "unreadable": unreadable,
    }


# ---- report ---------------------------------------------------------------------------------


# This page's additions to htmlpage.BASE_STYLE: small tables side by side, charts in a flowing row.
PAGE_STYLE = """
body { max-width: 1300px; }
table.data { margin: 0.5em 1.5em 0.5em 0; display: inline-table; vertical-align: top; }
table.data td, table.data th { text-align: left; }
figure { display: inline-block; margin: 0.5em; } figure img { max-width: 100%; }
figcaption { font-size: 0.8em; color: #666; } code { background: #f4f4f4; padding: 2px 4px; }
"""


def _embedded_png(out_dir: Path, name: str) -> str:
    uri = data_uri((out_dir / name).read_bytes())
    return f'<figure><img src="{uri}" alt="{escape(name)}"><figcaption>{escape(name)}</figcaption></figure>'


def _table(rows: dict | list, columns: tuple[str, ...]) -> str:
    frame = pd.DataFrame(list(rows.items()) if isinstance(rows, dict) else rows, columns=list(columns))
    return frame.to_html(index=False, border=0, classes="data")


def _suspicious_table(items: list[dict], columns: list[str], thumbnail_keys: list[str]) -> str:
    if not items:
        return "<p>None found.</p>"
    shown = items[:MAX_LISTED_IN_HTML]
    rows = [
        [f"<td>{escape(item[c])}</td>" for c in columns]
        + [f'<td><img src="{_thumbnail_uri(item[k])}" alt="{escape(k)}"></td>' for k in thumbnail_keys]
        for item in shown
    ]
    note = f"<p>{len(items)} found"
    note += f"; the first {len(shown)} shown, all listed in summary.json.</p>" if len(items) > len(shown) else ".</p>"
    return note + html_table(columns + thumbnail_keys, rows, css_class="data")


def _overview_html(s: dict) -> str:
    notes = "".join(f"<li>{escape(w)}</li>" for w in s["warnings"])
    notes += "".join(f"<li>skipped {n} file(s): {escape(reason)}</li>" for reason, n in s["skipped"].items())
    notes += "".join(f"<li>unreadable: {escape(u['file'])} ({escape(u['error'])})</li>" for u in s["unreadable"])
    return f"""<p>{escape(s['train_dir'])}: <b>{s['n_persons']}</b> persons, <b>{s['n_images']}</b> images;
age cuts {s['age_cuts'][0]}, {s['age_cuts'][1]}.</p>
{f'<h2>Notes</h2><ul>{notes}</ul>' if notes else ''}"""


def _persons_html(s: dict, figures: dict[str, str]) -> str:
    return f"""<h2>Persons</h2>
{_table(s['persons_by_gender'], ('gender', 'persons'))}{_table(s['persons_by_age_group'], ('age group', 'persons'))}
{_table(s['persons_by_race'], ('race', 'persons'))}
{figures['persons_gender.png']}{figures['persons_age_group.png']}{figures['persons_race.png']}
{figures['age_histogram.png']}"""


def _classes_html(s: dict, figures: dict[str, str]) -> str:
    class_rows = [(i, class_name(i), n, f"{n / max(s['n_images'], 1):.1%}") for i, n in enumerate(s["class_counts"])]
    return f"""<h2>Classes</h2>
<p>class = mask*6 + gender*3 + age group. Mask-state share of images:
{', '.join(f'{k} {v:.1%}' for k, v in s['mask_ratio'].items())}.</p>
{figures['class_counts.png']}{figures['mask_ratio.png']}
{_table(class_rows, ('class', 'name', 'images', 'share'))}"""


def _images_html(s: dict) -> str:
    return f"""<h2>Images</h2>
{_table(s['image_sizes'], ('size', 'count'))}{_table(s['image_modes'], ('mode', 'count'))}{_table(s['image_formats'], ('format', 'count'))}
<h3>Suggested normalisation</h3>
<p>Per-channel RGB mean and std on the 0..1 scale, over {s['stats_images']} of {s['n_images']} images decoded at full size
(drawn with seed {s['seed']}):</p>
<p><code>mean = {s['channel_mean']}</code><br><code>std = {s['channel_std']}</code></p>"""


def _samples_html(figures: dict[str, str]) -> str:
    return f"""<h2>Samples</h2>
{figures['grid_mask_states.png']}
{figures['grid_classes.png']}"""


def _near_duplicates_html(s: dict, figures: dict[str, str]) -> str:
    rule = s["duplicate_rule"]
    return f"""<h2>Suspicious items</h2>
<h3>Near-duplicates within a person</h3>
<p><code>normal</code> against each other photo of the person (a masked photo that looks like the bare face):
a candidate has {HASH_SIDE}x{HASH_SIDE} grayscale mean-hash Hamming distance &le; {rule['max_hash_distance']} of
{HASH_SIDE * HASH_SIDE} bits, and is flagged when under {rule['max_changed_area']:.0%} of the {HASH_SIDE}x{HASH_SIDE}
colour cells change by more than {rule['cell_change']} (a mask near the skin's brightness barely moves the hash but
changes the colour of the lower face). Byte-identical files of one person are flagged too.</p>
{figures['hash_distance.png']}
{_suspicious_table(
    s['near_duplicates'], ['path', 'photo_a', 'photo_b', 'distance', 'changed_area', 'identical_file'], ['file_a', 'file_b']
)}"""


def _brightness_html(s: dict, figures: dict[str, str]) -> str:
    limits = s["brightness_limits"]
    return f"""<h3>Brightness outliers</h3>
<p>Mean grayscale brightness (0..1), flagged at |modified z| &gt; {limits['max_abs_z']}
(median {limits['median']}, robust scale {limits['scale']}).</p>
{figures['brightness_histogram.png']}
{_suspicious_table(s['brightness_outliers'], ['path', 'photo', 'brightness', 'z'], ['file'])}"""


def _eval_html(e: dict | None) -> str:
    if not e:
        return "<h2>Eval</h2>\n<p>No eval/ folder beside train/.</p>"
    return (
        f"<h2>Eval</h2>\n<p>{e['n_images']} images in {escape(e['dir'])}/images"
        + (f"; {e['n_listed_in_info_csv']} listed in info.csv" if e["n_listed_in_info_csv"] is not None else "; no info.csv")
        + (f"; {len(e['unreadable'])} unreadable" if e["unreadable"] else "") + ".</p>"
        + "<h3>Sizes</h3>" + _table(e["image_sizes"], ("size", "count"))
        + "<h3>Modes</h3>" + _table(e["image_modes"], ("mode", "count"))
    )


def _write_report(out_dir: Path, summary: dict) -> None:
    """report.html: one section after another, each chart embedded; a chart that was not drawn shows as nothing."""
    figures = defaultdict(str, {name: _embedded_png(out_dir, name) for name in summary["plots"]})
    body = "\n".join([
        _overview_html(summary),
        _persons_html(summary, figures),
        _classes_html(summary, figures),
        _images_html(summary),
        _samples_html(figures),
        _near_duplicates_html(summary, figures),
        _brightness_html(summary, figures),
        _eval_html(summary["eval"]),
    ])
    (out_dir / "report.html").write_text(page("maskcls EDA", body, PAGE_STYLE), encoding="utf-8")


# ---- entry point ----------------------------------------------------------------------------


def run_eda(
    data_root,
    out_dir,
    age_cuts=DEFAULT_AGE_CUTS,
    sample_stats: int | None = 2000,
    progress: bool = True,
    seed: int = 0,
) -> dict:
    """Analyse the dataset under `data_root`; write plots, report.html and summary.json to `out_dir`.

    `sample_stats` images (None = all), drawn with `seed`, give the per-channel mean/std.
    """
    started = time.perf_counter()
    age_cuts = tuple(int(c) for c in age_cuts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_train(data_root, age_cuts)
    scanned = _scan_dataset(data.images, sample_stats, seed, progress)
    others, distances = _normal_distances(scanned.images, scanned.hashes)

    summary = {
        "train_dir": str(data.root),
        "age_cuts": list(age_cuts),
        "seed": seed,
        "n_persons": len(data.persons),
        "n_images": len(scanned.images),
        **_person_counts(data.persons),
        **_image_counts(scanned),
        **_suspicious_items(scanned, others, distances),
        "skipped": data.skipped,
        "warnings": data.warnings,
        "eval": _eval_summary(data.root.parent / "eval", progress),
    }
    summary["plots"] = _draw_plots(out_dir, data.persons, scanned.images, summary, distances)

    _write_report(out_dir, summary)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
