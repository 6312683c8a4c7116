"""Quality benchmark on the stand-in: train on train/, score the public eval/ against truth.csv.

    .venv/bin/python bench/quality.py --preset cpu-fast      (budget 15 min on 2 cores)
    .venv/bin/python bench/quality.py --preset cpu-finetune  (budget 60 min on 2 cores)

Model selection uses only a person-held-out part of train/; eval/ is scored once, at the end.
Prints macro-F1, accuracy, per-head F1, wall time and train img/s, with ratios to the floors and
to timm's own train.py on the same data (macro-F1 0.595 in 18.5 min at about 43 img/s).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import standin  # noqa: E402

from maskcls.config import load_config  # noqa: E402
from maskcls.predict import predict  # noqa: E402
from maskcls.report import evaluate_files  # noqa: E402
from maskcls.train import train  # noqa: E402

FLOORS = {"cpu-fast": 0.50, "cpu-finetune": 0.68}
BUDGET_MIN = {"cpu-fast": 15, "cpu-finetune": 60}
TIMM_REFERENCE = {"macro_f1": 0.595, "minutes": 18.5, "img_s": 43.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(FLOORS), default="cpu-fast")
    parser.add_argument("--data", help="stand-in root (default data/standin or $MASKCLS_STANDIN; built when missing)")
    parser.add_argument("--out", default=None, help="runs folder (default: a temporary folder)")
    parser.add_argument("--tta", default="hflip")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = parser.parse_args()

    data = standin(args.data)
    out = Path(args.out or tempfile.mkdtemp(prefix="maskcls-bench-"))
    started = time.time()
    cfg = load_config(args.preset, [f"data.root={data}", f"out={out}", *args.overrides])
    result = train(cfg, progress=False)
    run_dir = Path(result["run_dir"])
    predicted = predict([run_dir], data / "eval", run_dir / "submission.csv", tta=args.tta, progress=False)
    wall_min = (time.time() - started) / 60
    summary = evaluate_files(run_dir / "submission.csv", data / "eval" / "truth.csv", run_dir / "eval_report", predicted["probs"])
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    img_s = max(float(r["train_img_s"]) for r in rows)

    floor = FLOORS[args.preset]
    print(f"\n== bench/quality.py --preset {args.preset} {' '.join(args.overrides)}")
    print(f"public eval macro-F1 {summary['macro_f1']:.4f}  accuracy {summary['accuracy']:.4f}")
    print(f"per head F1: mask {summary['mask_f1']:.4f}  gender {summary['gender_f1']:.4f}  age {summary['age_f1']:.4f}")
    print(f"wall {wall_min:.1f} min (budget {BUDGET_MIN[args.preset]} min)  train {img_s:.0f} img/s "
          f"({'head on cached features' if cfg['model']['mode'] == 'probe' else 'images'})")
    print(f"best holdout macro-F1 {result['best_macro_f1']:.4f} at epoch {result['best_epoch'] + 1}; run {run_dir}")
    print(f"ratio to floor {floor}: {summary['macro_f1'] / floor:.3f}")
    print(f"ratio to timm train.py ({TIMM_REFERENCE['macro_f1']} in {TIMM_REFERENCE['minutes']} min): "
          f"macro-F1 x{summary['macro_f1'] / TIMM_REFERENCE['macro_f1']:.3f}, time x{wall_min / TIMM_REFERENCE['minutes']:.3f}")
    (run_dir / "bench.json").write_text(json.dumps({"preset": args.preset, "overrides": args.overrides, "wall_min": wall_min,
                                                    "train_img_s": img_s, **summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
