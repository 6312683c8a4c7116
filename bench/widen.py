"""Widen the stand-in: each 200x200 face photo composited into a 384x512 upper-body scene of its own
(or, with --style camera, into a camera frame drawn by bench/camera_scenes.py).

    .venv/bin/python bench/widen.py --src data/standin --out /tmp/wide-standin [--persons N] [--seed S] [--style door|camera]

Writes the competition layout (train/train.csv, train/meta.csv, train/images/<person>/<photo>.jpg,
eval/info.csv, eval/truth.csv, eval/meta.csv, eval/images/<ImageID>) plus `faces.csv` in each split:
path,x0,y0,x1,y1,mask_state,box_source (path relative to the split's images folder, the true face box
in scene pixels). The true box comes from MTCNN (facenet-pytorch defaults) on the person's unmasked
normal photo (feathered onto a grey border, see normal_boxes), mapped through the scene's scale and
offset ("mtcnn-normal"); where that photo has no detection, a fixed fraction of the tile, the median
over detected persons ("median-fraction").
Every scene is drawn from its own random stream, seeded by (seed, split/path): reruns are byte-identical.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from camera_scenes import compose_camera  # noqa: E402
from common import colour  # noqa: E402

WIDTH, HEIGHT = 384, 512
KINDS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
FACE_WIDTH = (0.15, 0.45)  # true face box width as a fraction of the frame width


def mask_state(kind: str) -> int:
    return {"incorrect_mask": 1, "normal": 2}.get(kind, 0)


def photo_rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little"))


def background(rng) -> np.ndarray:
    kind = rng.choice(["wall", "door", "gradient", "clutter", "tiles"])
    img = np.empty((HEIGHT, WIDTH, 3), np.float32)
    img[:] = colour(rng)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        t = (np.cos(angle) * xx / WIDTH + np.sin(angle) * yy / HEIGHT)
        t = ((t - t.min()) / (np.ptp(t) + 1e-6))[..., None]
        img = img * (1 - t) + colour(rng) * t
    elif kind == "door":
        x0 = int(rng.uniform(-0.2, 0.5) * WIDTH)
        x1 = x0 + int(rng.uniform(0.45, 0.8) * WIDTH)
        frame = int(rng.integers(5, 16))
        cv2.rectangle(img, (x0, int(rng.uniform(-0.1, 0.15) * HEIGHT)), (x1, HEIGHT + 10), colour(rng).tolist(), -1)
        cv2.rectangle(img, (x0, int(rng.uniform(-0.1, 0.15) * HEIGHT)), (x1, HEIGHT + 10), (colour(rng, 0, 120)).tolist(), frame)
        for _ in range(int(rng.integers(0, 3))):  # panels
            px, py = int(rng.uniform(x0, x1)), int(rng.uniform(0, HEIGHT))
            cv2.rectangle(img, (px, py), (px + int(rng.uniform(30, 120)), py + int(rng.uniform(40, 200))), colour(rng).tolist(), 2)
        cv2.circle(img, (x1 - 3 * frame, int(rng.uniform(0.45, 0.65) * HEIGHT)), int(rng.integers(4, 10)), colour(rng).tolist(), -1)
    elif kind == "clutter":
        for _ in range(int(rng.integers(8, 40))):
            c, p = colour(rng, 0, 255).tolist(), rng.uniform([0, 0], [WIDTH, HEIGHT]).astype(int)
            size = rng.uniform(8, 160, 2).astype(int)
            shape, fill = rng.integers(0, 3), -1 if rng.random() < 0.6 else int(rng.integers(1, 5))
            if shape == 0:
                cv2.rectangle(img, tuple(p.tolist()), tuple((p + size).tolist()), c, fill)
            elif shape == 1:
                cv2.ellipse(img, tuple(p.tolist()), tuple((size // 2).tolist()), float(rng.uniform(0, 180)), 0, 360, c, fill)
            else:
                cv2.line(img, tuple(p.tolist()), tuple((p + size - 80).tolist()), c, int(rng.integers(1, 6)))
    elif kind == "tiles":
        step, grout, base = int(rng.integers(20, 70)), int(rng.integers(1, 5)), img[0, 0].copy()
        for y in range(0, HEIGHT, step):
            for x in range(0, WIDTH, step):
                img[y : y + step, x : x + step] = base * rng.uniform(0.85, 1.15)
        line = colour(rng)
        for g in range(grout):
            img[g::step] = line
            img[:, g::step] = line
    low = cv2.resize(rng.normal(0, rng.uniform(2, 12), (HEIGHT // 32, WIDTH // 32, 3)).astype(np.float32), (WIDTH, HEIGHT))
    img += low
    if rng.random() < 0.4:  # depth of field: the wall behind is out of focus
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1, 4))
    return img


def tile_alpha(size: int, rng) -> np.ndarray:
    """The whole tile, feathered at its edges. A wide photo of a person shows the whole head, so
    the tile's hair, ears and own background stay: cut to an ellipse around the face box, the
    scene loses the hair the tight photo shows, a gender cue no crop can bring back."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    feather = max(2.0, rng.uniform(0.03, 0.07) * size)
    edge = np.minimum(np.minimum(xx, size - xx), np.minimum(yy, size - yy)) / feather
    alpha = np.clip(edge, 0, 1)
    return (alpha * alpha * (3 - 2 * alpha))[..., None]  # smoothstep


