"""Face detection on wide scenes, per mask state: does the crop chain find the right face, and how fast?

    .venv/bin/python bench/faces.py --data WIDE_DIR [--persons 100] [--sweep] [--rescue T,T,T|none] [--rescue-below S] [--refine-steps N]
        [--score-power P] [--haar-full-size] [--no-onet-scan] [--profile]
        [--cascade onnxruntime|facenet-pytorch] [--onet DIGEST]

WIDE_DIR holds train/ and eval/, each with images/ and a faces.csv (path,x0,y0,x1,y1,mask_state,
box_source: the true face box of every photo), as bench/widen.py and `maskcls demo-data` write them.
Per mask state (worn / incorrect / not worn) and overall it prints: the share of photos where one
of MTCNN's two passes finds a face ("found"), where one of its boxes is the true face ("recall":
IoU >= 0.5), where the whole chain's main face (`FaceDetector.main_face`: the best ranked of
MTCNN's passes, else the O-net scan's, else Haar's largest, else the centre) came from the low
pass, the O-net scan, Haar or the centre, the main face's IoU >= 0.5 rate and mean IoU, false
boxes per photo, and detection milliseconds per photo (p50/p95). `--sweep` tries a grid of detector settings on a sample
of TRAIN persons only and picks one; the pick is then scored once on eval. The issue's targets:
IoU >= 0.5 on >= 99 % of photos of every mask state, and about 25 ms per photo.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from maskcls.faces.detect import DetectorSettings, FaceDetector, centre_face  # noqa: E402
from maskcls.faces.mtcnn import CASCADES  # noqa: E402
from maskcls.imageio import read_rgb  # noqa: E402

STATES = ("worn", "incorrect", "not worn")
STEPS = {"low pass": "mtcnn-low", "scan": "onet-scan", "haar": "haar", "centre": "centre"}  # the chain's steps after the first pass
TARGET_RATE, TARGET_MS = 0.99, 25.0
GRID = [(t, m, f) for f in (0.709, 0.8) for m in (0.05, 0.08, 0.12) for t in ((0.6, 0.7, 0.7), (0.5, 0.6, 0.6), (0.4, 0.5, 0.5), (0.3, 0.4, 0.4))
        if f == 0.709 or m == 0.08]


def load(data: Path, split: str) -> pd.DataFrame:
    """faces.csv of a split, with the photo's file and its person (train: the folder; eval: meta.csv's id)."""
    folder = Path(data) / split
    table = pd.read_csv(folder / "faces.csv", dtype={"path": str})
    table["file"] = [str(folder / "images" / p) for p in table["path"]]
    table["person"] = [str(Path(p).parent) if "/" in p else p for p in table["path"]]
    meta = folder / "meta.csv"
    if split == "eval" and meta.exists():
        ids = pd.read_csv(meta, dtype=str).set_index("ImageID")["id"]
        table["person"] = [ids.get(p, p) for p in table["path"]]
    return table


def sample(table: pd.DataFrame, persons: int | None, seed: int = 0) -> pd.DataFrame:
    names = sorted(table["person"].unique())
    if persons and persons < len(names):
        names = set(np.random.default_rng(seed).choice(names, persons, replace=False).tolist())
        table = table[table["person"].isin(names)]
    return table.reset_index(drop=True)


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def run(settings: DetectorSettings, table: pd.DataFrame) -> pd.DataFrame:
    """One row per photo: what MTCNN and the chain found, the main face's IoU, and the time taken."""
    detector = FaceDetector(settings)
    detector.detect(read_rgb(table["file"].iloc[0]))  # builds the networks outside the timing
    rows = []
    for photo in table.itertuples():
        rgb = read_rgb(photo.file)
        truth = (photo.x0, photo.y0, photo.x1, photo.y1)
        start, cpu = time.perf_counter(), time.thread_time()
        found = detector.find(rgb)  # the chain of FaceDetector.main_face
        main = found[0] if found else centre_face(*rgb.shape[:2])
        ms, cpu_ms = 1000 * (time.perf_counter() - start), 1000 * (time.thread_time() - cpu)
        boxes = [f for f in found if f.source.startswith("mtcnn")]
        ious = [iou(f.box, truth) for f in boxes]
        best = max(boxes, key=lambda f: f.score) if boxes else main
        rows.append({"path": photo.path, "state": STATES[photo.mask_state], "found": bool(boxes), "recall": max(ious, default=0) >= 0.5,
                     "source": main.source, "iou": iou(main.box, truth), "iou_top_score": iou(best.box, truth),
                     "false": sum(v < 0.5 for v in ious), "ms": ms, "cpu_ms": cpu_ms})
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    groups = [(s, results[results["state"] == s]) for s in STATES] + [("all", results)]
    return pd.DataFrame([{
        "state": name, "photos": len(g), "found": g["found"].mean(), "recall": g["recall"].mean(),
        **{step: (g["source"] == source).mean() for step, source in STEPS.items()},
        "iou>=.5": (g["iou"] >= 0.5).mean(), "mean_iou": g["iou"].mean(), "iou>=.5 top-score": (g["iou_top_score"] >= 0.5).mean(),
        "false/photo": g["false"].mean(), "ms_p50": g["ms"].median(), "ms_p95": g["ms"].quantile(0.95),
        "cpu_ms_p50": g["cpu_ms"].median(), "cpu_ms_p95": g["cpu_ms"].quantile(0.95)} for name, g in groups if len(g)])


