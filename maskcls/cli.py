"""`maskcls` command line: thin wrappers over the library API.

A user mistake (bad data, bad config, bad arguments) prints one line, `maskcls: error: ...`,
and exits 2, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import MaskclsError


def cmd_check(args):
    from .data.layout import check

    for line in check(args.data, tuple(args.age_cuts), args.label_fixes, progress=not args.quiet):
        print(line)


def cmd_demo_data(args):
    from .data.demo import write_demo_dataset

    out = write_demo_dataset(args.out, args.persons, args.eval_persons, args.image_size, args.seed)
    print(f"wrote synthetic demo data to {out}/train and {out}/eval (truth in eval/truth.csv)")


def cmd_eda(args):
    from .eda import run_eda

    summary = run_eda(args.data, args.out, tuple(args.age_cuts), progress=not args.quiet)
    print(f"EDA report: {Path(args.out) / 'report.html'}  ({summary['n_persons']} persons, {summary['n_images']} images; "
          f"channel mean {summary['channel_mean']}, std {summary['channel_std']})")


def cmd_train(args):
    from .config import load_config
    from .train import train

    if args.resume:
        result = train(resume=args.resume, progress=not args.quiet)
    else:
        result = train(load_config(args.config, args.overrides), progress=not args.quiet)
    if result["validated"]:
        print(f"run {result['run_dir']}: best val macro-F1 {result['best_macro_f1']:.4f} at epoch {result['best_epoch'] + 1}")
    else:
        print(f"run {result['run_dir']}: trained on every person (no validation); best.pt is epoch {result['best_epoch'] + 1}")


def cmd_cv(args):
    from .config import load_config
    from .cv import run_cv

    cfg = None if args.resume else load_config(args.config, args.overrides)
    result = run_cv(cfg, args.folds, args.resume, progress=not args.quiet)
    print(f"cv {result['cv_dir']}: fold macro-F1 {result['macro_f1_mean']:.4f} +- {result['macro_f1_std']:.4f}, "
          f"OOF macro-F1 {result['oof']['macro_f1']:.4f}")


def cmd_predict(args):
    from .ensemble_spec import read_ensemble
    from .predict import predict

    members, method, weights, offsets, by_person = args.members, args.method, None, None, args.by_person
    if args.ensemble:
        spec = read_ensemble(args.ensemble)
        members, method, weights, offsets = spec["members"], spec["method"], spec["weights"], spec["offsets"]
        by_person = by_person or spec.get("by_person", False)
    if not members:
        raise MaskclsError("predict: name at least one run folder, CV folder or checkpoint, or --ensemble FILE")
    result = predict(members, args.data, args.out, args.tta, method, weights, offsets, args.batch_size, progress=not args.quiet,
                     by_person=by_person, mask_weights=args.mask_weights)
    print(f"submission {result['submission']} (checked); probabilities {result['probs']}; metadata {result['meta']}")


def cmd_check_submission(args):
    from .predict import check_submission

    print(check_submission(args.file, args.info))


def cmd_ensemble(args):
    from .ensemble_spec import build_ensemble

    spec = build_ensemble(args.members, args.out, args.method, args.fit_weights, args.tune_offsets)
    print(json.dumps({k: spec[k] for k in ("members", "method", "weights", "oof")}, indent=1))
    print(f"wrote {Path(args.out) / 'ensemble.json'}; use it with: maskcls predict --ensemble {Path(args.out) / 'ensemble.json'} --data EVAL --out submission.csv")


def cmd_evaluate(args):
    from .report import evaluate_files

    summary = evaluate_files(args.pred, args.truth, args.out, args.probs, args.images, args.meta)
    print(f"macro-F1 {summary['macro_f1']:.4f}  accuracy {summary['accuracy']:.4f}  "
          f"(mask {summary['mask_f1']:.3f} gender {summary['gender_f1']:.3f} age {summary['age_f1']:.3f}); report {Path(args.out) / 'report.html'}")


def cmd_demo(args):
    from .demo import run_demo

    run_demo(args.out, quiet=args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskcls", description="Mask / gender / age classification for the P Stage 1 layout.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help_text):
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(func=func)
        return command

    def age_cuts(command):
        command.add_argument("--age-cuts", nargs=2, type=int, default=[30, 60], metavar=("LOW", "HIGH"),
                             help="age group boundaries (default 30 60; competitors move HIGH to 57 or 58)")

    command = add("check", cmd_check, "validate a dataset folder (train/ and/or eval/) and print a summary")
    command.add_argument("data")
    command.add_argument("--label-fixes", help="versioned label-fixes CSV to apply")
    age_cuts(command)

    command = add("demo-data", cmd_demo_data, "write a small SYNTHETIC dataset in the competition layout")
    command.add_argument("--out", required=True)
    command.add_argument("--persons", type=int, default=150)
    command.add_argument("--eval-persons", type=int, default=60)
    command.add_argument("--image-size", type=int, default=96)
    command.add_argument("--seed", type=int, default=0)

    command = add("eda", cmd_eda, "exploratory data analysis: PNG plots and one HTML report")
    command.add_argument("data")
    command.add_argument("--out", required=True)
    age_cuts(command)

    for name, func, help_text in (("train", cmd_train, "train one person-split run"),
                                  ("cv", cmd_cv, "K-fold cross-validation by person, with out-of-fold probabilities")):
        command = add(name, func, help_text)
        command.add_argument("--config", help="YAML file, or a name in configs/ (demo, cpu-fast, cpu-face, cpu-finetune, gpu)")
        command.add_argument("--resume", help="continue an interrupted run (train) or CV folder (cv)")
        command.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=0.001 data.root=DATA")
        if name == "cv":
            command.add_argument("--folds", type=int, default=5)

    command = add("predict", cmd_predict, "write a submission (info.csv with ans) from runs, CV folders or an ensemble")
    command.add_argument("members", nargs="*", help="run folders, CV folders or checkpoint files")
    command.add_argument("--data", required=True, help="eval folder (holding info.csv and images/) or the dataset root")
    command.add_argument("--out", required=True, help="submission CSV path")
    command.add_argument("--tta", default="none", choices=["none", "hflip", "multiscale"])
    command.add_argument("--method", default="soft", choices=["soft", "hard"])
    command.add_argument("--ensemble", help="ensemble.json written by `maskcls ensemble`")
    command.add_argument("--by-person", action="store_true",
                         help="group the eval photos into persons (7 each); each person's photos share one gender and age, read mostly from the unmasked photo")
    command.add_argument("--mask-weights", type=float, nargs="+", metavar="W",
                         help="one weight per member for the mask alone, e.g. 0 0 0 1 to take the mask from the fourth")
    command.add_argument("--batch-size", type=int, default=64)

    command = add("check-submission", cmd_check_submission, "verify a submission against info.csv")
    command.add_argument("file")
    command.add_argument("--info", required=True)

    command = add("ensemble", cmd_ensemble, "combine runs and CV folders; fit weights and macro-F1 offsets on OOF")
    command.add_argument("members", nargs="+")
    command.add_argument("--out", required=True, help="folder for ensemble.json")
    command.add_argument("--method", default="soft", choices=["soft", "hard"])
    command.add_argument("--fit-weights", action="store_true", help="fit soft-vote weights on OOF macro-F1")
    command.add_argument("--tune-offsets", action="store_true", help="fit per-class logit offsets on OOF (cross-fitted report)")

    command = add("evaluate", cmd_evaluate, "score a submission against a truth CSV; HTML/PNG report")
    command.add_argument("pred")
    command.add_argument("--truth", required=True)
    command.add_argument("--out", required=True)
    command.add_argument("--probs", help="probabilities .npy aligned with the submission rows")
    command.add_argument("--images", help="folder of the eval images, for thumbnails")
    command.add_argument("--meta", help="CSV ImageID,id giving each image's person")

    command = add("demo", cmd_demo, "the whole road on built-in synthetic data: data, check, EDA, train, predict, evaluate")
    command.add_argument("--out", default="demo_out")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="maskcls: %(levelname)s: %(message)s")
    try:
        args.func(args)
    except MaskclsError as exc:
        print(f"maskcls: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maskcls: interrupted; a run continues with `maskcls train --resume RUN` (or `cv --resume CV_DIR`)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
