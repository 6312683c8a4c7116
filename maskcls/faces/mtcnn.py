"""MTCNN's cascade of three networks, run by ONNX Runtime, with its resampling done by OpenCV.

The networks and their weights are facenet-pytorch's: they are exported to ONNX in memory when
first needed, so nothing is downloaded. The steps are those of facenet-pytorch's `detect_face`.
That function resamples the image pyramid and every candidate box with torch's area
interpolation, one call per box, and runs the tiny networks through torch. At these sizes the
per-call overhead is most of the cost, and on two cores it was most of a served request. So here:
- each pyramid level is resampled with OpenCV's area filter from the nearest larger halving of
  the photo;
- candidate boxes are cut and resized with OpenCV;
- the networks run in ONNX Runtime.
The boxes agree with facenet-pytorch's up to those resampling differences; tests/test_faces.py
compares the two on drawn scenes.
"""
from __future__ import annotations

import io
import warnings

import cv2
import numpy as np

CASCADES = ("onnxruntime", "facenet-pytorch")  # this module's cascade; facenet-pytorch's own, for runs trained on its crops
PNET_CELL, PNET_STRIDE = 12, 2  # P-net scores a 12-pixel window every 2 pixels of a pyramid level
RNET_SIDE, ONET_SIDE = 24, 48
LEVEL_NMS, PNET_NMS, RNET_NMS, ONET_NMS = 0.5, 0.7, 0.7, 0.7  # overlap limits; O-net's counts the smaller box
NMS_BLOCK = 256  # boxes whose overlaps with the rest are held at once: bounds the memory for the low pass's thousands


def _session(net, side: int | None, outputs: tuple[str, ...], threads: int):
    import onnxruntime as ort
    import torch

    sample = torch.zeros(2, 3, side or PNET_CELL * 4, side or PNET_CELL * 5)
    axes = {"image": {0: "n"} if side else {0: "n", 2: "height", 3: "width"}}
    graph = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns that a newer one exists; it handles these networks
        torch.onnx.export(net.eval(), (sample,), graph, input_names=["image"], output_names=list(outputs),
                          dynamic_axes=axes, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads would take the classifier's cores
    options.log_severity_level = 3
    return ort.InferenceSession(graph.getvalue(), sess_options=options, providers=["CPUExecutionProvider"])


def onet_network(state: dict | None = None):
    """facenet-pytorch's O-net, with its packaged weights or with `state` (a tuned one's)."""
    from facenet_pytorch.models.mtcnn import ONet

    net = ONet(pretrained=state is None)
    if state is not None:
        net.load_state_dict(state)
    return net.eval()


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 NxHxWx3 -> float32 Nx3xHxW scaled as MTCNN was trained."""
    return np.ascontiguousarray(((images.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 3, 1, 2))


def nms(boxes: np.ndarray, scores: np.ndarray, limit: float, smaller: bool = False) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first. Overlap is the
    intersection over the union, or over the smaller box when `smaller` (MTCNN's "Min").

    The overlaps are computed a block of boxes at a time, each against every box ranked below
    it, so the greedy walk that follows is a row lookup per box rather than numpy calls per kept
    box, whose overhead was most of the time at the few dozen boxes a photo has."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = (boxes[order, i] for i in range(4))
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    alive = np.ones(len(order), dtype=bool)
    keep = []
    for start in range(0, len(order), NMS_BLOCK):
        rows = slice(start, start + NMS_BLOCK)
        width = np.maximum(0.0, np.minimum(x1[rows, None], x1[None, start:]) - np.maximum(x0[rows, None], x0[None, start:]) + 1)
        height = np.maximum(0.0, np.minimum(y1[rows, None], y1[None, start:]) - np.maximum(y0[rows, None], y0[None, start:]) + 1)
        inter = width * height
        union = np.minimum(area[rows, None], area[None, start:]) if smaller else area[rows, None] + area[None, start:] - inter
        survives = inter / union <= limit
        for row in range(survives.shape[0]):
            if alive[start + row]:
                keep.append(start + row)
                alive[start:] &= survives[row]
    return order[np.asarray(keep, dtype=np.int64)]


def _no_faces() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))


def _sizes(boxes: np.ndarray, inclusive: bool = True) -> np.ndarray:
    """Each box's width and height (N x 2), counted with both edge pixels when `inclusive`, as
    MTCNN does after R- and O-net."""
    return np.stack([boxes[:, 2] - boxes[:, 0] + inclusive, boxes[:, 3] - boxes[:, 1] + inclusive], axis=1)


def _regress(boxes: np.ndarray, offsets: np.ndarray, inclusive: bool = True) -> np.ndarray:
    """Moves each box's edges by the network's offsets, in units of its width and height."""
    return boxes[:, :4] + offsets * np.tile(_sizes(boxes, inclusive), 2)


def _squares(boxes: np.ndarray) -> np.ndarray:
    """The square with each box's centre and longer side."""
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    x0 = boxes[:, 0] + width / 2 - side / 2
    y0 = boxes[:, 1] + height / 2 - side / 2
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1)