def show(title: str, results: pd.DataFrame) -> pd.DataFrame:
    table = summary(results)
    print(f"\n{title}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    worst = table[table["state"] != "all"]["iou>=.5"].min()
    p50, cpu = table.iloc[-1]["ms_p50"], table.iloc[-1]["cpu_ms_p50"]
    print(f"targets: worst mask state IoU>=0.5 {worst:.3f} = {worst / TARGET_RATE:.3f} x the 0.99 target; p50 {p50:.0f} ms/photo wall "
          f"({cpu:.0f} ms CPU, 1 thread) = {p50 / TARGET_MS:.1f} x ({cpu / TARGET_MS:.1f} x) the ~25 ms target", flush=True)
    return table


def sweep(table: pd.DataFrame, chain: dict) -> DetectorSettings:
    """The first pass's settings over GRID, with the rest of the chain (`chain`: second pass, refinement) fixed."""
    lines, best = [], None
    for thresholds, min_face, factor in GRID:
        settings = DetectorSettings(thresholds=thresholds, min_face=min_face, pyramid_factor=factor, **chain)
        s = summary(run(settings, table)).set_index("state")
        rate = s.loc[list(STATES), "iou>=.5"]
        key = (rate.min(), s.loc["all", "iou>=.5"], -s.loc["all", "ms_p50"])
        best = max(best or (key, settings), (key, settings), key=lambda b: b[0])
        lines.append({"thresholds": "/".join(map(str, thresholds)), "min_face": min_face, "factor": factor,
                      **{f"found {st}": s.loc[st, "found"] for st in STATES}, **{f"iou.5 {st}": rate[st] for st in STATES},
                      "iou.5 all": s.loc["all", "iou>=.5"], "mean_iou": s.loc["all", "mean_iou"], "false/ph": s.loc["all", "false/photo"],
                      "ms p50": s.loc["all", "ms_p50"], "ms p95": s.loc["all", "ms_p95"], "cpu p50": s.loc["all", "cpu_ms_p50"]})
        print(pd.DataFrame(lines[-1:]).to_string(index=False, header=len(lines) == 1, float_format=lambda v: f"{v:.3f}"), flush=True)
    print(f"\npicked (best worst-state IoU>=0.5 rate, then overall, then speed): {best[1]}")
    return best[1]


def profile(settings: DetectorSettings, table: pd.DataFrame, photos: int = 30) -> None:
    """Where one detection's time goes: the image pyramid, each network's runs, the box crops
    for R- and O-net, the NMS, and the rest (box bookkeeping in Python), timed through wrappers."""
    from maskcls.faces import mtcnn

    detector = FaceDetector(settings)
    images = [read_rgb(f) for f in table["file"].iloc[:photos]]
    detector.find(images[0])
    cascade = detector._network()
    spent = {}

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            name = key(*args) if callable(key) else key
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
            return out
        return wrapper

    originals = {n: getattr(mtcnn, n) for n in ("_pyramid", "_chips", "nms")}
    mtcnn._pyramid = timed(originals["_pyramid"], "pyramid")
    mtcnn._chips = timed(originals["_chips"], lambda rgb, boxes, side: f"crops for {'R' if side == mtcnn.RNET_SIDE else 'O'}-net")
    mtcnn.nms = timed(originals["nms"], "nms")
    sessions = {n: getattr(cascade, n) for n in ("_pnet", "_rnet", "_onet")}
    for name, session in sessions.items():
        session.run = timed(session.run, f"{name[1].upper()}-net runs")
    start = time.perf_counter()
    try:
        for rgb in images:
            detector.find(rgb)
    finally:
        for name, fn in originals.items():
            setattr(mtcnn, name, fn)
        for session in sessions.values():
            del session.run
    total = time.perf_counter() - start
    print(f"\nprofile of {photos} train detections (FaceDetector.find) with {settings}: {1000 * total / photos:.1f} ms each")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:18s} {1000 * seconds / photos:6.1f} ms ({seconds / total:5.1%})")
    print(f"  rest (box bookkeeping in python, the refinement's crops; decode excluded) {1000 * (total - sum(spent.values())) / photos:.1f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--persons", type=int, default=100, help="train persons sampled for the sweep (default 100 = 700 photos)")
    parser.add_argument("--eval-persons", type=int, default=None, help="eval persons scored (default: all)")
    parser.add_argument("--sweep", action="store_true", help="sweep detector settings on train, then score the pick on eval")
    parser.add_argument("--rescue", default=",".join(map(str, DetectorSettings.rescue_thresholds)),
                        help="the second pass's three floors, comma-separated, or none (default %(default)s)")
    parser.add_argument("--refine-steps", type=int, default=DetectorSettings.refine_steps, help="O-net passes over each box")
    parser.add_argument("--rescue-below", type=float, default=DetectorSettings.rescue_below,
                        help="run the low pass also when no first-pass face scores above this (0: only when it finds none)")
    parser.add_argument("--score-power", type=float, default=DetectorSettings.score_power,
                        help="the main face is the largest by area x score ** this (0: the largest)")
    parser.add_argument("--haar-full-size", action="store_true", help="run the Haar fallback on the full-size photo (as before haar_downscale)")
    parser.add_argument("--no-onet-scan", action="store_true", help="no O-net scan where both MTCNN passes find nothing (as before onet_scan)")
    parser.add_argument("--profile", action="store_true", help="time the MTCNN stages of 30 train detections")
    parser.add_argument("--thresholds", type=float, nargs=3, default=DetectorSettings.thresholds, help="settings scored without --sweep")
    parser.add_argument("--save", type=Path, help="write the eval photos' results (one row a photo) to this CSV")
    parser.add_argument("--min-face", type=float, default=DetectorSettings.min_face)
    parser.add_argument("--factor", type=float, default=DetectorSettings.pyramid_factor)
    parser.add_argument("--onet", default=None, help="digest of a tuned O-net (a fit's onet-<digest>.safetensors; default: facenet-pytorch's)")
    parser.add_argument("--cascade", default=DetectorSettings.cascade, choices=CASCADES,
                        help="which MTCNN implementation runs (--profile times the onnxruntime one only)")
    args = parser.parse_args(argv)
    if args.profile and args.cascade != "onnxruntime":
        parser.error("--profile times the onnxruntime cascade's stages only")
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    chain = {"rescue_thresholds": None if args.rescue == "none" else tuple(float(v) for v in args.rescue.split(",")),
             "refine_steps": args.refine_steps, "cascade": args.cascade, "rescue_below": args.rescue_below, "score_power": args.score_power,
             "haar_downscale": not args.haar_full_size, "onet": args.onet, "onet_scan": not args.no_onet_scan}
    settings = DetectorSettings(thresholds=args.thresholds, min_face=args.min_face, pyramid_factor=args.factor, **chain)
    if args.persons:  # --persons 0: score eval only, with the settings given
        train = sample(load(args.data, "train"), args.persons)
        print(f"train sample: {train['person'].nunique()} persons, {len(train)} photos from {args.data / 'train'}", flush=True)
        settings = sweep(train, chain) if args.sweep else settings
        if not args.sweep:
            show(f"train sample, {settings}", run(settings, train))
        if args.profile:
            profile(settings, train)
    if (args.data / "eval" / "faces.csv").exists() and args.eval_persons != 0:
        evaluation = sample(load(args.data, "eval"), args.eval_persons)
        title = f"eval: {evaluation['person'].nunique()} persons, {len(evaluation)} photos, {settings}"
        results = run(settings, evaluation)
        show(title, results)
        if args.save:
            results.to_csv(args.save, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
