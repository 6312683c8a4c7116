"""How far apart two or more runs really are on the person holdout they share (train data only).

    .venv/bin/python bench/holdout_gap.py RUN_OR_CV_DIR RUN_OR_CV_DIR [...]

Each run's best-epoch macro-F1 on its validation photos (val_probs.npy, val_images.csv), or a CV
folder's on its out-of-fold photos (oof_probs.npy, oof_images.csv: every person once), and its
gap to the first, with the 5-95 % interval of a paired bootstrap over the holdout's persons.
Runs are matched photo by photo on (person folder, photo name), so a run on tight faces and one
on the same persons' wide scenes compare, as long as they held out the same persons.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from maskcls.metrics import macro_f1, paired_person_bootstrap


def held_out(run_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The photos a run or CV folder was scored on, and its probabilities for them."""
    for table, probs in (("oof_images.csv", "oof_probs.npy"), ("val_images.csv", "val_probs.npy")):
        if (run_dir / table).exists() and (run_dir / probs).exists():
            return pd.read_csv(run_dir / table), np.load(run_dir / probs)
    raise SystemExit(f"bench/holdout_gap.py: {run_dir} has neither val_images.csv + val_probs.npy nor oof_images.csv + "
                     "oof_probs.npy; give a finished run that held out persons, or a finished CV folder")


def holdout_gaps(run_dirs: dict, reference) -> dict:
    """{key: (macro-F1, gap, low, high)} of each run in `run_dirs` ({key: run or CV folder}), the
    gap and its interval against `reference`."""
    tables, predictions = {}, {}
    for key, run_dir in run_dirs.items():
        table, probs = held_out(run_dir)
        table = table.set_index(["path", "photo"])
        tables[key] = table
        predictions[key] = pd.Series(probs.argmax(1), index=table.index)
    first = tables[reference]
    for key, table in tables.items():
        if not table.index.sort_values().equals(first.index.sort_values()):
            raise SystemExit(f"bench/holdout_gap.py: {run_dirs[key]} validated on other photos than "
                             f"{run_dirs[reference]}; give the runs the same persons and split seed")
    aligned = {key: predictions[key].loc[first.index].to_numpy() for key in run_dirs}
    gaps = paired_person_bootstrap(first["label"], aligned, first.index.get_level_values("path"), reference)
    return {key: (macro_f1(first["label"], aligned[key]), *gaps[key]) for key in run_dirs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("give at least two runs")
    run_dirs = {str(run): run for run in args.runs}
    reference = str(args.runs[0])
    scores = holdout_gaps(run_dirs, reference)
    print(f"== bench/holdout_gap.py: gap to {reference} on the photos it held out, 5-95 % of a paired bootstrap over persons")
    for key, (f1, gap, low, high) in scores.items():
        print(f"  {key}: {f1:.4f}" + ("" if key == reference else f"  gap {gap:+.4f} [{low:+.4f}, {high:+.4f}]"))


if __name__ == "__main__":
    main()
