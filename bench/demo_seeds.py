"""The demo recipe over several seeds, for two or more variants of its config, on one demo dataset.

    .venv/bin/python bench/demo_seeds.py --out /tmp/demo-seeds --seeds 0-9 \
        --variant scan=preprocess.crop_onet_scan=true --variant no-scan=preprocess.crop_onet_scan=false

One demo fit scores its 420 eval photos, which hold few photos of the rarer classes, so its
macro-F1 moves with the training seed by more than most changes move it. This fits the demo
recipe once per seed and variant (the same seeds for every variant), predicts the demo eval and
scores it, and prints each variant's spread over the seeds and its gap to the first variant,
paired by seed. Photos are also split by which step of the first variant's detection chain found
their face (`FaceDetector.main_face`'s source), so a change that acts on a few photos is seen
where it acts. Every (variant, seed) lands in OUT/<variant>-seed<S>/; a rerun skips the finished.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from maskcls.data.demo import write_demo_dataset
from maskcls.faces import DetectorSettings, face_boxes
from maskcls.fileio import atomic_write_text
from maskcls.fit import fit
from maskcls.infer import predict
from maskcls.metrics import score

RESAMPLES = 2000  # bootstrap draws of the seeds, for the paired gap's 5-95 % interval


def seed_list(text: str) -> list[int]:
    """'0-4' or '0,2,7'."""
    if "-" in text:
        first, last = (int(v) for v in text.split("-"))
        return list(range(first, last + 1))
    return [int(v) for v in text.split(",")]


def variant(text: str) -> tuple[str, list[str]]:
    """'name=key=value,key=value' -> (name, [key=value, ...]); a comma starts a new override only
    where a key= follows it, so a list value (thresholds=0.3,0.4,0.4) stays whole."""
    name, _, overrides = text.partition("=")
    if not name or "=" not in overrides:
        raise argparse.ArgumentTypeError(f"{text!r}: a variant is NAME=key=value[,key=value ...]")
    return name, re.split(r",(?=[\w.]+=)", overrides)


def run_one(data: Path, folder: Path, seed: int, overrides: list[str]) -> tuple[pd.Series, dict, float]:
    """(answers by ImageID, the preprocessing the member recorded, minutes) of one (variant, seed);
    a finished one (its result.json written) is read back, not rerun."""
    done, submission = folder / "result.json", folder / "submission.csv"
    if not done.is_file():
        started = time.time()
        fitted = fit("demo", data, folder / "fit", [f"seed={seed}", *overrides], progress=False)
        predict(fitted["recipe"], data / "eval", submission, progress=False, force=True)
        atomic_write_text(done, json.dumps({"seed": seed, "overrides": overrides, "minutes": (time.time() - started) / 60}), what="result")
    answers = pd.read_csv(submission, dtype={"ImageID": str}).set_index("ImageID")["ans"]
    preprocess = json.loads(folder.joinpath("submission.meta.json").read_text())["preprocess"][0]
    return answers, preprocess, json.loads(done.read_text())["minutes"]


def chain_sources(data: Path, image_ids, preprocess: dict) -> np.ndarray:
    """Which step of the chain found each eval photo's face, under a run's recorded detector."""
    settings = DetectorSettings.from_dict(preprocess["detector"])
    return np.array([face.source for face in face_boxes([str(data / "eval" / "images" / i) for i in image_ids], settings)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("demo_out/data"), help="demo data (written there when missing)")
    parser.add_argument("--out", type=Path, required=True, help="one folder per (variant, seed); rerun to resume")
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0-4"))
    parser.add_argument("--variant", type=variant, action="append", required=True,
                        help="NAME=key=value[,key=value ...]; the first is the reference")
    args = parser.parse_args(argv)
    if not (args.data / "train" / "train.csv").exists():
        write_demo_dataset(args.data)
    truth = pd.read_csv(args.data / "eval" / "truth.csv", dtype={"ImageID": str})
    image_ids, labels = truth["ImageID"].tolist(), truth["ans"].to_numpy()

    results, macro_f1 = {}, {}
    for name, overrides in args.variant:
        for seed in args.seeds:
            answers, preprocess, minutes = run_one(args.data, args.out / f"{name}-seed{seed}", seed, overrides)
            results[name, seed] = (answers.loc[image_ids].to_numpy(), preprocess)
            macro_f1[name, seed] = score(labels, results[name, seed][0])["macro_f1"]
            print(f"{name} seed {seed}: macro-F1 {macro_f1[name, seed]:.4f} ({minutes:.1f} min)", flush=True)

    names = [name for name, _ in args.variant]
    f1 = pd.DataFrame({name: [macro_f1[name, s] for s in args.seeds] for name in names}, index=args.seeds)
    accuracy = {name: np.mean([(results[name, s][0] == labels).mean() for s in args.seeds]) for name in names}
    print(f"\n== demo recipe on {args.data}: {len(image_ids)} eval photos, seeds {args.seeds[0]}..{args.seeds[-1]} ({len(args.seeds)})")
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(args.seeds), size=(RESAMPLES, len(args.seeds)))
    for name in names:
        line = (f"{name:>12}: macro-F1 mean {f1[name].mean():.4f} (sd {f1[name].std():.4f}, {f1[name].min():.4f}-{f1[name].max():.4f}), "
                f"accuracy {accuracy[name]:.4f}")
        if name != names[0]:
            gap = (f1[name] - f1[names[0]]).to_numpy()
            low, high = np.percentile(gap[draws].mean(axis=1), [5, 95])
            line += f"; gap to {names[0]} {gap.mean():+.4f} [{low:+.4f}, {high:+.4f}], higher in {(gap > 0).sum()} of {len(gap)} seeds"
        print(line)

    preprocess = results[names[0], args.seeds[0]][1]
    if preprocess["crop"] == "mtcnn":
        sources = chain_sources(args.data, image_ids, preprocess)
        print(f"\nphotos right, summed over the seeds, by the step of {names[0]}'s chain that found the face:")
        for source in pd.unique(sources):
            where = sources == source
            counts = ", ".join(f"{name} {sum((results[name, s][0][where] == labels[where]).sum() for s in args.seeds)}" for name in names)
            print(f"  {source:>10} ({where.sum()} photos x {len(args.seeds)} seeds): {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
