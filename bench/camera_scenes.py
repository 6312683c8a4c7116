"""Camera frames in a style that nothing in maskcls was chosen on, to test the face crop and the
models against (`bench/widen.py --style camera`).

bench/widen.py's door scenes, on which the detector settings, the margin and the person
embedding were picked, are 384x512 portraits: a flat or tiled wall, a torso, the whole face tile
upright, 15-45 % of the width. These frames differ in every one of those:
- the frame: landscape, portrait or square, from 480 to 1280 pixels wide, as door and desk
  cameras and phones give them;
- the background: a corridor in perspective (floor, walls, ceiling lights, a door at the end),
  a room with posters, blinds and a bright window, or smooth photographic-looking texture;
- the person: the head cut from the tile along an ellipse (so some hair and the tile's own
  background go), turned by up to 20 degrees, its width 10-55 % of the frame's short side,
  with a neck and shoulders drawn below it;
- the camera: an infrared night frame (grey), a colour cast, a dark or washed-out exposure,
  vignetting, motion blur, a low-resolution sensor scaled up and sensor noise (the JPEG is
  written as bench/widen.py writes every scene).
"""
from __future__ import annotations

import cv2
import numpy as np
from common import colour

FRAMES = ((640, 480), (480, 640), (512, 512), (640, 360), (960, 540), (1280, 720), (384, 512))
FACE_SHORT_SIDE = (0.10, 0.55)  # true face box width as a fraction of the frame's short side
MAX_ROLL = 20.0


def _texture(rng, height: int, width: int) -> np.ndarray:
    """Smooth noise over several octaves: blurred, photo-like surfaces without edges to learn."""
    field = np.zeros((height, width, 3), np.float32)
    for octave in range(1, 6):
        cells = 2 ** octave
        small = rng.normal(0, 1, (cells, max(2, cells * width // height), 3)).astype(np.float32)
        field += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) / octave
    field = (field - field.mean()) / (field.std() + 1e-6)
    return colour(rng, 60, 200) + field * rng.uniform(10, 45)


def _corridor(rng, height: int, width: int) -> np.ndarray:
    img = np.empty((height, width, 3), np.float32)
    img[:] = colour(rng, 40, 220)
    vx, vy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.55) * height
    end = rng.uniform(0.12, 0.3)
    x0, x1, y0, y1 = vx - end * width, vx + end * width, vy - end * height, vy + end * height
    walls = [np.array(p, np.int32) for p in (
        [(0, height), (x0, y1), (x1, y1), (width, height)],  # floor
        [(0, 0), (x0, y0), (x1, y0), (width, 0)],  # ceiling
        [(0, 0), (x0, y0), (x0, y1), (0, height)],  # left wall
        [(width, 0), (x1, y0), (x1, y1), (width, height)],  # right wall
    )]
    for polygon in walls:
        cv2.fillPoly(img, [polygon.astype(np.int32)], colour(rng, 30, 230).tolist())
    cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), colour(rng, 10, 160).tolist(), -1)  # the far door
    for t in np.linspace(0.15, 0.85, int(rng.integers(2, 6))):  # ceiling lights, brighter when nearer
        cx, cy = int(vx + (width / 2 - vx) * (1 - t)), int(vy * t)
        cv2.ellipse(img, (cx, cy), (int(30 * (1 - t) + 6), int(6 * (1 - t) + 2)), 0, 0, 360, (250, 250, 240), -1)
    return img


def _room(rng, height: int, width: int) -> np.ndarray:
    img = np.empty((height, width, 3), np.float32)
    img[:] = colour(rng)
    for _ in range(int(rng.integers(1, 4))):  # posters with lines of text
        px, py = int(rng.uniform(0, width * 0.8)), int(rng.uniform(0, height * 0.6))
        pw, ph = int(rng.uniform(0.1, 0.3) * width), int(rng.uniform(0.15, 0.35) * height)
        cv2.rectangle(img, (px, py), (px + pw, py + ph), colour(rng).tolist(), -1)
        for line in range(int(rng.integers(1, 5))):
            cv2.putText(img, "".join(rng.choice(list("ABCDEFGHKMNPRSTUWXYZ0123456789 "), 8)), (px + 4, py + 20 + 18 * line),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour(rng, 0, 255).tolist(), 1)
    if rng.random() < 0.6:  # a window, blown out, with blinds
        wx, wy = int(rng.uniform(0, width * 0.7)), int(rng.uniform(0, height * 0.3))
        ww, wh = int(rng.uniform(0.2, 0.4) * width), int(rng.uniform(0.2, 0.5) * height)
        cv2.rectangle(img, (wx, wy), (wx + ww, wy + wh), (252, 252, 250), -1)
        step = int(rng.integers(6, 16))
        img[wy : wy + wh : step, wx : wx + ww] = colour(rng, 150, 230)
    return img


