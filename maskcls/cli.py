"""`maskcls` command line: thin wrappers over the library API.

A user mistake (bad data, bad config, bad arguments) prints one line, `maskcls: error: ...`,
and exits 2, without a traceback. Dotted overrides (key=value) may stand anywhere after the
command, before or after its flags.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import re
import signal
import sys
from pathlib import Path

from .errors import MaskclsError

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")
# maskcls.infer.runtime.TTA_PRESETS, repeated so that the CLI answers --help without importing torch
# (tests/test_serve.py checks the two agree).
TTA_CHOICES = ("none", "hflip", "multiscale")


def age_cuts(args) -> tuple[int, int]:
    low, high = args.age_cuts
    if not 0 < low < high:
        raise MaskclsError(f"--age-cuts {low} {high}: the cuts must increase, e.g. --age-cuts 30 60")
    return low, high


def cmd_check(args):
    from .data.layout import check

    for line in check(args.data, age_cuts(args), args.label_fixes, progress=not args.quiet, strict=args.strict):
        print(line)


def cmd_crop(args):
    from .data.cropped import write_cropped_copy

    counts = write_cropped_copy(args.data, args.out, args.margin, args.size, progress=not args.quiet, align=args.align, force=args.force,
                                onet=args.onet)
    onet = counts.pop("onet")
    print(", ".join(f"{split}: {n} photos" for split, n in counts.items()), f"cropped into {args.out} (boxes in each split's crops.csv); "
          f"O-net: {'tuned ' + onet if onet else 'packaged'}")


def cmd_export(args):
    from .fileio import refuse_filled_folder

    refuse_filled_folder(args.out, args.force)  # before the export's imports: a kept model is refused at once
    from .serve.export import export_model

    spec = export_model(args.source, args.out, args.data, args.int8, args.force, progress=not args.quiet, tta=args.tta)
    for check in spec["parity"]:
        int8 = f"; int8: max |diff| {check['max_abs_diff_int8']:.3g}, argmax agreement {check['argmax_agreement_int8']:.3f}" if args.int8 else ""
        print(f"{check['graph']}: ONNX Runtime matches PyTorch on {check['photos']} photos (max |diff| {check['max_abs_diff_fp32']:.2e}){int8}")
    print(f"model {spec['model_id']} written to {args.out} (model.json + {sum(len(m['graphs']) for m in spec['members'])} graph(s))")


def cmd_serve(args):
    from .serve import model_source

    model_source(args.model)  # before the model's imports: a missing folder is refused at once
    from .serve.app import serve

    serve(args.model, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, int8=args.int8, tta=args.tta)


def cmd_demo_data(args):
    from .data.demo import write_demo_dataset

    out = write_demo_dataset(args.out, args.persons, args.eval_persons, args.image_size, args.seed, args.scene)
    print(f"wrote synthetic demo data to {out}/train and {out}/eval (truth in eval/truth.csv)")


def refuse_existing_report(args) -> None:
    """A report folder that already holds a report is kept unless --force."""
    report = Path(args.out) / "report.html"
    if report.exists() and not args.force:
        raise MaskclsError(f"{report}: exists; pass --force to replace the report, or choose another --out")


def cmd_eda(args):
    from .eda import run_eda

    refuse_existing_report(args)
    summary = run_eda(args.data, args.out, age_cuts(args), progress=not args.quiet)
    print(f"EDA report: {Path(args.out) / 'report.html'}  ({summary['n_persons']} persons, {summary['n_images']} images; "
          f"channel mean {summary['channel_mean']}, std {summary['channel_std']})")


def cmd_train(args):
    from .config import load_config
    from .train import train

    if args.resume:
        refuse_overrides_on_resume(args)
        result = train(resume=args.resume, progress=not args.quiet)
    else:
        result = train(load_config(args.config, args.overrides), progress=not args.quiet)
    if result["validated"]:
        print(f"run {result['run_dir']}: best val macro-F1 {result['best_macro_f1']:.4f} at epoch {result['best_epoch'] + 1}")
    else:
        print(f"run {result['run_dir']}: trained on every person (no validation); best.pt is epoch {result['best_epoch'] + 1}")


def cmd_cv(args):
    from .config import load_config
    from .train import run_cv

    if args.resume:
        refuse_overrides_on_resume(args)
    cfg = None if args.resume else load_config(args.config, args.overrides)
    result = run_cv(cfg, args.folds, args.resume, progress=not args.quiet)
    print(f"cv {result['cv_dir']}: fold macro-F1 {result['macro_f1_mean']:.4f} +- {result['macro_f1_std']:.4f}, "
          f"OOF macro-F1 {result['oof']['macro_f1']:.4f}")


def refuse_overrides_on_resume(args):
    if args.overrides or args.config:
        raise MaskclsError(f"--resume continues {args.resume} with its own config.yaml; drop --config and the overrides "
                           f"({' '.join(args.overrides) or args.config}), or start a new run with them")


def cmd_fit(args):
    from .fit import fit

    result = fit(args.recipe, args.data, args.out, args.overrides, progress=not args.quiet)
    trained = ", ".join(result["trained"]) or "none (all were done)"
    print(f"fit {result['fit_dir']}: recipe {result['recipe'].name!r}, members trained now: {trained}; "
          f"predict with: maskcls predict {result['fit_dir']} --data EVAL --out submission.csv")


def cmd_tune(args):
    from .tune import tune, write_report

    if args.report:
        if args.config or args.space or args.trials is not None or args.overrides:
            raise MaskclsError("--report draws an existing study; drop --config, --space, --trials and the overrides")
        result = write_report(args.report, args.storage, args.force)
        print(f"report {result['report']}: best trial {result['best_trial']} (validation macro-F1 {result['best_macro_f1']:.4f}); "
              f"its config {result['best_config']}, a recipe {result['best_recipe']}")
        return
    missing = [flag for flag, value in (("--config", args.config), ("--space", args.space), ("--trials", args.trials)) if value is None]
    if missing:
        raise MaskclsError(f"tune needs {', '.join(missing)} (or --report STUDY_DIR to draw a study)")
    result = tune(args.config, args.space, args.trials, args.storage, args.study, args.out, args.folds, args.pruner, args.seed,
                  args.overrides, progress=not args.quiet)
    held = f"{result['complete']} complete, {result['pruned']} pruned, {result['failed']} failed"
    if "best_trial" not in result:
        print(f"study {result['study']} ({result['study_dir']}): {held}; no trial has completed yet")
        return
    print(f"study {result['study']} ({result['study_dir']}): ran {result['ran']} trials now; holds {held}. Best: trial "
          f"{result['best_trial']}, validation macro-F1 {result['best_macro_f1']:.4f}. "
          f"Plots and its config: maskcls tune --report {result['study_dir']}")


def cmd_predict(args):
    from .data.layout import eval_folder
    from .infer.outputs import output_paths

    output_paths(args.out, eval_folder(args.data), args.force)  # a kept submission is refused before the model's imports
    from .infer import Vote, load_recipe, predict, recipe_of_runs
    from .infer.recipe import looks_like_recipe

    if len(args.members) == 1 and looks_like_recipe(args.members[0]):
        recipe = load_recipe(args.members[0])
        vote = recipe.vote.replace(**{k: v for k, v in (("method", args.method), ("mask_weights", args.mask_weights)) if v is not None})
        recipe = recipe.replace(tta=args.tta or recipe.tta, vote=vote,
                                by_person=recipe.by_person if args.by_person is None else args.by_person)
    else:
        recipe = recipe_of_runs(args.members, args.tta or "none", Vote(method=args.method or "soft", mask_weights=args.mask_weights),
                                bool(args.by_person))
    result = predict(recipe, args.data, args.out, args.batch_size, progress=not args.quiet, force=args.force)
    print(f"submission {result['submission']} (checked); probabilities {result['probs']}; metadata {result['meta']}")


def cmd_check_submission(args):
    from .infer import check_submission

    print(check_submission(args.file, args.info))


def cmd_ensemble(args):
    from .fit import fit_vote
    from .infer import save_recipe

    out = Path(args.out) / "recipe.yaml"
    if out.exists() and not args.force:
        raise MaskclsError(f"{out}: exists; pass --force to replace it, or choose another --out")
    recipe = fit_vote(args.members, args.method, args.fit_weights, args.tune_offsets, args.tta, args.by_person, name=Path(args.out).name)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, out)
    print(json.dumps({"vote": recipe.vote.to_dict(), **recipe.notes}, indent=1))
    print(f"wrote {out}; use it with: maskcls predict {out.parent} --data EVAL --out submission.csv")


def cmd_evaluate(args):
    from .report import evaluate_files

    refuse_existing_report(args)
    summary = evaluate_files(args.pred, args.truth, args.out, args.probs, args.images, args.meta)
    print(f"macro-F1 {summary['macro_f1']:.4f}  accuracy {summary['accuracy']:.4f}  "
          f"(mask {summary['mask_f1']:.3f} gender {summary['gender_f1']:.3f} age {summary['age_f1']:.3f}); report {Path(args.out) / 'report.html'}")


def cmd_demo(args):
    from .demo import run_demo

    run_demo(args.out, quiet=args.quiet)


def add_command(sub, name, func, help_text, overrides=False) -> argparse.ArgumentParser:
    command = sub.add_parser(name, help=help_text, description=help_text)
    command.set_defaults(func=func, takes_overrides=overrides, overrides=[])
    if overrides:
        command.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=0.001")
    return command


def add_age_cuts(command) -> None:
    command.add_argument("--age-cuts", nargs=2, type=int, default=[30, 60], metavar=("LOW", "HIGH"),
                         help="age group boundaries (default 30 60; competitors move HIGH to 57 or 58)")


def add_data_commands(sub) -> None:
    command = add_command(sub, "check", cmd_check, "validate a dataset folder (train/ and/or eval/) and print a summary")
    command.add_argument("data")
    command.add_argument("--label-fixes", help="versioned label-fixes CSV to apply")
    command.add_argument("--strict", action="store_true",
                         help="for CI pipelines: warnings (implausible ages, tiny photos, files nothing lists) are errors")
    add_age_cuts(command)

    command = add_command(sub, "demo-data", cmd_demo_data, "write a small SYNTHETIC dataset in the competition layout")
    command.add_argument("--out", required=True)
    command.add_argument("--persons", type=int, default=150)
    command.add_argument("--eval-persons", type=int, default=60)
    command.add_argument("--scene", choices=["wide", "tight"], default="wide",
                         help="wide: 384x512 upper-body scenes, the face somewhere in them (default); tight: the face fills the photo")
    command.add_argument("--image-size", type=int, help="a tight photo's side (default 96) or a wide one's width (default 384)")
    command.add_argument("--seed", type=int, default=0)

    command = add_command(sub, "crop", cmd_crop, "a face-cropped copy of a data set in the same layout, with crops.csv (box, score, detector)")
    command.add_argument("data")
    command.add_argument("--out", required=True)
    command.add_argument("--margin", type=float, default=0.1, help="grow the crop by this share of its side, each way")
    command.add_argument("--align", choices=["eyes", "box"], default="eyes",
                         help="eyes: frame the face on its eyes, as the face networks' chips are (default); box: the square around the box")
    command.add_argument("--size", type=int, help="rescale each crop to SIZE x SIZE (default: keep its pixels)")
    command.add_argument("--onet", choices=["tuned", "packaged"], default="tuned",
                         help="tuned: detect with O-net tuned on train/'s bare faces, as a fit does (default); packaged: facenet-pytorch's")
    command.add_argument("--force", action="store_true", help="replace an existing copy in --out")

    command = add_command(sub, "eda", cmd_eda, "exploratory data analysis: PNG plots and one HTML report")
    command.add_argument("data")
    command.add_argument("--out", required=True)
    command.add_argument("--force", action="store_true", help="replace an existing report in --out")
    add_age_cuts(command)


def add_training_commands(sub) -> None:
    for name, func, help_text in (("train", cmd_train, "train one person-split run"),
                                  ("cv", cmd_cv, "K-fold cross-validation by person, with out-of-fold probabilities")):
        command = add_command(sub, name, func, help_text, overrides=True)
        command.add_argument("--config", help="YAML file, or a name in configs/ (demo, cpu-fast, cpu-face, cpu-finetune, gpu)")
        command.add_argument("--resume", help="continue an interrupted run (train) or CV folder (cv)")
        if name == "cv":
            command.add_argument("--folds", type=int, default=5)

    command = add_command(sub, "fit", cmd_fit, "train every member of a recipe into one folder (resumable); predict from that folder",
                          overrides=True)
    command.add_argument("recipe", help="a recipe YAML or a name in configs/recipes/ (demo, cpu-fast, cpu-best)")
    command.add_argument("--data", required=True, help="dataset folder holding train/")
    command.add_argument("--out", help="fit folder (default runs/RECIPE); rerun the same command to resume it")

    command = add_command(sub, "tune", cmd_tune, "an Optuna search over config keys (resumable; several workers may share it), "
                                                 "or --report a study's plots and best config", overrides=True)
    command.add_argument("--config", help="the trials' base config: a YAML file or a name in configs/ (cpu-fast, cpu-face, ...)")
    command.add_argument("--space", help="search space YAML, or a name in configs/space/ (cpu-fast, cpu-face)")
    command.add_argument("--trials", type=int, help="finished trials the study should hold; rerun to resume, raise it to extend")
    command.add_argument("--storage", help="database URL shared by workers, e.g. postgresql://user:pass@host/db "
                                           "(default: SQLite in the study folder)")
    command.add_argument("--study", help="study name (default CONFIG-SPACE)")
    command.add_argument("--out", help="study folder: study.json and trial runs (default runs/tune/STUDY)")
    command.add_argument("--folds", type=int, help="score each trial by the mean over K person folds instead of the holdout")
    command.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    command.add_argument("--seed", type=int, default=0, help="TPE sampler seed; give each worker started together its own")
    command.add_argument("--report", metavar="STUDY_DIR", help="write STUDY_DIR/report/: plots, report.html, best.yaml, a recipe")
    command.add_argument("--force", action="store_true", help="with --report: replace an existing report")

    command = add_command(sub, "ensemble", cmd_ensemble, "a recipe over runs and CV folders; fit weights and macro-F1 offsets on OOF")
    command.add_argument("members", nargs="+")
    command.add_argument("--out", required=True, help="folder for recipe.yaml")
    command.add_argument("--method", default="soft", choices=["soft", "hard"])
    command.add_argument("--fit-weights", action="store_true", help="fit soft-vote weights on OOF macro-F1")
    command.add_argument("--tune-offsets", action="store_true", help="fit per-class logit offsets on OOF (cross-fitted report)")
    command.add_argument("--tta", default="none", choices=TTA_CHOICES)
    command.add_argument("--by-person", action="store_true", help="pool each person's eval photos at predict time")
    command.add_argument("--force", action="store_true", help="replace an existing recipe.yaml")


def add_prediction_commands(sub) -> None:
    command = add_command(sub, "predict", cmd_predict, "write a submission (info.csv with ans) from a fit or ensemble folder, a recipe, or runs")
    command.add_argument("members", nargs="+", help="a fit folder, a recipe YAML, or run folders, CV folders and checkpoint files")
    command.add_argument("--data", required=True, help="eval folder (holding info.csv and images/) or the dataset root")
    command.add_argument("--out", required=True, help="submission CSV path")
    command.add_argument("--tta", choices=TTA_CHOICES, help="default: the recipe's, or none for runs")
    command.add_argument("--method", choices=["soft", "hard"], help="default: the recipe's, or soft for runs")
    command.add_argument("--by-person", action=argparse.BooleanOptionalAction, default=None,
                         help="group the eval photos into persons (7 each); each person's photos share one gender and age, "
                              "read mostly from the unmasked photo (default: the recipe's, or off for runs)")
    command.add_argument("--mask-weights", type=float, nargs="+", metavar="W",
                         help="one weight per member for the mask alone, e.g. 0 0 0 1 to take the mask from the fourth")
    command.add_argument("--batch-size", type=int, default=64)
    command.add_argument("--force", action="store_true", help="replace an existing submission and its companion files")

    command = add_command(sub, "check-submission", cmd_check_submission, "verify a submission against info.csv")
    command.add_argument("file")
    command.add_argument("--info", required=True)

    command = add_command(sub, "evaluate", cmd_evaluate, "score a submission against a truth CSV; HTML/PNG report")
    command.add_argument("pred")
    command.add_argument("--truth", required=True)
    command.add_argument("--out", required=True)
    command.add_argument("--probs", help="probabilities .npy aligned with the submission rows")
    command.add_argument("--images", help="folder of the eval images, for thumbnails")
    command.add_argument("--meta", help="CSV ImageID,id giving each image's person")
    command.add_argument("--force", action="store_true", help="replace an existing report in --out")

    command = add_command(sub, "export", cmd_export, "ONNX graphs and a model.json from a fit, ensemble or run folder, checked against PyTorch")
    command.add_argument("source", help="a fit or ensemble folder (with recipe.yaml), a run folder or a CV folder")
    command.add_argument("--out", required=True, help="model folder to write")
    command.add_argument("--format", choices=["onnx"], default="onnx")
    command.add_argument("--int8", action="store_true", help="also write int8 graphs, calibrated on train photos from --data")
    command.add_argument("--data", help="data set whose photos check the graphs (and calibrate int8)")
    command.add_argument("--tta", choices=TTA_CHOICES,
                         help="the views each graph averages (default: the recipe's); none classifies a face in one pass")
    command.add_argument("--force", action="store_true", help="replace an existing model folder")

    command = add_command(sub, "serve", cmd_serve, "a web service and page over an exported model (or a fit folder)")
    command.add_argument("model", help="a folder that `maskcls export` wrote, or a fit / run folder")
    command.add_argument("--host", default="127.0.0.1", help="address to bind; the default answers this machine only")
    command.add_argument("--port", type=int, default=8000)
    command.add_argument("--max-upload-mb", type=float, default=10)
    command.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                         help="serve the export's int8 graphs, or (--no-int8) its fp32 ones; default: int8 when the export has them "
                              "(faster; `maskcls export --int8` printed their cost)")
    command.add_argument("--tta", choices=TTA_CHOICES, help="the views each face is classified in, for a fit or run folder "
                                                         "(default: the recipe's; an export's graphs hold the views it was exported with)")

    command = add_command(sub, "demo", cmd_demo, "the whole road on built-in synthetic data: data, check, EDA, fit the demo recipe, "
                                                 "predict, evaluate")
    command.add_argument("--out", default="demo_out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskcls", description="Mask / gender / age classification for the P Stage 1 layout.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_commands(sub)
    add_training_commands(sub)
    add_prediction_commands(sub)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """Flags and key=value overrides in any order: overrides that argparse leaves over are collected."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [item for item in extra if OVERRIDE.match(item)]
    unknown = [item for item in extra if not OVERRIDE.match(item)]
    if unknown or (overrides and not args.takes_overrides):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    args.overrides = list(args.overrides) + overrides
    return args