def compose(tile: np.ndarray, box, rng) -> tuple[np.ndarray, tuple]:
    """One scene (HEIGHTxWIDTHx3 uint8 RGB) and the true face box in it; `box` is in tile pixels."""
    img = background(rng)
    bw, bh = box[2] - box[0], box[3] - box[1]
    side = max(8, int(round(tile.shape[1] * rng.uniform(*FACE_WIDTH) * WIDTH / bw)))
    s = side / tile.shape[1]
    fw, fh = bw * s, bh * s
    cx = rng.uniform(fw / 2, WIDTH - fw / 2)
    cy = rng.uniform(0.18, 0.5) * HEIGHT if rng.random() < 0.85 else rng.uniform(0.5, 0.68) * HEIGHT
    cy = float(np.clip(cy, fh / 2, HEIGHT - fh / 2))
    ox, oy = int(round(cx - (box[0] + box[2]) / 2 * s)), int(round(cy - (box[1] + box[3]) / 2 * s))
    face = (ox + box[0] * s, oy + box[1] * s, ox + box[2] * s, oy + box[3] * s)
    fx, chin = (face[0] + face[2]) / 2, face[3]
    skin = np.median(tile[int(0.3 * tile.shape[0]) : int(0.4 * tile.shape[0]), : tile.shape[1] // 4].reshape(-1, 3), 0)
    # torso: shoulders (an ellipse) and the body below them, in a clothing colour with vertical shading
    body = np.zeros((HEIGHT, WIDTH), np.uint8)
    top = chin + rng.uniform(0.15, 0.45) * fh
    axes = (int(fw * rng.uniform(1.2, 1.9)), int(fh * rng.uniform(0.35, 0.7)))
    bx = int(fx + rng.normal(0, 0.1 * fw))
    cv2.ellipse(body, (bx, int(top + axes[1])), axes, 0, 180, 360, 255, -1)
    cv2.rectangle(body, (bx - axes[0], int(top + axes[1])), (bx + axes[0], HEIGHT), 255, -1)
    shade = np.linspace(rng.uniform(0.8, 1.1), rng.uniform(0.6, 1.0), HEIGHT, dtype=np.float32)[:, None, None]
    cloth = colour(rng, 5, 250) * shade
    if rng.random() < 0.2:  # stripes
        cloth[:: int(rng.integers(6, 20))] *= rng.uniform(0.4, 0.8)
    r0 = int(np.clip(top - 4, 0, HEIGHT - 8))
    m = cv2.GaussianBlur(body[r0:], (0, 0), 1.5)[..., None].astype(np.float32) / 255
    img[r0:] += (cloth[r0:] - img[r0:]) * m
    cv2.rectangle(img, (int(fx - 0.22 * fw), int(chin - 0.2 * fh)), (int(fx + 0.22 * fw), int(top + axes[1] * 0.6)), (skin * 0.85).tolist(), -1)
    # the face tile, blended in through its alpha
    big = cv2.resize(tile, (side, side), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC).astype(np.float32)
    alpha = tile_alpha(side, rng)
    x0, y0, x1, y1 = max(0, ox), max(0, oy), min(WIDTH, ox + side), min(HEIGHT, oy + side)
    a, t = alpha[y0 - oy : y1 - oy, x0 - ox : x1 - ox], big[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + t * a
    # the camera
    if rng.random() < 0.4:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2))
    mean, contrast = float(img.mean()), rng.uniform(0.8, 1.2)
    img *= contrast
    img += mean * (1 - contrast) + rng.uniform(-25, 25)
    if rng.random() < 0.6:
        img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(1, 7)
    face = tuple(float(np.clip(v, 0, lim)) for v, lim in zip(face, (WIDTH, HEIGHT) * 2, strict=True))
    np.clip(img + 0.5, 0, 255, out=img)
    return img.astype(np.uint8), face


def on_grey(tile: np.ndarray, pad: int) -> np.ndarray:
    """The tile feathered onto a flat grey border `pad` pixels wide, as a scene shows it."""
    size = tile.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    alpha = np.clip(np.minimum(np.minimum(xx, size - xx), np.minimum(yy, size - yy)) / (0.05 * size), 0, 1)[..., None]
    out = np.full((size + 2 * pad, size + 2 * pad, 3), 128, np.float32)
    out[pad : pad + size, pad : pad + size] = 128 * (1 - alpha) + tile * alpha
    return out.astype(np.uint8)


def normal_boxes(files: dict, pad: int = 100) -> tuple[dict, dict]:
    """MTCNN (facenet-pytorch defaults) on each person's normal photo, feathered onto a grey border:
    {person: (box as a fraction of the tile, source)}, persons without a detection getting the median
    fraction; and a summary. The border matters: on the bare tight photo, whose face touches the edges,
    MTCNN's box runs up to half a tile past them, a box no detector reproduces once the tile sits in a scene."""
    import torch
    from facenet_pytorch import MTCNN

    torch.set_num_threads(1)
    mtcnn, found = MTCNN(keep_all=True, device="cpu"), {}
    for person, file in files.items():
        rgb = cv2.cvtColor(cv2.imread(str(file)), cv2.COLOR_BGR2RGB)
        boxes, _ = mtcnn.detect(on_grey(rgb, pad))
        if boxes is not None:  # largest first; rounded so that a rerun maps to the same pixels
            found[person] = tuple(np.round((np.asarray(boxes[0], np.float64) - pad) / rgb.shape[1], 4).tolist())
    median = tuple(np.median(np.array(list(found.values())), 0).round(4).tolist()) if found else (0.05, -0.1, 0.9, 0.97)
    result = {p: (found.get(p, median), "mtcnn-normal" if p in found else "median-fraction") for p in files}
    return result, {"persons": len(files), "detected": len(found), "median_fraction": median}


def _widen_one(job) -> list:
    src, dst, rel, box_fraction, source, state, seed, key, style = job
    tile = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2RGB)
    scene, face = STYLES[style](tile, [v * tile.shape[1] for v in box_fraction], photo_rng(seed, key))
    rng = photo_rng(seed, key + ":jpeg")
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(scene, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 96))])
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(data.tobytes())
    return [rel, *(round(v, 1) for v in face), state, source]


