"""Which face-crop margin: cpu-fast trained on the face crops of wide photos, one run per margin,
scored on the person holdout of train only (the eval set is not looked at).

    .venv/bin/python bench/margin.py --data WIDE_DATA [--margins 0.1 0.2 0.3 0.4] [--out DIR] [key=value ...]

Detections are cached, so only the first margin pays for them; each margin embeds the photos
once. Prints each margin's best holdout macro-F1 and the margin to use.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from maskcls.config import load_config
from maskcls.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--config", default="cpu-fast")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-margin"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
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
    print(f"\n== bench/margin.py --config {args.config} on {args.data} (person holdout of train)")
    for margin, result in results.items():
        print(f"  margin {margin:.2f}: {result['best_macro_f1']:.4f}{'  <- best' if margin == best else ''}")
    print(f"use preprocess.crop_margin={best}")


if __name__ == "__main__":
    main()
