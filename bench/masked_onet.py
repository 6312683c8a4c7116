"""Does an O-net fine-tuned on masks drawn over the train set's own bare faces find masked faces?

    .venv/bin/python bench/masked_onet.py --data WIDE_DIR [--test-persons 300] [--seed 1] [--epochs 2] [--save ONET.pt]

An experiment, not yet part of the crop chain. The truth it learns from needs no labelled boxes:
each train person's normal (bare) photo is detected by the chain as it stands (bare faces are
found on almost every photo), and that box is the truth for the same photo with a mask drawn over
the lower face from MTCNN's five points (worn, nose out, on the chin) and kept bare. Chips around
the truth (jittered squares, as the refinement's O-net passes see them), random squares and the
chain's own candidates on the drawn photo train O-net's face score and box offsets; its landmarks
are held to the original network's. The train persons sampled as the test set are left out, and
their photos, with the data's own masks, are scored per mask state before and after (bench/faces.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import faces as bench_faces  # noqa: E402

from maskcls.faces.crop import crop_face, square_box  # noqa: E402
from maskcls.faces.detect import DetectorSettings, FaceDetector  # noqa: E402
from maskcls.faces.mtcnn import ONET_SIDE  # noqa: E402
from maskcls.imageio import read_rgb  # noqa: E402

PLACEMENTS = ("worn", "worn", "worn", "nose", "chin", None)  # None: the bare photo itself
FACE_IOU, PART_IOU, NOT_FACE_IOU = 0.5, 0.3, 0.25  # a face / a part whose box is learned / not a face


def draw_mask(rgb: np.ndarray, box, landmarks, rng: np.random.Generator, placement: str = "worn") -> np.ndarray:
    """`rgb` with a mask drawn over the face at `box`, placed from MTCNN's five points: its top
    edge on the nose bridge ("worn"), under the nose ("nose") or under the lips ("chin")."""
    img = rgb.astype(np.float32)
    points = np.asarray(landmarks, np.float64)
    eyes, nose, mouth = points[:2].mean(0), points[2], points[3:5].mean(0)
    down = mouth - eyes
    drop = np.hypot(*down) + 1e-6  # eyes to mouth
    down /= drop
    across = np.array([down[1], -down[0]]) * (1 if down[1] >= 0 else -1)
    half = (box[2] - box[0]) / 2 * rng.uniform(0.8, 1.0)
    nose_level = float(np.dot(nose - eyes, down))
    top = {"worn": nose_level * rng.uniform(0.3, 0.65), "nose": nose_level + (drop - nose_level) * rng.uniform(0.2, 0.5),
           "chin": drop * rng.uniform(1.1, 1.3)}[placement]
    bottom = max(drop * rng.uniform(1.55, 1.9), top + 0.5 * drop)
    middle = top + (bottom - top) * rng.uniform(0.4, 0.6)
    centre = eyes + np.array([((box[0] + box[2]) / 2 - eyes[0]) * 0.25, 0.0])
    sides = np.linspace(-1, 1, 24)
    curve = rng.uniform(0.05, 0.25) * drop * (placement == "worn")  # a worn mask dips from the bridge to the cheeks
    outline = [centre + across * x * half + down * (top + abs(x) ** 1.5 * curve) for x in sides]
    lower = half * rng.uniform(0.9, 1.05)
    outline += [centre + across * np.cos(a) * lower + down * (middle + np.sin(a) * (bottom - middle)) for a in np.linspace(0, np.pi, 24)]
    height, width = img.shape[:2]
    alpha = np.zeros((height * 4, width * 4), np.uint8)  # drawn at 4x and shrunk: soft edges
    cv2.fillPoly(alpha, [np.round(np.array(outline) * 4).astype(np.int32)], 255, lineType=cv2.LINE_AA)
    alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.5, 0.01 * half))[..., None]
    palette = ([235, 235, 235], [150, 195, 230], [40, 40, 45], [120, 200, 190], [230, 180, 200])
    base = np.asarray(palette[rng.integers(len(palette))] if rng.random() < 0.6 else rng.uniform(10, 250, 3), np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    v = ((xx - centre[0]) * across[0] + (yy - centre[1]) * across[1]) / half  # -1..1 across the face
    u = (xx - centre[0]) * down[0] + (yy - centre[1]) * down[1]  # pixels down the face
    shade = 1 - rng.uniform(0.15, 0.4) * np.clip(np.abs(v), 0, 1) ** 2  # the mask curves away at the sides
    kind = rng.choice(["plain", "pleats", "print", "seam"], p=[0.35, 0.3, 0.15, 0.2])
    texture = np.ones_like(shade)
    if kind == "pleats":
        texture = 1 - rng.uniform(0.08, 0.25) * (np.cos(2 * np.pi * (u - top) * rng.integers(3, 6) / (bottom - top)) > 0.7)
    elif kind == "print":
        period = rng.uniform(0.08, 0.25) * half
        texture = 1 - rng.uniform(0.2, 0.5) * ((np.floor(v * half / period) + np.floor(u / period)) % 2)
    elif kind == "seam":
        texture = 1 - 0.2 * (np.abs(v) < 0.03)
    colour = base * (shade * texture)[..., None] + rng.normal(0, rng.uniform(1, 6), img.shape).astype(np.float32)
    img = img * (1 - alpha) + colour * alpha
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


_detector = None


def _start_worker() -> None:
    global _detector
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    _detector = FaceDetector()


def _chips_of(job) -> list:
    """(chip, IoU with the truth, the truth's offsets from the chip's square) for one bare photo and its drawn copies."""
    file, seed = job
    rng = np.random.default_rng(seed)
    bare = read_rgb(file)
    height, width = bare.shape[:2]
    found = _detector.find(bare)
    if not found or found[0].source != "mtcnn" or found[0].score < 0.9:
        return []  # no sure bare face, no truth
    truth = np.array(found[0].box)
    side, cx, cy = max(truth[2] - truth[0], truth[3] - truth[1]), (truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2
    chips = []
    for placement in PLACEMENTS:
        rgb = bare if placement is None else draw_mask(bare, found[0].box, found[0].landmarks, rng, placement)
        boxes = []
        for _ in range(8):
            s = side * np.exp(rng.uniform(np.log(0.55), np.log(1.7)))
            x, y = cx + rng.uniform(-0.35, 0.35) * s, cy + rng.uniform(-0.35, 0.35) * s
            boxes.append([x - s / 2, y - s / 2, x + s / 2, y + s / 2])
        for _ in range(3):
            s = rng.uniform(0.05, 0.5) * min(height, width)
            x, y = rng.uniform(0, width - s), rng.uniform(0, height - s)
            boxes.append([x, y, x + s, y + s])
        maps = _detector._pnet_maps(rgb)
        for floors, source in ((_detector.settings.thresholds, "mtcnn"), (_detector.settings.rescue_thresholds, "mtcnn-low")):
            boxes += [face.box for face in _detector._mtcnn_pass(rgb, floors, source, maps)]
        for box in boxes:
            square = square_box(box, 0.0)  # the square the refinement's O-net passes cut
            chip = cv2.resize(crop_face(rgb, square, 0.0), (ONET_SIDE, ONET_SIDE), interpolation=cv2.INTER_AREA)
            chips.append((chip, bench_faces.iou(square, truth), (truth - np.array(square)) / (square[2] - square[0])))
    return chips


def make_chips(files: list[str], workers: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with get_context("fork").Pool(workers, initializer=_start_worker) as pool:
        found = [c for chips in pool.imap(_chips_of, [(f, i) for i, f in enumerate(files)], chunksize=8) for c in chips]
    images = torch.from_numpy(np.stack([c[0] for c in found])).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor([c[1] for c in found], dtype=torch.float32), torch.from_numpy(np.stack([c[2] for c in found]).astype(np.float32))


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return (images.float() - 127.5) * 0.0078125


def tune_onet(images, ious, offsets, epochs: int, lr: float = 3e-4, batch: int = 256, seed: int = 0):
    from facenet_pytorch.models.mtcnn import ONet

    torch.manual_seed(seed)
    net, original = ONet(), ONet().eval()
    with torch.no_grad():  # the landmarks stay the original network's: no truth for them here
        points = torch.cat([original(_normalise(images[i : i + 1024]))[1] for i in range(0, len(images), 1024)])
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    steps = len(images) // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps, pct_start=0.1)
    mirror_points = [1, 0, 2, 4, 3]  # a mirrored chip swaps the eyes and the mouth's corners
    net.train()
    for epoch in range(epochs):
        start, order = time.time(), torch.randperm(len(images))
        for step in range(steps):
            rows = order[step * batch : (step + 1) * batch]
            flip = torch.rand(len(rows)) < 0.5
            chips = torch.where(flip[:, None, None, None], images[rows].flip(3), images[rows])
            target_box, target_points = offsets[rows].clone(), points[rows].clone()
            target_box[flip] = torch.stack([-target_box[flip][:, 2], target_box[flip][:, 1], -target_box[flip][:, 0], target_box[flip][:, 3]], 1)
            flipped = target_points[flip]
            target_points[flip] = torch.cat([1 - flipped[:, :5][:, mirror_points], flipped[:, 5:][:, mirror_points]], 1)
            box, landmarks, probs = net(_normalise(chips))
            overlap = ious[rows]
            label = torch.where(overlap >= FACE_IOU, 1, torch.where(overlap < NOT_FACE_IOU, 0, -1))
            scored, boxed = label >= 0, overlap >= PART_IOU
            loss = F.nll_loss(torch.log(probs[scored] + 1e-7), label[scored]) + 2 * F.mse_loss(box[boxed], target_box[boxed])
            loss = loss + 10 * F.mse_loss(landmarks, target_points)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch}: loss {loss.item():.4f}, {time.time() - start:.0f} s", flush=True)
    return net.eval().state_dict()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--test-persons", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1, help="which train persons are the test set")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--save", type=Path, help="write the tuned O-net's state dict here")
    args = parser.parse_args(argv)
    table = bench_faces.load(args.data, "train")
    test = bench_faces.sample(table, args.test_persons, args.seed)
    bare = table[~table["person"].isin(set(test["person"])) & table["path"].str.rsplit("/", n=1).str[-1].str.startswith("normal.")]
    start = time.time()
    images, ious, offsets = make_chips(list(bare["file"]), args.workers)
    print(f"{len(images)} chips from {len(bare)} bare photos in {time.time() - start:.0f} s: faces {(ious >= FACE_IOU).sum()}, "
          f"parts {((ious >= PART_IOU) & (ious < FACE_IOU)).sum()}, not faces {(ious < NOT_FACE_IOU).sum()}", flush=True)
    torch.set_num_threads(args.workers)
    state = tune_onet(images, ious, offsets, args.epochs)
    if args.save:
        torch.save(state, args.save)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    before = bench_faces.show(f"{len(test)} test photos, facenet-pytorch's O-net", bench_faces.run(DetectorSettings(), test))
    import facenet_pytorch.models.mtcnn as networks

    packaged = networks.ONet

    class TunedONet(packaged):
        def __init__(self, pretrained=True):
            super().__init__(pretrained=False)
            self.load_state_dict(state)

    networks.ONet = TunedONet  # MTCNNCascade builds its O-net from facenet-pytorch's class
    try:
        after = bench_faces.show(f"{len(test)} test photos, the tuned O-net", bench_faces.run(DetectorSettings(), test))
    finally:
        networks.ONet = packaged
    for state_name in bench_faces.STATES:
        b, a = (t.set_index("state").loc[state_name, "iou>=.5"] for t in (before, after))
        print(f"{state_name}: main face IoU >= 0.5 {b:.3f} -> {a:.3f} ({a / bench_faces.TARGET_RATE:.3f} x the 0.99 target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
