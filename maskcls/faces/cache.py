"""Detections stored by file content and detector settings, so each photo is detected once.

The key is the SHA-256 of the file's bytes with the detector settings (and the versions of the
libraries that detect): a changed photo or changed settings are detected anew, a renamed or
copied one is not. The store is one SQLite file, safe for several processes at once
(DataLoader workers, DDP ranks, tune workers); `MASKCLS_CACHE` moves it from ~/.cache/maskcls.
"""
from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import signal
import sqlite3
from importlib.metadata import version
from pathlib import Path

import cv2
from tqdm import tqdm

from ..errors import MaskclsError
from ..fileio import CACHE_ENV, cache_dir
from ..imageio import read_rgb
from .detect import CHAIN, DetectorSettings, Face, FaceDetector

PARALLEL_FROM = 64  # photos to detect before worker processes pay for their start
MAX_DETECT_WORKERS = 8
# The table's name changes with its columns: rows of an older table (no landmarks) are never read as faces without them.
SCHEMA = ("CREATE TABLE IF NOT EXISTS main_faces (settings TEXT, content TEXT, x0 REAL, y0 REAL, x1 REAL, y1 REAL, score REAL, "
          "source TEXT, landmarks TEXT, PRIMARY KEY (settings, content))")


def settings_key(settings: DetectorSettings) -> str:
    libraries = {"facenet-pytorch": version("facenet-pytorch"), "opencv": cv2.__version__, "onnxruntime": version("onnxruntime")}
    blob = json.dumps({"settings": settings.to_dict(), "chain": CHAIN, "libraries": libraries}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def content_key(file) -> str:
    # Every dataset built over the same photos (validation each epoch, each checkpoint at predict)
    # asks again; a file whose size and modification time are unchanged is not read twice.
    stat = os.stat(file)
    return _hashed(os.fspath(file), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 17)
def _hashed(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class DetectionCache:
    """The main face of photos, looked up by content; `detected` counts detector calls made."""

    def __init__(self, settings: DetectorSettings | None = None, root: Path | None = None):
        self.settings = settings or DetectorSettings()
        self.key = settings_key(self.settings)
        self.path = Path(root or cache_dir()) / "faces.sqlite"
        self.detector = FaceDetector(self.settings)
        self.detected = 0

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=60)
            connection.execute(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise MaskclsError(f"{self.path}: the face detection cache cannot be opened ({exc}); "
                               f"point {CACHE_ENV} at a writable folder") from None
        return connection

    def main_faces(self, files, progress: bool = False) -> list[Face]:
        """The main face of every file, detecting only those not stored yet."""
        keys = [content_key(f) for f in files]
        with self._connect() as db:
            stored = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                rows = db.execute(f"SELECT content, x0, y0, x1, y1, score, source, landmarks FROM main_faces WHERE settings = ? "
                                  f"AND content IN ({','.join('?' * len(chunk))})", [self.key, *chunk])
                stored.update({row[0]: Face(tuple(row[1:5]), row[5], row[6], _points(row[7])) for row in rows})
        missing = list(dict.fromkeys((f, k) for f, k in zip(files, keys, strict=True) if k not in stored))
        if missing:
            with self._connect() as db:
                for key, face in tqdm(self._detect(missing), total=len(missing), desc="detect faces", unit="photo",
                                      disable=not progress, leave=False):
                    stored[key] = face
                    self.detected += 1
                    db.execute("INSERT OR REPLACE INTO main_faces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (self.key, key, *face.box, face.score, face.source, json.dumps(face.landmarks)))
                    db.commit()  # one commit a photo: an interrupted pass keeps what it found
        return [stored[k] for k in keys]

    def _detect(self, missing):
        """(key, face) pairs as they are found; a large batch is shared by one single-threaded
        process per core, which uses both cores better than one process with two threads."""
        workers = min(os.cpu_count() or 1, MAX_DETECT_WORKERS)
        if workers < 2 or len(missing) < PARALLEL_FROM:
            yield from ((key, self.detector.main_face(read_rgb(file))) for file, key in missing)
            return
        with multiprocessing.get_context("fork").Pool(workers, initializer=single_threaded_worker) as pool:
            yield from pool.imap(_detect_one, [(self.settings, file, key) for file, key in missing], chunksize=8)


def _points(stored: str | None) -> tuple[tuple[float, float], ...] | None:
    points = json.loads(stored) if stored else None
    return None if points is None else tuple((float(x), float(y)) for x, y in points)


_detectors: dict = {}


def single_threaded_worker() -> None:
    """A pool worker's start: one thread per process. OpenCV's threads are left as they are:
    changing them in a process forked from one that used them waits forever on the parent's pool."""
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the pool stops its workers with SIGTERM; the parent's handler is not theirs
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def _detect_one(job):
    settings, file, key = job
    detector = _detectors.setdefault(settings, FaceDetector(settings))
    return key, detector.main_face(read_rgb(file))


def face_boxes(files, settings: DetectorSettings | None = None, progress: bool = False) -> list[Face]:
    return DetectionCache(settings).main_faces(list(files), progress)
