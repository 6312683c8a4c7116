"""Face detection with a fallback chain: MTCNN, MTCNN again at low thresholds, O-net scanning
the photo, a Haar cascade, then a centre crop.

MTCNN (facenet-pytorch's networks and weights, run by ONNX Runtime: see mtcnn.py) finds almost
every bare face, but a worn mask hides the nose and mouth its networks look for, so its default
thresholds miss masked faces. The thresholds here are lower and the smallest face searched for
is larger, both picked per mask state on wide stand-in scenes of train persons
(bench/faces.py --sweep): the larger smallest face keeps false boxes on clutter from becoming
the main face, which the lower thresholds would otherwise do, and it shortens the image pyramid.

Two steps go after the masked faces that pass still misses. When it finds nothing, a second
pass at far lower floors runs ("mtcnn-low"): its false boxes matter little there, since the
alternative is a cascade that rarely finds a masked face, or a guess. And every box goes back
through O-net, which regresses a box towards the face it sees: on a masked face its first box
often covers only the eyes and brow, and a second look from that box widens it to the face.
O-net itself may be one fine-tuned on masks drawn over the data's own bare faces (tune.py),
named in the settings by the digest of its weights (onet.py).
Where both passes find nothing, O-net itself looks at a coarse grid of squares over the photo
("onet-scan"): P-net, which proposes the windows the other networks see, is the network that
misses a face whose mask it has never seen (drawn faces, large patterned masks), while O-net,
tuned on the data's own masked faces, still knows it when shown it, and gives its landmarks,
so the crop is framed on the eyes as the others are. It is slow (hundreds of O-net windows),
but runs only where the two passes found nothing.
Haar's cascade, where it comes to that, runs on the photo shrunk until the smallest face
searched for fills its window, so it scans no window smaller than a face it may report.
The main face is the largest. Two settings can widen the second pass to photos where the first
is unsure (`rescue_below`) and weight the ranking by O-net's last score (`score_power`), as the
low pass's false boxes on a neck or a torso are often larger than the face; both are off, as
together they did not find more masked faces on the wide eval and made detection slower.
The README's benchmark section has the figures.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..errors import MaskclsError
from .crop import crop_face, square_box
from .mtcnn import CASCADES, ONET_SIDE, FacenetMTCNN, MTCNNCascade, nms
from .onet import load_onet

DETECTORS = ("mtcnn",)
# Last resort when no detector finds a face: a square of this fraction of the short side,
# centred horizontally, its centre at this fraction of the height (heads sit high in a frame).
CENTRE_SIDE = 0.6
CENTRE_HEIGHT = 0.4
MIN_FACE_PIXELS = 20  # MTCNN's own default floor
MAX_REFINE_STEPS = 5
DUPLICATE_IOU = 0.5  # a low-pass face overlapping a kept one this much is the same face
# What settings recorded before a step existed meant: no second pass, no refinement, facenet-
# pytorch's own MTCNN (the ONNX cascade's boxes differ from it by a few pixels, which a model
# trained on the box framing reads as another face), and the largest face as the main one, the
# second pass only where the first found nothing.
RECORDED_BEFORE = {"rescue_thresholds": None, "refine_steps": 0, "cascade": "facenet-pytorch", "rescue_below": 0.0,
                   "score_power": 0.0, "haar_downscale": False, "onet": None, "onet_scan": False}
HAAR_CASCADE, HAAR_SCALE, HAAR_NEIGHBOURS = "haarcascade_frontalface_default.xml", 1.1, 4
# The O-net scan: squares from the smallest face searched for up to this fraction of the short
# side, each size this factor above the last, placed half a side apart (O-net regresses a box
# from a window that holds part of the face); a window counts above this score, and windows'
# boxes overlapping this much are one face.
SCAN_LARGEST, SCAN_STEP, SCAN_STRIDE, SCAN_SCORE, SCAN_NMS = 0.7, 1.5, 0.5, 0.9, 0.3
# Everything of the chain that is fixed in code, for the detection cache key: a change here re-detects.
CHAIN = {"centre": [CENTRE_SIDE, CENTRE_HEIGHT], "min_face_pixels": MIN_FACE_PIXELS, "refine_chip": ONET_SIDE,
         "haar": [HAAR_CASCADE, HAAR_SCALE, HAAR_NEIGHBOURS], "scan": [SCAN_LARGEST, SCAN_STEP, SCAN_STRIDE, SCAN_SCORE, SCAN_NMS]}


@dataclass(frozen=True)
class DetectorSettings:
    """Everything that changes which boxes come out; part of the detection cache key."""

    detector: str = "mtcnn"
    thresholds: tuple[float, float, float] = (0.3, 0.4, 0.4)  # P-, R- and O-net score floors
    min_face: float = 0.12  # smallest face searched for, as a fraction of the short side
    pyramid_factor: float = 0.709  # MTCNN's scale step between pyramid levels
    rescue_thresholds: tuple[float, float, float] | None = (0.05, 0.1, 0.1)  # the second pass's floors; None: no second pass
    rescue_below: float = 0.0  # the second pass also runs when no first-pass face scores above this
    refine_steps: int = 2  # O-net passes over each found box
    score_power: float = 0.0  # faces rank by area x score ** this (0: the largest first); the first is the main face
    cascade: str = "onnxruntime"  # which implementation runs MTCNN (maskcls/faces/mtcnn.py)
    # Haar's cascade runs on the photo shrunk until the smallest face searched for fills the
    # cascade's own window, as MTCNN's pyramid starts where it fills P-net's. At full size it
    # scans windows smaller than any face it may report.
    haar_downscale: bool = True
    onet: str | None = None  # the digest of a tuned O-net (faces/tune.py, stored by faces/onet.py); None: facenet-pytorch's
    onet_scan: bool = True  # where both MTCNN passes find nothing, O-net scans a grid of squares before Haar's cascade runs

    def __post_init__(self):
        # Floors arrive as lists from YAML and JSON records; as tuples the settings compare and hash as values.
        for name in ("thresholds", "rescue_thresholds"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.detector not in DETECTORS:
            raise MaskclsError(f"face detector {self.detector!r}: choose one of {', '.join(DETECTORS)}")
        if self.cascade not in CASCADES:
            raise MaskclsError(f"MTCNN cascade {self.cascade!r}: choose one of {', '.join(CASCADES)}")
        for name, floors in (("thresholds", self.thresholds), ("rescue thresholds", self.rescue_thresholds)):
            if floors is not None and (len(floors) != 3 or not all(0 < t < 1 for t in floors)):
                raise MaskclsError(f"detector {name} {list(floors)}: give three scores between 0 and 1")
        if not 0 <= self.rescue_below <= 1 or not 0 <= self.score_power <= 10:
            raise MaskclsError(f"rescue_below={self.rescue_below}, score_power={self.score_power}: rescue_below must lie in [0, 1], "
                               "score_power in [0, 10]")
        if not 0 <= self.refine_steps <= MAX_REFINE_STEPS:
            raise MaskclsError(f"refine_steps={self.refine_steps}: give 0 to {MAX_REFINE_STEPS} O-net passes")
        if self.onet is not None and not (len(self.onet) == 16 and all(c in "0123456789abcdef" for c in self.onet)):
            raise MaskclsError(f"onet={self.onet!r}: give the 16 hex digits of a tuned O-net's digest, or none for facenet-pytorch's")
        if not 0 < self.min_face < 1 or not 0.3 <= self.pyramid_factor < 1:
            raise MaskclsError(f"min_face={self.min_face}, pyramid_factor={self.pyramid_factor}: min_face must lie in (0, 1), "
                               "pyramid_factor in [0.3, 1)")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> DetectorSettings:
        """Settings as a run recorded them. A key the record lacks did not exist when it was
        written: its step stays off, and its MTCNN is facenet-pytorch's, so the run is cropped as
        it was trained."""
        if not d:
            return cls()
        return cls(**{**RECORDED_BEFORE, **d})


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the full photo
    score: float  # the detector's confidence; 0 for the centre fallback
    source: str  # "mtcnn", "mtcnn-low", "onet-scan", "haar" or "centre": which step of the chain found it
    # O-net's five points (x, y): the eyes, the nose tip, the mouth's corners; None from Haar and the centre crop.
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class FaceDetector:
    """`detect(rgb)` lists every face MTCNN's first pass finds; `find(rgb)` goes down the chain
    (first pass, with the low-threshold pass where the first is unsure, then the O-net scan, then
    Haar) and lists the faces found; `main_face(rgb)` always returns one: find's first, else the
    centre crop. Lists are ranked as the settings' `score_power` says, the main face first."""

    def __init__(self, settings: DetectorSettings | None = None, threads: int = 1, onet_folders=()):
        self.settings = settings or DetectorSettings()
        self.threads = threads  # for MTCNN's networks: one suits a process per core, more speeds a single photo
        self.onet_folders = tuple(onet_folders)  # where a tuned O-net's weights may lie besides the store (a model folder)
        self._mtcnn = None  # built on first use
        self._haar = None
        # Neither MTCNN nor a cascade may run in two threads at once; the service answers requests in threads.
        self._lock = threading.RLock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return self._mtcnn_pass(rgb, self.settings.thresholds, "mtcnn")

    def find(self, rgb: np.ndarray) -> list[Face]:
        with self._lock:
            maps = self._pnet_maps(rgb)  # the two passes differ in thresholds only, so they share P-net's maps
            found = self._mtcnn_pass(rgb, self.settings.thresholds, "mtcnn", maps)
            if self.settings.rescue_thresholds and max((f.score for f in found), default=0.0) <= self.settings.rescue_below:
                found = self.rank(found + self._mtcnn_pass(rgb, self.settings.rescue_thresholds, "mtcnn-low", maps))
            if not found and self.settings.onet_scan:
                found = self.scan(rgb)
        return found or self.detect_haar(rgb)

    def candidates(self, rgb: np.ndarray) -> list[Face]:
        """Every face either MTCNN pass finds, repeats included: what the chain asks O-net about."""
        with self._lock:
            maps = self._pnet_maps(rgb)
            found = self._mtcnn_pass(rgb, self.settings.thresholds, "mtcnn", maps)
            if self.settings.rescue_thresholds:
                found += self._mtcnn_pass(rgb, self.settings.rescue_thresholds, "mtcnn-low", maps)
        return found

    def main_face(self, rgb: np.ndarray) -> Face:
        found = self.find(rgb)
        return found[0] if found else centre_face(*rgb.shape[:2])

    def _min_face_size(self, rgb: np.ndarray) -> int | None:
        """The smallest face searched for in pixels; None where no face the networks can see
        fits, and the image pyramid would be empty."""
        short = min(rgb.shape[:2])
        return None if short < MIN_FACE_PIXELS else max(MIN_FACE_PIXELS, int(self.settings.min_face * short))

    def _pnet_maps(self, rgb: np.ndarray):
        size = self._min_face_size(rgb)
        return None if size is None else self._network().pnet_maps(rgb, size, self.settings.pyramid_factor)

    def _mtcnn_pass(self, rgb: np.ndarray, thresholds, source: str, maps=None) -> list[Face]:
        min_face_size = self._min_face_size(rgb)
        if min_face_size is None:
            return []
        with self._lock:
            boxes, scores, landmarks = self._network().detect(rgb, min_face_size, thresholds, self.settings.pyramid_factor, maps)
            if not len(boxes):
                return []
            boxes, landmarks, scores = self.refine(rgb, boxes, landmarks, scores)
        return self.ranked_faces(boxes, scores, landmarks, source)

    def scan(self, rgb: np.ndarray) -> list[Face]:
        """The faces O-net finds on a grid of squares over the photo, each refined as MTCNN's are."""
        size = self._min_face_size(rgb)
        if size is None:
            return []
        height, width = rgb.shape[:2]
        squares, side = [], float(size)
        while side <= SCAN_LARGEST * min(height, width):
            stride = SCAN_STRIDE * side
            squares += [(x, y, x + side, y + side) for y in np.arange(0.0, height - side + 1, stride)
                        for x in np.arange(0.0, width - side + 1, stride)]
            side *= SCAN_STEP
        if not squares:
            return []
        squares = np.array([square_box(square, 0.0) for square in squares], dtype=np.float64)  # the pixels O-net is shown
        with self._lock:
            boxes, landmarks, scores = self._onet_look(rgb, squares)
            face = scores > SCAN_SCORE
            if not face.any():
                return []
            boxes, landmarks, scores = boxes[face], landmarks[face], scores[face]
            keep = nms(boxes, scores, SCAN_NMS)
            boxes, landmarks, scores = self.refine(rgb, boxes[keep], landmarks[keep], scores[keep])
        return self.ranked_faces(boxes, scores, landmarks, "onet-scan")

    def ranked_faces(self, boxes, scores, landmarks, source: str) -> list[Face]:
        """O-net's boxes, scores and landmarks as faces found by `source`, ranked."""
        # Boxes may reach past the photo's edge: the crop pads there, so the face stays centred.
        faces = [Face(tuple(float(v) for v in box), float(score), source, tuple((float(x), float(y)) for x, y in points))
                 for box, score, points in zip(boxes, scores, landmarks, strict=True)]
        return self.rank([f for f in faces if f.area > 0])

    def rank(self, faces: list[Face]) -> list[Face]:
        """Best first by area x score ** score_power, without the repeats of a face that both passes found."""
        faces = sorted(faces, key=lambda f: -f.area * f.score ** self.settings.score_power)
        if len(faces) < 2:
            return faces
        keep = nms(np.array([f.box for f in faces]), -np.arange(len(faces), dtype=np.float64), DUPLICATE_IOU)
        return [faces[i] for i in sorted(keep)]

    def refine(self, rgb: np.ndarray, boxes, landmarks=None, scores=None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(boxes (N x 4), landmarks (N x 5 x 2), scores (N)) after `refine_steps` more O-net
        passes, each from the square around the last box; the landmarks and scores are those of
        the last pass (the given ones when no pass runs)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        landmarks = None if landmarks is None else np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
        with self._lock:
            for _ in range(self.settings.refine_steps):
                boxes, landmarks, scores = self._onet_look(rgb, np.array([square_box(box, 0.0) for box in boxes], dtype=np.float64))
        return boxes, landmarks, scores

    def _onet_look(self, rgb: np.ndarray, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-net's (boxes N x 4, landmarks N x 5 x 2, scores N) for the photo's squares (N x 4, integer corners)."""
        offsets, points, scores = self._network().onet(onet_chips(rgb, squares))
        side = squares[:, 2:3] - squares[:, 0:1]
        boxes = squares + offsets * side  # (x0, y0, x1, y1) moves in units of the square's side
        # O-net gives the five x's, then the five y's, as fractions of the square it saw.
        landmarks = np.stack([squares[:, 0:1] + points[:, :5] * side, squares[:, 1:2] + points[:, 5:] * side], axis=2)
        return boxes, landmarks, scores

    def detect_haar(self, rgb: np.ndarray) -> list[Face]:
        height, width = rgb.shape[:2]
        side = self._min_face_size(rgb)
        if side is None:
            return []
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        with self._lock:
            if self._haar is None:
                self._haar = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
            scale = min(1.0, min(self._haar.getOriginalWindowSize()) / side) if self.settings.haar_downscale else 1.0
            if scale < 1:
                gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
            smallest = max(1, round(side * scale))
            found = self._haar.detectMultiScale(cv2.equalizeHist(gray), scaleFactor=HAAR_SCALE, minNeighbors=HAAR_NEIGHBOURS,
                                                minSize=(smallest, smallest))
        faces = [Face((float(x / scale), float(y / scale), float((x + w) / scale), float((y + h) / scale)), 1.0, "haar")
                 for x, y, w, h in found]
        return sorted(faces, key=lambda f: -f.area)

    def _network(self) -> MTCNNCascade | FacenetMTCNN:
        if self._mtcnn is None:
            state = None if self.settings.onet is None else load_onet(self.settings.onet, self.onet_folders)
            self._mtcnn = MTCNNCascade(self.threads, state) if self.settings.cascade == "onnxruntime" else FacenetMTCNN(state)
        return self._mtcnn


def onet_chips(rgb: np.ndarray, squares) -> np.ndarray:
    """O-net's input: each square cut from the photo (black past its edge) at O-net's side."""
    return np.stack([cv2.resize(crop_face(rgb, square, 0.0), (ONET_SIDE, ONET_SIDE), interpolation=cv2.INTER_AREA)
                     for square in squares])


def centre_face(height: int, width: int) -> Face:
    side = CENTRE_SIDE * min(height, width)
    cx, cy = width / 2, CENTRE_HEIGHT * height
    return Face((cx - side / 2, max(0.0, cy - side / 2), cx + side / 2, max(0.0, cy - side / 2) + side), 0.0, "centre")
