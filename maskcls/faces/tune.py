"""Fine-tuning MTCNN's O-net on masks drawn over a data set's own bare faces.

A worn mask hides the nose and mouth that O-net looks for: facenet-pytorch's network scores
many masked faces low, and boxes some on the eyes alone. The truth to learn from needs no
labelled boxes. Each sampled person's bare (normal) photo is detected by the chain with the
packaged O-net, which finds bare faces almost always; a sure first-pass box there is the truth
for the same photo with a mask drawn over the lower face (masks.py: worn, nose out, on the chin)
and for the bare photo itself. Three kinds of 48-pixel chip teach O-net's face score and box
offsets: jittered squares around the truth (as the refinement passes cut them), random squares
elsewhere, and the chain's own candidates on the drawn photo. Its landmarks are held to the
packaged network's, as nothing here says where they are. The data's own faces matter: a network
tuned on the demo's drawn faces found fewer of the stand-in's masked faces than one tuned on the
stand-in's (README, benchmarks).

A tuning runs once per data set and settings: its result is memoised by the sampled photos'
content, the detector settings and the tuning's own, and the weights are stored by digest (onet.py).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou
from tqdm import tqdm

from ..errors import MaskclsError
from ..fileio import atomic_write_text
from ..imageio import read_rgb
from .cache import MAX_DETECT_WORKERS, content_key, settings_key, single_threaded_worker
from .crop import crop_face, square_box
from .detect import DetectorSettings, FaceDetector
from .masks import draw_mask
from .mtcnn import ONET_SIDE, normalise, onet_network
from .onet import save_onet, store_dir, weights_name

log = logging.getLogger(__name__)

VIEWS = ("worn", "worn", "worn", "nose", "chin", None)  # the drawn copies of each bare photo; None: the bare photo itself
SURE_SCORE = 0.9  # a bare photo's first-pass face scoring under this is no truth
JITTERED, RANDOM = 8, 3  # chips per view around the truth, and anywhere in the photo
JITTER_SCALE, JITTER_SHIFT = (0.55, 1.7), 0.35  # side as a multiple of the truth's, centre moved by this much of the side
RANDOM_SIDE = (0.05, 0.5)  # of the photo's short side
FACE_IOU, PART_IOU, NOT_FACE_IOU = 0.5, 0.3, 0.25  # a chip showing a face / part of one, whose box is learned / none
BATCH, LR, WARMUP = 256, 3e-4, 0.1
BOX_WEIGHT, LANDMARK_WEIGHT = 2.0, 10.0  # MTCNN's own training weighs the box above the score
MIRRORED_POINTS = [1, 0, 2, 4, 3]  # a mirrored face swaps the eyes and the mouth's corners
# A door camera at night sends infrared frames, grey, where a mask stands out from the skin by
# its brightness alone: this share of the views is turned grey, the bare photo's included.
GREY_VIEWS = 0.2
# Everything of the recipe fixed in code, for the memo key: a change here tunes anew.
RECIPE = {"views": VIEWS, "sure": SURE_SCORE, "chips": [JITTERED, RANDOM, JITTER_SCALE, JITTER_SHIFT, RANDOM_SIDE],
          "iou": [FACE_IOU, PART_IOU, NOT_FACE_IOU], "train": [BATCH, LR, WARMUP, BOX_WEIGHT, LANDMARK_WEIGHT], "grey": GREY_VIEWS, "version": 1}


@dataclass(frozen=True)
class OnetTuning:
    photos: int = 700  # bare photos sampled, one per person
    epochs: int = 2
    seed: int = 0  # which photos, which masks, and the training's shuffles

    def __post_init__(self):
        if self.photos < 1 or self.epochs < 1:
            raise MaskclsError(f"O-net tuning photos={self.photos}, epochs={self.epochs}: give at least one of each")


def tuned_onet(bare_files, settings: DetectorSettings, tuning: OnetTuning = OnetTuning(), progress: bool = False) -> str | None:
    """The digest of O-net tuned on `bare_files` (photos of unmasked faces, one per person) for
    the chain `settings` describe; tuned once, then found in the memo. None, with a warning,
    where no photo has a sure face to learn from: the packaged O-net is then the one to use."""
    settings = replace(settings, onet=None)  # the truth comes from the packaged network
    files = sorted(set(map(str, bare_files)))
    rng = np.random.default_rng(tuning.seed)
    files = [files[i] for i in sorted(rng.choice(len(files), min(tuning.photos, len(files)), replace=False))] if files else []
    key = memo_key([content_key(f) for f in files], settings, tuning)
    memo = store_dir() / f"tuning-{key}.json"
    try:
        store_dir().mkdir(parents=True, exist_ok=True)
        lock = open(store_dir() / f"tuning-{key}.lock", "w")
    except OSError as exc:
        raise MaskclsError(f"{store_dir()}: cannot be written ({exc}); point MASKCLS_CACHE at a writable folder") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # fits starting together (a search's workers) tune once: the others wait, then read the memo
        done = json.loads(memo.read_text()) if memo.is_file() else None
        if done is None or (done["onet"] is not None and not (store_dir() / weights_name(done["onet"])).is_file()):
            if progress:
                print(f"tuning MTCNN's O-net on masks drawn over {len(files)} bare train photos (once per data set and settings)",
                      flush=True)
            chips, ious, offsets = make_chips(files, settings, tuning.seed, progress)
            digest = save_onet(train_onet(chips, ious, offsets, tuning.epochs, tuning.seed, progress)) if (ious >= FACE_IOU).any() else None
            done = {"onet": digest, "photos": len(files), "chips": len(chips)}
            atomic_write_text(memo, json.dumps(done) + "\n", what="O-net tuning memo")
    return _untuned(len(files)) if done["onet"] is None else done["onet"]


def _untuned(photos: int) -> None:
    log.warning("O-net tuning: none of the %d sampled bare photos has a face MTCNN is sure of, so there is nothing to learn "
                "from; detecting with facenet-pytorch's O-net", photos)


def memo_key(contents: list[str], settings: DetectorSettings, tuning: OnetTuning) -> str:
    blob = json.dumps({"photos": contents, "detector": settings_key(settings), "tuning": asdict(tuning), "recipe": RECIPE},
                      sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_chips(files: list[str], settings: DetectorSettings, seed: int, progress: bool = False):
    """(chips N x 48 x 48 x 3 uint8, IoU of each with the truth N, the truth's offsets from each chip N x 4)."""
    jobs = [(settings, file, seed, i) for i, file in enumerate(files)]
    workers = min(os.cpu_count() or 1, MAX_DETECT_WORKERS, len(jobs))
    bar = dict(total=len(jobs), desc="O-net chips", unit="photo", disable=not progress, leave=False)
    if workers < 2:
        found = [chips_of(job) for job in tqdm(jobs, **bar)]
    else:
        with get_context("fork").Pool(workers, initializer=single_threaded_worker) as pool:
            found = list(tqdm(pool.imap(chips_of, jobs, chunksize=4), **bar))
    found = [c for chips in found for c in chips]
    if not found:
        return np.zeros((0, ONET_SIDE, ONET_SIDE, 3), np.uint8), np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
    return (np.stack([c[0] for c in found]), np.array([c[1] for c in found], np.float32),
            np.stack([c[2] for c in found]).astype(np.float32))


_detectors: dict = {}


def chips_of(job) -> list:
    """(chip, IoU with the truth, the truth's offsets in units of the chip's side) for one bare photo and its drawn copies."""
    settings, file, seed, index = job
    detector = _detectors.setdefault(settings, FaceDetector(settings))
    rng = np.random.default_rng([seed, index])
    greys = np.random.default_rng([seed, index, 1]).random(len(VIEWS)) < GREY_VIEWS  # a stream of its own: the masks stay as drawn
    bare = read_rgb(file)
    height, width = bare.shape[:2]
    found = detector.find(bare)
    if not found or found[0].source != "mtcnn" or found[0].score < SURE_SCORE:
        return []
    truth = np.array(found[0].box)
    side, cx, cy = max(truth[2] - truth[0], truth[3] - truth[1]), (truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2
    chips = []
    for view, grey in zip(VIEWS, greys, strict=True):
        rgb = bare if view is None else draw_mask(bare, truth, found[0].landmarks, rng, view)
        if grey:
            rgb = np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        boxes = []
        for _ in range(JITTERED):
            s = side * np.exp(rng.uniform(*np.log(JITTER_SCALE)))
            x, y = cx + rng.uniform(-JITTER_SHIFT, JITTER_SHIFT) * s, cy + rng.uniform(-JITTER_SHIFT, JITTER_SHIFT) * s
            boxes.append([x - s / 2, y - s / 2, x + s / 2, y + s / 2])
        for _ in range(RANDOM):
            s = rng.uniform(*RANDOM_SIDE) * min(height, width)
            x, y = rng.uniform(0, width - s), rng.uniform(0, height - s)
            boxes.append([x, y, x + s, y + s])
        boxes += [face.box for face in detector.candidates(rgb)]
        squares = np.array([square_box(box, 0.0) for box in boxes])  # the squares the refinement passes cut
        ious = box_iou(torch.from_numpy(squares), torch.from_numpy(truth[None])).numpy()[:, 0]
        for square, iou in zip(squares, ious, strict=True):
            chip = cv2.resize(crop_face(rgb, square, 0.0), (ONET_SIDE, ONET_SIDE), interpolation=cv2.INTER_AREA)
            chips.append((chip, float(iou), (truth - square) / (square[2] - square[0])))
    return chips


def train_onet(chips: np.ndarray, ious: np.ndarray, offsets: np.ndarray, epochs: int, seed: int = 0, progress: bool = False) -> dict:
    """The packaged O-net fine-tuned on the chips: face score and box offsets learned, landmarks held."""
    # The global random state is the classifier's: a tuning found in the memo must leave it as one that ran.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        net, packaged = onet_network().train(), onet_network()
        images, ious, offsets = torch.from_numpy(chips), torch.from_numpy(ious), torch.from_numpy(offsets)
        with torch.no_grad():
            points = torch.cat([packaged(_inputs(images[i : i + 1024]))[1] for i in range(0, len(images), 1024)])
        optimizer = torch.optim.Adam(net.parameters(), lr=LR)
        steps = max(1, len(images) // BATCH)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=epochs * steps, pct_start=WARMUP)
        for _ in tqdm(range(epochs), desc="tune O-net", unit="epoch", disable=not progress, leave=False):
            order = torch.randperm(len(images), generator=generator)
            for step in range(steps):
                rows = order[step * BATCH : (step + 1) * BATCH]
                loss = _loss(net, images[rows], ious[rows], offsets[rows], points[rows], torch.rand(len(rows), generator=generator) < 0.5)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
    return net.eval().state_dict()


def _inputs(images: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(normalise(images.numpy()))


def _loss(net, images, ious, offsets, points, flip):
    """One batch's loss, the flagged chips mirrored with their targets."""
    images = torch.where(flip[:, None, None, None], images.flip(2), images)  # N x H x W x 3: width is dim 2
    offsets, points = offsets.clone(), points.clone()
    offsets[flip] = torch.stack([-offsets[flip][:, 2], offsets[flip][:, 1], -offsets[flip][:, 0], offsets[flip][:, 3]], 1)
    mirrored = points[flip]
    points[flip] = torch.cat([1 - mirrored[:, :5][:, MIRRORED_POINTS], mirrored[:, 5:][:, MIRRORED_POINTS]], 1)
    box, landmarks, probs = net(_inputs(images))
    label = torch.where(ious >= FACE_IOU, 1, torch.where(ious < NOT_FACE_IOU, 0, -1))
    scored, boxed = label >= 0, ious >= PART_IOU
    loss = F.nll_loss(torch.log(probs[scored] + 1e-7), label[scored]) + LANDMARK_WEIGHT * F.mse_loss(landmarks, points)
    if boxed.any():
        loss = loss + BOX_WEIGHT * F.mse_loss(box[boxed], offsets[boxed])
    return loss