# What to do about a file-system fault, by errno: the one line names the path and this.
OS_ERRORS = {
    errno.ENOSPC: "disk full; free space and run the command again",
    errno.EROFS: "read-only file system; choose a writable location (--out)",
    errno.EACCES: "permission denied; choose a location you can write, or fix its permissions",
    errno.EPERM: "not permitted; choose a location you can write, or fix its permissions",
    errno.EISDIR: "is a folder, but a file is wanted here; pass a file path",
    errno.ENOTDIR: "part of this path is a file, but a folder is wanted; choose another path",
    errno.EEXIST: "already exists; choose another path, or pass --force where the command has it",
    errno.ENOENT: "not found; check the path",
}


def error_line(exc: BaseException) -> str | None:
    """The one line a user mistake or a file-system fault gets; None for anything else (a bug)."""
    if isinstance(exc, MaskclsError):
        message = str(exc)
        if "Original Traceback" in message:  # raised inside a DataLoader worker: keep the original line
            last = message.strip().splitlines()[-1]
            message = last.split("MaskclsError: ", 1)[-1]
        return message
    if isinstance(exc, OSError) and exc.errno in OS_ERRORS:
        where = exc.filename if exc.filename is not None else "a file"
        return f"{where}: {OS_ERRORS[exc.errno]}"
    return None


def interrupted(signum, frame):
    raise KeyboardInterrupt  # so a `kill` cleans up as Ctrl-C does (a run killed before its first epoch leaves no folder)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="maskcls: %(levelname)s: %(message)s")
    signal.signal(signal.SIGTERM, interrupted)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("maskcls: interrupted; a run continues with `maskcls train --resume RUN` (or `cv --resume CV_DIR`; "
              "a fit or a search with the same `maskcls fit` or `maskcls tune` command)", file=sys.stderr)
        return 130
    except Exception as exc:
        line = error_line(exc)
        if line is None or args.debug:
            raise
        print(f"maskcls: error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
