"""Ensemble benchmark on the stand-in: what each step of the inference recipe buys.

    .venv/bin/python bench/ensemble.py [--preset cpu-fast] [overrides ...]

Steps, each scored on the public eval set against truth.csv (macro-F1, accuracy), with the wall
time each step adds:
  1. single run (person holdout), argmax
  2. 5-fold CV, soft vote of the folds
  3. + hflip TTA
  4. + per-class offsets fitted on the CV's out-of-fold probabilities (their cross-fitted OOF gain
     is printed too: fitted on 4/5 of the persons, scored on the rest)
  5. + person consistency (eval photos clustered into persons sharing gender and age)
  6. hard vote of the folds with TTA, for comparison
Model selection and fitting use train/ only; eval/ is only scored.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import eval_column, standin  # noqa: E402

from maskcls.checkpoint import checkpoints_of  # noqa: E402
from maskcls.config import load_config  # noqa: E402
from maskcls.data.layout import load_eval  # noqa: E402
from maskcls.infer.offsets import apply_offsets, cross_fit_offsets  # noqa: E402
from maskcls.infer.persons import person_consistency, person_groups  # noqa: E402
from maskcls.infer.runtime import member_probs  # noqa: E402
from maskcls.infer.vote import hard_vote  # noqa: E402
from maskcls.metrics import score  # noqa: E402
from maskcls.train import run_cv, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-fast")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--data")
    parser.add_argument("--out")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    data = standin(args.data)
    out = Path(args.out or tempfile.mkdtemp(prefix="maskcls-ensemble-"))
    evaluation = load_eval(data / "eval")
    truth = eval_column(data, "truth.csv", "ans", evaluation.info["ImageID"])
    cfg = load_config(args.preset, [f"data.root={data}", f"out={out}", *args.overrides])
    rows = []

    def report(step: str, labels: np.ndarray, seconds: float) -> None:
        s = score(truth, labels)
        rows.append({"step": step, "macro_f1": s["macro_f1"], "accuracy": s["accuracy"], "age_f1": s["age_f1"], "gender_f1": s["gender_f1"],
                     "seconds": seconds})
        print(f"{step:40s} macro-F1 {s['macro_f1']:.4f}  acc {s['accuracy']:.4f}  gender {s['gender_f1']:.4f}  age {s['age_f1']:.4f}  "
              f"(+{seconds / 60:.1f} min)", flush=True)

    t0 = time.time()
    single = train(cfg, progress=False)["run_dir"]
    single_probs, _ = member_probs(checkpoints_of(single), evaluation.files, "none", progress=False)
    report("1 single run", single_probs.argmax(1), time.time() - t0)

    t0 = time.time()
    cv = run_cv(cfg, args.folds, progress=False)
    cv_probs, _ = member_probs(checkpoints_of(cv["cv_dir"]), evaluation.files, "none", progress=False)
    report(f"2 {args.folds}-fold soft vote", cv_probs.argmax(1), time.time() - t0)
    print(f"   CV: fold macro-F1 {cv['macro_f1_mean']:.4f} +- {cv['macro_f1_std']:.4f}, OOF {cv['oof']['macro_f1']:.4f}")

    t0 = time.time()
    fold_probs = [member_probs([checkpoint], evaluation.files, "hflip", progress=False)[0] for checkpoint in checkpoints_of(cv["cv_dir"])]
    tta_probs = np.mean(fold_probs, axis=0)
    report("3 + hflip TTA", tta_probs.argmax(1), time.time() - t0)

    t0 = time.time()
    oof_images = pd.read_csv(Path(cv["cv_dir"]) / "oof_images.csv", dtype={"id": str})
    oof_probs = np.load(Path(cv["cv_dir"]) / "oof_probs.npy")
    tuning = cross_fit_offsets(oof_probs, oof_images["label"].to_numpy(), oof_images["id"].to_numpy())
    print(f"   offsets on OOF, cross-fitted by person: argmax {tuning['argmax_f1']:.4f} -> tuned {tuning['tuned_f1']:.4f} (gain {tuning['gain']:+.4f})")
    report("4 + macro-F1 offsets (fitted on OOF)", apply_offsets(tta_probs, tuning["offsets"]), time.time() - t0)

    t0 = time.time()
    groups = person_groups(evaluation.files)
    consistent = person_consistency(tta_probs, groups)
    report("5 + person consistency", apply_offsets(consistent, tuning["offsets"]), time.time() - t0)
    report("5b person consistency, no offsets", consistent.argmax(1), 0.0)
    report("6 hard vote of folds (TTA)", hard_vote(fold_probs), 0.0)
    (out / "ensemble_bench.json").write_text(json.dumps({"preset": args.preset, "overrides": args.overrides, "steps": rows,
                                                         "offsets_crossfit": {k: v for k, v in tuning.items() if k != "offsets"}}, indent=2))
    print(f"results in {out / 'ensemble_bench.json'}")


if __name__ == "__main__":
    main()
