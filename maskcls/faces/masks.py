"""Masks drawn over bare faces, for teaching the detector what a masked face looks like.

A mask is placed from MTCNN's five points: its top edge on the nose bridge ("worn"), under the
nose ("nose", worn wrong) or under the lips ("chin"). Shape, colour and cloth vary (plain,
pleated, printed, seamed), so the detector learns a covered lower face, not one mask.
"""
from __future__ import annotations

import cv2
import numpy as np

PLACEMENTS = ("worn", "nose", "chin")


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
