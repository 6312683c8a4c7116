"""`maskcls demo`: the whole road on built-in SYNTHETIC data, in a few minutes on 2 CPU cores.

demo data -> check -> EDA -> fit the demo recipe (configs/recipes/demo.yaml) -> predict with
the recipe -> checked submission -> evaluation report against the demo eval truth. The demo
data is drawn by `maskcls.data.demo`; its scores say the pipeline works, not how well a model
does on faces.
"""
from __future__ import annotations

import time
from pathlib import Path

from .data.demo import write_demo_dataset
from .data.layout import check
from .eda import run_eda
from .errors import MaskclsError
from .fit import fit
from .infer import load_recipe, predict
from .labels import NUM_CLASSES
from .report import evaluate_files

CHANCE_MACRO_F1 = 1 / NUM_CLASSES  # roughly what a constant or random guess scores


def run_demo(out="demo_out", quiet: bool = False) -> dict:
    out = Path(out)
    data = out / "data"
    started = time.time()
    if out.exists() and not out.is_dir():
        raise MaskclsError(f"{out}: is a file; --out takes a folder for the demo's data and results")
    recipe = load_recipe("demo")  # checked before any work
    if not (data / "train" / "train.csv").exists():
        write_demo_dataset(data)
        print(f"[1/6] wrote synthetic demo data to {data}", flush=True)
    else:
        print(f"[1/6] reusing demo data in {data}", flush=True)
    print("[2/6] data check:", flush=True)
    for line in check(data, progress=not quiet):
        print("   ", line)
    eda_dir = out / "eda"
    run_eda(data, eda_dir, progress=not quiet)
    print(f"[3/6] EDA report: {eda_dir / 'report.html'}", flush=True)
    print(f"[4/6] fitting recipe {recipe.name!r} (configs/recipes/demo.yaml):", flush=True)
    fitted = fit(recipe, data, out / "fit", progress=not quiet)
    fit_dir = Path(fitted["fit_dir"])
    submission = fit_dir / "submission.csv"
    predicted = predict(fitted["recipe"], data / "eval", submission, progress=not quiet, force=True)  # the demo's own output
    print(f"[5/6] submission {submission} (checked against info.csv); probabilities {predicted['probs']}", flush=True)
    report_dir = fit_dir / "eval_report"
    summary = evaluate_files(submission, data / "eval" / "truth.csv", report_dir, predicted["probs"], data / "eval" / "images",
                             data / "eval" / "meta.csv")
    print(f"[6/6] demo eval: macro-F1 {summary['macro_f1']:.4f} (chance about {CHANCE_MACRO_F1:.3f}), accuracy {summary['accuracy']:.4f}; "
          f"mask {summary['mask_f1']:.3f} gender {summary['gender_f1']:.3f} age {summary['age_f1']:.3f}", flush=True)
    print(f"report: {report_dir / 'report.html'}   total {time.time() - started:.0f} s", flush=True)
    return {"fit_dir": str(fit_dir), "submission": str(submission), **summary}