def _pyramid(rgb: np.ndarray, min_face_size: int, factor: float) -> list[tuple[float, np.ndarray]]:
    """(scale, the photo at that scale) for P-net, from the scale at which the smallest face
    searched for fills its window down to the one at which the photo does.

    Each level is resampled with the area filter from the smallest of the photo's halvings that
    is still larger. An exact halving is a cheap box filter, so each level is filtered at most
    twice and stays close to one resampled from the photo itself, at a fraction of the cost of
    reading the whole photo for every level. Levels built each from the one above, filtered
    again and again, drift further from it."""
    height, width = rgb.shape[:2]
    halvings = [rgb]
    scale, levels = PNET_CELL / min_face_size, []
    while min(height, width) * scale >= PNET_CELL:
        size = (int(width * scale + 1), int(height * scale + 1))
        # Levels shrink, so the last halving is always still larger than this level.
        while halvings[-1].shape[1] // 2 >= size[0] and halvings[-1].shape[0] // 2 >= size[1]:
            last = halvings[-1]
            halvings.append(cv2.resize(last, (last.shape[1] // 2, last.shape[0] // 2), interpolation=cv2.INTER_AREA))
        levels.append((scale, cv2.resize(halvings[-1], size, interpolation=cv2.INTER_AREA)))
        scale *= factor
    return levels


def _chips(rgb: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """Each box cut from the photo (clipped to it, as MTCNN does) and resized to side x side."""
    height, width = rgb.shape[:2]
    cells = np.trunc(boxes).astype(np.int64)
    chips = np.empty((len(boxes), side, side, 3), np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(cells):
        x0, y0 = max(x0, 1) - 1, max(y0, 1) - 1  # MTCNN's boxes count pixels from 1
        patch = rgb[y0:min(y1, height), x0:min(x1, width)]
        chips[i] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA) if patch.size else 0
    return chips


class MTCNNCascade:
    """`detect(rgb, ...)` -> (boxes N x 4, scores N, landmarks N x 5 x 2) for a uint8 RGB photo;
    `onet(chips)` -> (offsets N x 4, landmarks N x 10, face probability N) for 48 x 48 chips;
    `pnet_maps(rgb, ...)`: P-net's maps over the photo's pyramid, which `detect` takes to skip
    them. They do not depend on the thresholds, so two passes over one photo can share them.
    Not safe for two threads at once; FaceDetector holds a lock around it."""

    def __init__(self, threads: int = 1, onet_state: dict | None = None):
        from facenet_pytorch.models.mtcnn import PNet, RNet  # the packaged weights load with the networks

        self._pnet = _session(PNet(), None, ("offsets", "probs"), threads)
        self._rnet = _session(RNet(), RNET_SIDE, ("offsets", "probs"), threads)
        self._onet = _session(onet_network(onet_state), ONET_SIDE, ("offsets", "landmarks", "probs"), threads)

    def onet(self, chips: np.ndarray):
        offsets, landmarks, probs = self._onet.run(None, {"image": normalise(chips)})
        return offsets, landmarks, probs[:, 1]

    def pnet_maps(self, rgb: np.ndarray, min_face_size: int, factor: float) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(scale, box offsets 4 x H x W, face probability H x W) for each level of the pyramid."""
        maps = []
        for scale, level in _pyramid(rgb, min_face_size, factor):
            offsets, probs = self._pnet.run(None, {"image": normalise(level[None])})
            maps.append((scale, offsets[0], probs[0, 1]))
        return maps

    def detect(self, rgb: np.ndarray, min_face_size: int, thresholds, factor: float, maps=None):
        maps = self.pnet_maps(rgb, min_face_size, factor) if maps is None else maps
        boxes = self._proposals(maps, thresholds[0])
        if not len(boxes):
            return _no_faces()
        # R-net: keep the windows it calls faces, regressed to the face and squared.
        squares = _squares(boxes)
        offsets, probs = self._rnet.run(None, {"image": normalise(_chips(rgb, squares, RNET_SIDE))})
        passed = probs[:, 1] > thresholds[1]
        squares, scores, offsets = squares[passed], probs[passed, 1], offsets[passed]
        keep = nms(squares, scores, RNET_NMS)
        boxes = _squares(_regress(squares[keep], offsets[keep]))
        if not len(boxes):
            return _no_faces()
        # O-net: the final score, box and five landmarks.
        offsets, points, scores = self.onet(_chips(rgb, boxes, ONET_SIDE))
        passed = scores > thresholds[2]
        boxes, offsets, points, scores = boxes[passed], offsets[passed], points[passed], scores[passed]
        landmarks = np.stack([points[:, :5], points[:, 5:]], axis=2) * _sizes(boxes)[:, None, :] + boxes[:, None, :2] - 1
        boxes = _regress(boxes, offsets)
        keep = nms(boxes, scores, ONET_NMS, smaller=True)
        return boxes[keep], scores[keep], landmarks[keep]

    @staticmethod
    def _proposals(maps, threshold: float) -> np.ndarray:
        """P-net's windows over the image pyramid, regressed (x0, y0, x1, y1 rows); R-net scores them anew."""
        found = []
        for scale, offsets, probs in maps:
            rows, cols = np.nonzero(probs >= threshold)
            if len(rows):
                cells = np.stack([cols, rows], axis=1).astype(np.float64)
                windows = np.hstack([np.floor((PNET_STRIDE * cells + 1) / scale),
                                     np.floor((PNET_STRIDE * cells + PNET_CELL) / scale)])
                scores = probs[rows, cols].astype(np.float64)
                regress = offsets[:, rows, cols].T
                keep = nms(windows, scores, LEVEL_NMS)
                found.append(np.hstack([windows[keep], scores[keep, None], regress[keep]]))
        if not found:
            return np.zeros((0, 4))
        found = np.vstack(found)
        found = found[nms(found[:, :4], found[:, 4], PNET_NMS)]
        return _regress(found[:, :4], found[:, 5:9], inclusive=False)


class FacenetMTCNN:
    """facenet-pytorch's own MTCNN behind the same two calls: runs recorded before the ONNX
    cascade were trained on its crops, so they are cropped by it still."""

    def __init__(self, onet_state: dict | None = None):
        from facenet_pytorch import MTCNN

        self._mtcnn = MTCNN(keep_all=True, device="cpu")
        if onet_state is not None:
            self._mtcnn.onet.load_state_dict(onet_state)

    def onet(self, chips: np.ndarray):
        import torch

        inputs = torch.from_numpy(normalise(chips))
        with torch.inference_mode():
            offsets, landmarks, probs = (t.numpy() for t in self._mtcnn.onet(inputs))
        return offsets, landmarks, probs[:, 1]

    def pnet_maps(self, rgb: np.ndarray, min_face_size: int, factor: float) -> None:
        return None  # facenet-pytorch's detect runs its own pyramid each time

    def detect(self, rgb: np.ndarray, min_face_size: int, thresholds, factor: float, maps=None):
        self._mtcnn.min_face_size, self._mtcnn.thresholds, self._mtcnn.factor = min_face_size, list(thresholds), factor
        boxes, scores, landmarks = self._mtcnn.detect(rgb, landmarks=True)
        if boxes is None:
            return _no_faces()
        return np.asarray(boxes, np.float64), np.asarray(scores, np.float64), np.asarray(landmarks, np.float64)
