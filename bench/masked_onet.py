"""Does the O-net tuned on the train set's own bare faces (maskcls/faces/tune.py) find masked faces?

    .venv/bin/python bench/masked_onet.py --data WIDE_DIR [--test-persons 300] [--seed 1] [--photos 700] [--epochs 2]
        [--eval-persons N]

The tuning is the one `preprocess.crop_onet=tuned` runs at fit time, on the bare photos of the
train persons left after the test persons are sampled (up to --photos of them). The test persons'
photos, with the data's own masks, are then scored per mask state with facenet-pytorch's O-net
and with the tuned one (bench/faces.py). `--eval-persons N` also scores N persons of the eval
split (0, the default: none; -1: all), once, with both O-nets. A tuning already in the memo is not run again: pass
another MASKCLS_CACHE to time it.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import faces as bench_faces  # noqa: E402

from maskcls.faces.detect import DetectorSettings  # noqa: E402
from maskcls.faces.tune import OnetTuning, tuned_onet  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--test-persons", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1, help="which train persons are the test set")
    parser.add_argument("--photos", type=int, default=OnetTuning.photos)
    parser.add_argument("--epochs", type=int, default=OnetTuning.epochs)
    parser.add_argument("--eval-persons", type=int, default=0, help="eval persons to score as well (-1: all)")
    args = parser.parse_args(argv)
    table = bench_faces.load(args.data, "train")
    test = bench_faces.sample(table, args.test_persons, args.seed)
    bare = table[~table["person"].isin(set(test["person"])) & table["path"].str.rsplit("/", n=1).str[-1].str.startswith("normal.")]
    settings = DetectorSettings()
    start = time.time()
    digest = tuned_onet(list(bare["file"]), settings, OnetTuning(args.photos, args.epochs), progress=True)
    print(f"O-net {digest} tuned on {min(args.photos, len(bare))} of {len(bare)} bare photos in {time.time() - start:.0f} s", flush=True)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    splits = [("test", test)]
    if args.eval_persons:
        splits.append(("eval", bench_faces.sample(bench_faces.load(args.data, "eval"), max(args.eval_persons, 0), args.seed)))
    for split, photos in splits:
        before = bench_faces.show(f"{len(photos)} {split} photos, facenet-pytorch's O-net", bench_faces.run(settings, photos))
        after = bench_faces.show(f"{len(photos)} {split} photos, the tuned O-net", bench_faces.run(replace(settings, onet=digest), photos))
        for state_name in bench_faces.STATES:
            b, a = (t.set_index("state").loc[state_name, "iou>=.5"] for t in (before, after))
            print(f"{split}, {state_name}: main face IoU >= 0.5 {b:.3f} -> {a:.3f} ({a / bench_faces.TARGET_RATE:.3f} x the 0.99 target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