def widen_split(src_root, out_root, split: str, seed: int = 0, limit: int | None = None, workers: int = 1,
                style: str = "door") -> Path:
    """Write the wide `split` ("train" or "eval") of `src_root` into `out_root`/`split`, its scenes
    drawn in `style` (a key of STYLES); returns that folder."""
    src, out = Path(src_root) / split, Path(out_root) / split
    if split == "train":
        table = pd.read_csv(src / "train.csv", dtype=str, keep_default_na=False).iloc[:limit]
        meta = pd.read_csv(src / "meta.csv", dtype=str, keep_default_na=False)
        meta = meta[meta["path"].isin(table["path"])]
        photos = [(p, f"{p}/{k}.jpg", k) for p in table["path"] for k in KINDS]
        normals = {p: src / "images" / p / "normal.jpg" for p in table["path"]}
        copies = {"train.csv": table, "meta.csv": meta}
    else:
        meta = pd.read_csv(src / "meta.csv", dtype=str, keep_default_na=False)
        keep = sorted(meta["id"].unique())[:limit]
        meta = meta[meta["id"].isin(keep)]
        photos = list(zip(meta["id"], meta["ImageID"], meta["kind"], strict=True))
        normals = {i: src / "images" / f for i, f, k in zip(meta["id"], meta["ImageID"], meta["kind"], strict=True) if k == "normal"}
        copies = {name: pd.read_csv(src / name, dtype=str, keep_default_na=False).set_index("ImageID").loc[meta["ImageID"]].reset_index()
                  for name in ("info.csv", "truth.csv")} | {"meta.csv": meta}
    boxes, summary = normal_boxes(normals)
    fallback = (summary["median_fraction"], "median-fraction")
    jobs = [(src / "images" / rel, out / "images" / rel, rel, *boxes.get(person, fallback), mask_state(kind), seed, f"{split}/{rel}", style)
            for person, rel, kind in photos]
    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:
            rows = list(pool.imap(_widen_one, jobs, chunksize=32))
    else:
        rows = [_widen_one(job) for job in jobs]
    pd.DataFrame(rows, columns=["path", "x0", "y0", "x1", "y1", "mask_state", "box_source"]).to_csv(out / "faces.csv", index=False)
    for name, frame in copies.items():
        frame.to_csv(out / name, index=False)
    summary["photos"] = len(rows)
    (out / "widen.json").write_text(json.dumps({"seed": seed, "style": style, "tile_boxes": summary}, indent=1))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=Path(__file__).resolve().parent.parent / "data" / "standin", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--persons", type=int, default=None, help="the first N persons of each split (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=["train", "eval", "all"], default="all")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--style", choices=["door", "camera"], default="door",
                        help="door: 384x512 upper-body scenes (the default, what the benchmarks train on); camera: "
                             "bench/camera_scenes.py's frames, a style nothing is tuned on, to test against")
    args = parser.parse_args(argv)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        print(f"widen: {args.out} exists and is not an empty folder; choose a new --out", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    for split in ("train", "eval") if args.split == "all" else (args.split,):
        out = widen_split(args.src, args.out, split, args.seed, args.persons, args.workers, args.style)
        info = json.loads((out / "widen.json").read_text())["tile_boxes"]
        print(f"{split}: {info['photos']} scenes in {out}; true box from MTCNN on the normal photo for "
              f"{info['detected']}/{info['persons']} persons, median tile fraction {info['median_fraction']} for the rest", flush=True)
    return 0


STYLES = {"door": compose, "camera": compose_camera}


if __name__ == "__main__":
    sys.exit(main())
