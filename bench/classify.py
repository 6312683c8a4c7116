"""Classification latency per face of several exported models, timed in one process, photo by photo
in turn: each photo's faces are found once, then every model classifies them, in an order that
rotates from photo to photo. Single runs of bench/serve.py on a shared VM move by a third; taking
turns puts every model under the same load, so their ratios hold where the absolute times do not.

    .venv/bin/python bench/classify.py --data DATA MODEL [MODEL ...] [--photos 60 --rounds 3] [--fp32]

MODEL: folders that `maskcls export` wrote (their int8 graphs unless --fp32). Prints, per model, the
classification p50 / p95 per face over every round but the first, and its ratio to the 5 ms target.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from maskcls.serve.app import decode_photo
from maskcls.serve.model import ServedModel

TARGET_CLASSIFY_PER_FACE_MS = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="exported model folders")
    parser.add_argument("--data", type=Path, required=True, help="data set whose eval/images are the photos")
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the photos; the first warms the kernels and is dropped")
    parser.add_argument("--fp32", action="store_true", help="time the exports' fp32 graphs instead of their int8 ones")
    args = parser.parse_args()

    models = {str(folder): ServedModel.load(folder, int8=not args.fp32) for folder in args.models}
    files = sorted((args.data / "eval" / "images").iterdir())[: args.photos]
    detector = next(iter(models.values())).detector
    scenes = [(rgb, detector.find(rgb)) for rgb in (decode_photo(f.read_bytes()) for f in files)]
    scenes = [(rgb, faces) for rgb, faces in scenes if faces]
    per_face = {name: [] for name in models}
    names = list(models)
    for round_index in range(args.rounds):
        for index, (rgb, faces) in enumerate(scenes):
            shift = (index + round_index) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                models[name].classify(rgb, faces)
                if round_index:
                    per_face[name].append((time.perf_counter() - started) * 1000 / len(faces))
    print(f"classification per face, ms, {len(scenes)} photos with a face x {args.rounds - 1} rounds, "
          f"{'fp32' if args.fp32 else 'int8'}; {os.cpu_count()} cores")
    for name, values in per_face.items():
        p50, p95 = np.percentile(values, 50), np.percentile(values, 95)
        info = models[name].info
        print(f"{name:<40} tta {info['tta']:<10} p50 {p50:6.2f}  p95 {p95:6.2f}  "
              f"x{p50 / TARGET_CLASSIFY_PER_FACE_MS:.2f} of the {TARGET_CLASSIFY_PER_FACE_MS:g} ms target")


if __name__ == "__main__":
    main()
