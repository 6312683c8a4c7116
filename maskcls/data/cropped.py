"""`maskcls crop`: a face-cropped copy of a data set, in the same layout.

Every photo listed in train/train.csv or eval/info.csv is detected (through the detection cache)
and cut to the face crop that training with `preprocess.crop=mtcnn` uses (framed on the eyes or
on the box); the CSVs are copied unchanged, and crops.csv beside each split's images records box,
score, which detector found it and its landmarks, so a doubtful crop can be looked up.
"""
from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import cv2

from ..errors import MaskclsError
from ..faces import DetectorSettings, face_boxes
from ..faces.tune import tuned_onet
from ..fileio import atomic_write, folder_written_whole, refuse_filled_folder, refuse_replacing_inputs
from ..imageio import read_rgb
from ..labels import MASK_NAMES
from .layout import eval_folder, load_eval, load_train, train_folder
from .transforms import Preprocess

CROPS_HEADER = ["path", "x0", "y0", "x1", "y1", "score", "detector", "landmarks"]
COPIED_CSVS = ("train.csv", "info.csv", "truth.csv", "meta.csv")


def write_cropped_copy(data, out, margin: float = 0.1, size: int | None = None, settings: DetectorSettings | None = None,
                       progress: bool = True, align: str = "eyes", force: bool = False, onet: str = "tuned") -> dict:
    """Crop every listed photo of `data` (train/ and eval/, whichever exist) into `out`; returns
    {split: number of photos, "onet": the tuned O-net's digest or None}. `size` rescales each crop
    to size x size; None keeps its pixels. `onet`: "tuned" detects with O-net tuned on the train
    split's bare faces, as a fit does; "packaged" with facenet-pytorch's. The copy is written
    beside `out` and appears whole or not at all; a filled `out` is kept unless `force`."""
    data, out = Path(data), Path(out)
    refuse_filled_folder(out, force)
    refuse_replacing_inputs(out, [data], "the data set being cropped", "copy")
    splits = {}
    if (train_folder(data) / "train.csv").exists():
        train = load_train(data)
        splits["train"] = (train_folder(data), [Path(f) for f in train.images["file"]])
    if (eval_folder(data) / "info.csv").exists():
        splits["eval"] = (eval_folder(data), [Path(f) for f in load_eval(data).files])
    if not splits:
        raise MaskclsError(f"{data}: holds neither train/train.csv nor eval/info.csv; point maskcls crop at a data set")
    settings = settings or DetectorSettings()
    if onet == "tuned":
        if "train" not in splits:
            raise MaskclsError(f"{data}: the tuned O-net learns from train/'s bare photos and there is no train/train.csv; "
                               "pass --onet packaged")
        bare = train.images.loc[train.images["mask"] == MASK_NAMES.index("not wear"), "file"]
        settings = replace(settings, onet=tuned_onet(list(bare), settings, progress=progress))
    elif onet != "packaged":
        raise MaskclsError(f"onet={onet!r}: choose tuned or packaged")
    # The crop is the one training and prediction make from a run's recorded preprocessing.
    pre = Preprocess(1, 1, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "mtcnn", margin, settings, align)
    with folder_written_whole(out) as staging:
        counts = {split: _crop_split(folder, files, staging / split, pre, size, progress) for split, (folder, files) in splits.items()}
    return {**counts, "onet": settings.onet}


def _crop_split(folder: Path, files: list[Path], target: Path, pre: Preprocess, size, progress) -> int:
    faces = face_boxes(files, pre.detector, progress)
    images_dir = folder / "images"
    rows = []
    for file, face in zip(files, faces, strict=True):
        relative = file.relative_to(images_dir)
        crop = pre.face_crop(read_rgb(file), face)
        if size:
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR)
        destination = target / "images" / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        # The layout admits .jpg, .jpeg and .png only, each of which OpenCV encodes by its suffix.
        _, encoded = cv2.imencode(file.suffix.lower(), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        with atomic_write(destination, "wb", what="crop") as handle:
            handle.write(encoded.tobytes())
        points = "" if face.landmarks is None else " ".join(f"{x:.1f},{y:.1f}" for x, y in face.landmarks)
        rows.append([relative.as_posix(), *(round(v, 1) for v in face.box), round(face.score, 4), face.source, points])
    for name in COPIED_CSVS:
        if (folder / name).exists():
            shutil.copyfile(folder / name, target / name)
    with atomic_write(target / "crops.csv", what="crop table") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CROPS_HEADER)
        writer.writerows(rows)
    return len(rows)
