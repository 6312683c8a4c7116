"""Search benchmark on the stand-in: `maskcls tune` of the cpu-fast probe over configs/space/cpu-fast.yaml.

    .venv/bin/python bench/tune.py --out DIR [--trials 50] [--feature-cache FILE.npy]

1. The untuned cpu-fast, trained once on the same cached features: its holdout macro-F1.
2. One worker runs the study to N trials; then two workers (one thread each, --seed 0 and 1) run
   a second study on one SQLite file to N trials: wall time of each.
3. The public eval scored once, for the untuned model and each study's best trial (selected on
   the holdout): the frozen backbone's eval features are embedded once, each head applied to them
   (no TTA for any of them), photo by photo and with each person's photos pooled.

`--feature-cache` seeds the studies with train features embedded before (a cpu-fast run's
`.feature_cache/*.npy` on the same data), so the figures time the trials, not the embedding;
without it the first trial embeds every train photo.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import eval_column, standin  # noqa: E402

from maskcls import checkpoint  # noqa: E402
from maskcls.checkpoint import load_model  # noqa: E402
from maskcls.config import load_config  # noqa: E402
from maskcls.data.layout import load_eval, load_train  # noqa: E402
from maskcls.infer import Vote, combine  # noqa: E402
from maskcls.infer.persons import person_groups  # noqa: E402
from maskcls.infer.runtime import embed_files  # noqa: E402
from maskcls.metrics import score  # noqa: E402
from maskcls.models import build_model  # noqa: E402
from maskcls.models.heads import class_probs  # noqa: E402
from maskcls.train.batches import feature_cache_path  # noqa: E402

CONFIG = SPACE = "cpu-fast"


def seed_cache(cache: Path | None, data: Path, trials_dir: Path) -> None:
    """Link the given train features where the study's trials look for them."""
    if cache is None:
        return
    cfg = load_config(CONFIG, [f"data.root={data}", f"out={trials_dir}"])
    _, pre = build_model(cfg.model, cfg.preprocess, tuple(cfg.data.age_cuts))
    target = feature_cache_path(cfg, pre, load_train(data).images["file"])
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(cache.resolve())


def maskcls(*args, threads: int | None = None) -> subprocess.Popen:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    return subprocess.Popen([sys.executable, "-m", "maskcls", "-q", *map(str, args)], env=env)


def run_study(study_dir: Path, data: Path, trials: int, workers: int) -> float:
    started = time.time()
    threads = ["train.threads=1"] if workers > 1 else []
    procs = [maskcls("tune", "--config", CONFIG, "--space", SPACE, "--trials", trials, "--out", study_dir, "--study", "bench",
                     "--seed", seed, f"data.root={data}", *threads, threads=1 if workers > 1 else None) for seed in range(workers)]
    for proc in procs:
        if proc.wait() != 0:
            sys.exit(f"bench: a tune worker failed (exit {proc.returncode})")
    return time.time() - started


def best_run(study_dir: Path) -> tuple[Path, float, dict]:
    import optuna

    study = optuna.load_study(study_name="bench", storage=f"sqlite:///{study_dir / 'study.db'}")
    best = study.best_trial
    return Path(best.user_attrs["run"]), best.value, best.params


def eval_features(out: Path, data: Path, files) -> torch.Tensor:
    path = out / "eval_features.npy"
    if not path.exists():
        cfg = load_config(CONFIG, [f"data.root={data}"])
        model, pre = build_model(cfg.model, cfg.preprocess, tuple(cfg.data.age_cuts))
        np.save(path, embed_files(model, pre, files, 128, cfg.data.num_workers, cfg.train.amp, torch.device("cpu"), False))
    return torch.from_numpy(np.load(path))


def eval_scores(run_dir: Path, features: torch.Tensor, truth, groups) -> dict:
    model, _, _ = load_model(run_dir / "best.pt", torch.device("cpu"))
    with torch.no_grad():
        probs = class_probs(model.forward_head(features), model.layout).numpy()
    return {"photo by photo": score(truth, probs.argmax(1))["macro_f1"],
            "persons pooled": score(truth, combine([probs], Vote(), groups)[0])["macro_f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="stand-in root (default data/standin or $MASKCLS_STANDIN)")
    parser.add_argument("--out", required=True, help="bench folder; rerun to resume the studies")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--feature-cache", type=Path, help="train features of cpu-fast on this data (.npy)")
    args = parser.parse_args()
    data, out = standin(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    for name in ("untuned", "one", "two"):
        seed_cache(args.feature_cache, data, out / name / ("trials" if name != "untuned" else ""))
    untuned_dir = out / "untuned" / "run"
    if not (untuned_dir / "best.pt").exists():
        subprocess.run([sys.executable, "-m", "maskcls", "-q", "train", "--config", CONFIG, f"data.root={data}",
                        f"out={out / 'untuned'}", "name=run"], check=True)
    untuned_holdout = checkpoint.load(untuned_dir / "best.pt")["val"]["macro_f1"]

    walls = {workers: run_study(out / name, data, args.trials, workers) for workers, name in ((1, "one"), (2, "two"))}

    eval_set = load_eval(data / "eval")
    files, image_ids = eval_set.files, eval_set.info["ImageID"]
    truth = eval_column(data, "truth.csv", "ans", image_ids)
    features = eval_features(out, data, files)
    groups = person_groups(files)
    rows = {"untuned cpu-fast": (untuned_holdout, eval_scores(untuned_dir, features, truth, groups), {})}
    for name in ("one", "two"):
        run_dir, holdout, params = best_run(out / name)
        rows[f"best of study '{name}'"] = (holdout, eval_scores(run_dir, features, truth, groups), params)

    print(f"\n== bench/tune.py: {args.trials} trials of {CONFIG} over configs/space/{SPACE}.yaml on {data}")
    print(f"wall, 1 worker: {walls[1] / 60:.1f} min; 2 workers (1 thread each, one SQLite study): {walls[2] / 60:.1f} min "
          f"(x{walls[1] / walls[2]:.2f} faster)")
    reference = rows["untuned cpu-fast"]
    for name, (holdout, public, params) in rows.items():
        print(f"[{name:22s}] holdout macro-F1 {holdout:.4f} (x{holdout / reference[0]:.3f})  public eval, no TTA: "
              f"photo by photo {public['photo by photo']:.4f} (x{public['photo by photo'] / reference[1]['photo by photo']:.3f}), "
              f"persons pooled {public['persons pooled']:.4f} (x{public['persons pooled'] / reference[1]['persons pooled']:.3f})")
        if params:
            print("    " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()))
    (out / "bench.json").write_text(json.dumps({"trials": args.trials, "wall_s": walls, "rows": {
        k: {"holdout": h, "public": p, "params": q} for k, (h, p, q) in rows.items()}}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