def _head_alpha(side: int, face, rng) -> np.ndarray:
    """An ellipse around the face box, a little larger than it, feathered: the head without the
    tile's square edge."""
    mask = np.zeros((side, side), np.float32)
    cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    ax, ay = (face[2] - face[0]) * rng.uniform(0.5, 0.6), (face[3] - face[1]) * rng.uniform(0.6, 0.72)
    cv2.ellipse(mask, (int(cx), int(cy - 0.05 * ay)), (int(ax), int(ay)), 0, 0, 360, 1.0, -1)
    feather = max(2, int(0.04 * side))  # so the ellipse never ends at the tile's edge
    mask[:feather], mask[-feather:], mask[:, :feather], mask[:, -feather:] = 0, 0, 0, 0
    return cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.06 * ax))


def compose_camera(tile: np.ndarray, box, rng) -> tuple[np.ndarray, tuple]:
    """One frame (uint8 RGB, of a size from FRAMES) and the true face box in it; `box` is the
    face box in tile pixels."""
    width, height = FRAMES[int(rng.integers(len(FRAMES)))]
    img = (_corridor, _room, _texture)[int(rng.integers(3))](rng, height, width)
    bw = box[2] - box[0]
    scale = rng.uniform(*FACE_SHORT_SIDE) * min(width, height) / bw
    side = max(8, int(round(tile.shape[1] * scale)))
    scale = side / tile.shape[1]
    face_tile = [v * scale for v in box]
    fw, fh = face_tile[2] - face_tile[0], face_tile[3] - face_tile[1]
    head = cv2.resize(tile, (side, side), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR).astype(np.float32)
    alpha = _head_alpha(side, face_tile, rng)
    # shoulders and neck, in a clothing colour, below where the face will sit
    cx = rng.uniform(fw / 2, width - fw / 2)
    cy = float(np.clip(rng.uniform(0.25, 0.6) * height, fh / 2, height - fh / 2))
    chin = cy + fh / 2
    cloth = colour(rng, 5, 250).tolist()
    cv2.ellipse(img, (int(cx), int(chin + 0.9 * fh)), (int(fw * rng.uniform(1.3, 2.0)), int(0.6 * fh)), 0, 180, 360, cloth, -1)
    cv2.rectangle(img, (int(cx - fw * 1.6), int(chin + 0.9 * fh)), (int(cx + fw * 1.6), height), cloth, -1)
    rows = slice(int(np.clip(face_tile[1] + 0.4 * fh, 0, side - 2)), int(np.clip(face_tile[1] + 0.5 * fh, 1, side - 1)) + 1)
    columns = slice(int(np.clip(face_tile[0], 0, side - 2)), int(np.clip(face_tile[0] + 0.2 * fw, 1, side - 1)) + 1)
    skin = np.median(head[rows, columns].reshape(-1, 3), 0)  # a cheek, for the neck
    cv2.rectangle(img, (int(cx - 0.2 * fw), int(chin - 0.2 * fh)), (int(cx + 0.2 * fw), int(chin + 0.9 * fh)), (skin * 0.85).tolist(), -1)
    # the head, turned about the face's centre and pasted so that centre lands at (cx, cy)
    roll = rng.uniform(-MAX_ROLL, MAX_ROLL)
    fcx, fcy = (face_tile[0] + face_tile[2]) / 2, (face_tile[1] + face_tile[3]) / 2
    warp = cv2.getRotationMatrix2D((fcx, fcy), roll, 1.0)
    warp[:, 2] += (cx - fcx, cy - fcy)
    placed = cv2.warpAffine(head, warp, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    placed_alpha = cv2.warpAffine(alpha, warp, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
    img = img * (1 - placed_alpha) + placed * placed_alpha
    # the camera
    if rng.random() < 0.25:  # an infrared night frame
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    else:
        img *= rng.uniform(0.8, 1.2, 3).astype(np.float32)  # white balance
    gamma = np.exp(rng.uniform(np.log(0.55), np.log(1.8)))
    img = 255 * (np.clip(img, 0, 255) / 255) ** gamma
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    vignette = 1 - rng.uniform(0, 0.45) * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2) * 2
    img *= vignette[..., None]
    if rng.random() < 0.3:  # someone walking: a short horizontal or diagonal smear
        length = int(rng.integers(3, 9))
        kernel = np.zeros((length, length), np.float32)
        cv2.line(kernel, (0, length // 2), (length - 1, int(rng.integers(0, length))), 1.0, 1)
        img = cv2.filter2D(img, -1, kernel / kernel.sum())
    if rng.random() < 0.3:  # a low-resolution sensor, scaled up
        factor = rng.uniform(0.4, 0.7)
        img = cv2.resize(cv2.resize(img, (int(width * factor), int(height * factor)), interpolation=cv2.INTER_AREA), (width, height))
    img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(0, 9)
    face = (cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2)
    face = tuple(float(np.clip(v, 0, limit)) for v, limit in zip(face, (width, height) * 2, strict=True))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), face
