"""How far apart two or more submissions are on the stand-in's public eval, with an interval.

    .venv/bin/python bench/eval_gap.py SUBMISSION.csv SUBMISSION.csv [...] --data STANDIN_ROOT

Each submission (ImageID,ans) is scored against DATA/eval/truth.csv, and its gap to the first is
given with the 5-95 % interval of a paired bootstrap over the eval's persons (DATA/eval/meta.csv's
id). Photos are matched on ImageID, so a tight run and a run on the same eval widened into scenes
(bench/widen.py keeps the ImageIDs) compare photo by photo. This scores eval answers that were
already made; it chooses nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from maskcls.metrics import macro_f1, paired_person_bootstrap


def eval_gaps(submissions: dict, data: Path, reference) -> dict:
    """{key: (macro-F1, gap, low, high)} of each submission in `submissions` ({key: CSV path}),
    the gap and its interval against `reference`."""
    truth = pd.read_csv(data / "eval" / "truth.csv", dtype={"ImageID": str}).set_index("ImageID")["ans"]
    persons = pd.read_csv(data / "eval" / "meta.csv", dtype={"ImageID": str, "id": str}).set_index("ImageID")["id"]
    answers = {}
    for key, path in submissions.items():
        table = pd.read_csv(path, dtype={"ImageID": str}).set_index("ImageID")["ans"]
        if set(table.index) != set(truth.index):
            raise SystemExit(f"bench/eval_gap.py: {path} answers other photos than {data / 'eval' / 'truth.csv'}; "
                             "give submissions for the whole eval split of DATA")
        answers[key] = table.loc[truth.index].to_numpy()
    gaps = paired_person_bootstrap(truth.to_numpy(), answers, persons.loc[truth.index].to_numpy(), reference)
    return {key: (macro_f1(truth.to_numpy(), answers[key]), *gaps[key]) for key in submissions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, required=True, help="stand-in root whose eval/ holds truth.csv and meta.csv")
    args = parser.parse_args()
    if len(args.submissions) < 2:
        parser.error("give at least two submissions")
    submissions = {str(path): path for path in args.submissions}
    reference = str(args.submissions[0])
    scores = eval_gaps(submissions, args.data, reference)
    print(f"== bench/eval_gap.py: gap to {reference} on {args.data / 'eval'}, 5-95 % of a paired bootstrap over persons")
    for key, (f1, gap, low, high) in scores.items():
        print(f"  {key}: {f1:.4f}" + ("" if key == reference else f"  gap {gap:+.4f} [{low:+.4f}, {high:+.4f}]"))


if __name__ == "__main__":
    main()
