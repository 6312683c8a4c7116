"""Recipes end to end: `fit` trains a recipe's members into one folder; `fit_vote` fits a vote
(weights, offsets) on out-of-fold probabilities and writes it as a recipe.

    FIT_DIR/fit.json            the recipe as given, the data and overrides it was fitted with
    FIT_DIR/members/<name>/     each member's run folder (or CV folder), with done.json when finished
    FIT_DIR/persons.npz         for a recipe that pools persons, the person projection fitted on the
                                train persons (infer/persons.py), which prediction groups eval photos with
    FIT_DIR/recipe.yaml         the trained recipe (every member's `run`), written when all are done

`maskcls predict FIT_DIR --data EVAL` applies the whole recipe. A fit is resumable: rerun the same
command and finished members are skipped, an interrupted one resumes from its last epoch.
Under torchrun the processes train each member together (train/distributed.py) and the main
process alone writes the fit folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .checkpoint import checkpoints_of, load
from .config import Config, load_config
from .errors import MaskclsError
from .fileio import atomic_write_text
from .infer.offsets import cross_fit_offsets
from .infer.persons import PROJECTION_FILE, embedding_kind, load_person_projection, train_person_projection
from .infer.recipe import Member, Recipe, Vote, load_recipe, recipe_of_runs, save_recipe
from .infer.runtime import pick_device
from .infer.vote import fit_soft_weights, hard_vote, soft_vote
from .metrics import macro_f1
from .train import run_cv, train
from .train.distributed import on_main, process_group

FIT_SPEC = "fit.json"
DONE = "done.json"


def member_config(member: Member, data: Path, fit_dir: Path, overrides) -> Config:
    """The member's config on this data, with its own overrides, then the fit's."""
    return load_config(member.config, [f"data.root={data}", f"out={fit_dir / 'members'}", f"name={member.name}",
                                       *member.overrides, *overrides])


def open_fit(fit_dir: Path, recipe: Recipe, data: Path, overrides: list[str]) -> None:
    """Start a fit folder, or check that an existing one holds this same fit (then it resumes)."""
    spec = {"recipe": recipe.to_dict(), "data": str(data), "overrides": list(overrides)}
    spec_file = fit_dir / FIT_SPEC
    if fit_dir.exists() and not fit_dir.is_dir():
        raise MaskclsError(f"{fit_dir}: is a file; --out takes a folder")
    started = any(fit_dir.glob("members/*/last.pt")) or any(fit_dir.glob("members/*/*/last.pt"))
    if spec_file.is_file() and not started:
        spec_file.unlink()  # nothing was trained under the old spec: the corrected command takes the folder over
    if spec_file.is_file():
        existing = json.loads(spec_file.read_text())
        for key in ("recipe", "data", "overrides"):
            if existing.get(key) != spec[key]:
                raise MaskclsError(f"{fit_dir}: holds a fit with a different {key} (recipe {existing.get('recipe', {}).get('name')!r} on "
                                   f"{existing.get('data')}); choose another --out, or rerun that fit's own command to resume it")
        return
    if fit_dir.exists() and any(p.name != "members" for p in fit_dir.iterdir()):
        raise MaskclsError(f"{fit_dir}: exists and is not a fit folder; choose another --out")
    fit_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec_file, json.dumps(spec, indent=2) + "\n", what="fit spec")


def train_member(member: Member, cfg: Config, run_dir: Path, progress: bool) -> dict:
    """Train (or resume) one member into run_dir and mark it done."""
    resume = run_dir if on_main(has_started, member, run_dir) else None
    if member.folds:
        result = run_cv(None if resume else cfg, member.folds, resume, progress=progress)
    else:
        result = train(None if resume else cfg, resume=resume, progress=progress)
    on_main(atomic_write_text, run_dir / DONE, json.dumps(result, indent=2, default=str) + "\n", what="member summary")
    return result


def has_started(member: Member, run_dir: Path) -> bool:
    """Whether run_dir holds a start to resume (a CV's cv.yaml, a run's last.pt); a folder
    made but never configured, or never through an epoch, is removed: nothing to keep."""
    started = (run_dir / ("cv.yaml" if member.folds else "last.pt")).is_file()
    if not started and run_dir.exists():
        shutil.rmtree(run_dir)
    return started


def fit(recipe, data, out=None, overrides: list[str] | tuple = (), progress: bool = True) -> dict:
    """Train every member of `recipe` (a Recipe, a file or a shipped name) on the dataset `data`."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    data = Path(data).resolve()
    if not ((data / "train" / "train.csv").is_file() or (data / "train.csv").is_file()):
        raise MaskclsError(f"{data}: no train/train.csv here; --data takes the dataset folder holding train/")
    fit_dir = Path(out or Path("runs") / recipe.name)
    # Every member's config is built, and so checked, before the first one trains.
    configs = {m.name: member_config(m, data, fit_dir, overrides) for m in recipe.members if m.config}
    # Under torchrun the same processes train every member, on the first member's device.
    with process_group(pick_device(next((c.device for c in configs.values()), "auto"))):
        on_main(open_fit, fit_dir, recipe, data, list(overrides))
        todo = [m for m in recipe.members if m.config and not (fit_dir / "members" / m.name / DONE).is_file()]
        if not todo and progress:
            print(f"fit {fit_dir}: every member of recipe {recipe.name!r} is trained already; nothing to train", flush=True)
        for number, member in enumerate(todo, 1):
            if progress:
                print(f"== member {member.name} ({number}/{len(todo)} to train): {member.config} {' '.join(member.overrides)}", flush=True)
            train_member(member, configs[member.name], fit_dir / "members" / member.name, progress)
        # Trained members are found beside the recipe; members given as runs keep their absolute path.
        trained = [Member(name=m.name, run=f"members/{m.name}" if m.config else str(recipe.run_path(m).resolve())) for m in recipe.members]
        fitted = recipe.replace(members=trained, home=fit_dir.resolve())
        if fitted.by_person:
            on_main(fit_persons, fitted, data, fit_dir, progress)
        on_main(save_recipe, fitted, fit_dir / "recipe.yaml")
    return {"fit_dir": str(fit_dir), "trained": [m.name for m in todo], "recipe": fitted,
            "members": {m.name: json.loads((fit_dir / "members" / m.name / DONE).read_text()) for m in recipe.members if m.config}}


def fit_persons(recipe: Recipe, data: Path, fit_dir: Path, progress: bool) -> None:
    """Write the person projection for the trained recipe, fitted on the train persons of `data`;
    one written before is kept, as a finished member is, while it maps the embeddings needed."""
    path = fit_dir / PROJECTION_FILE
    # The members' own record of their crop: eval photos are grouped by the faces they crop.
    preprocessing = [load(checkpoints_of(run)[0])["preprocess"] for run in recipe.trained_runs()]
    kept = load_person_projection(fit_dir)
    if kept is not None and kept.fits(embedding_kind(preprocessing)):
        return
    if progress:
        print(f"== persons: fitting the person projection on the train persons of {data}", flush=True)
    projection = train_person_projection(data, preprocessing)
    if projection is None:
        path.unlink(missing_ok=True)  # too few persons now: an earlier projection is not this fit's
    else:
        projection.save(path)


def member_oof(member) -> tuple[pd.DataFrame, np.ndarray]:
    """(images, probs) held out from training: a CV folder's OOF, or a run's validation split."""
    member = Path(member)
    for images_csv, probs_npy in (("oof_images.csv", "oof_probs.npy"), ("val_images.csv", "val_probs.npy")):
        if (member / images_csv).is_file() and (member / probs_npy).is_file():
            return pd.read_csv(member / images_csv, dtype={"id": str}), np.load(member / probs_npy)
    raise MaskclsError(f"{member}: no oof_probs.npy (CV folder) or val_probs.npy (run folder; none when trained on every person) to fit on; "
                       "drop --fit-weights/--tune-offsets or pass CV folders")


def aligned_oof(members) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The members' held-out probabilities on the same photos, in the same order."""
    tables = [member_oof(m) for m in members]
    reference = tables[0][0]
    order = reference["file"]
    probs = []
    for member, (images, member_probs) in zip(members, tables, strict=True):
        if set(images["file"]) != set(order):
            raise MaskclsError(f"{member}: its held-out photos differ from {members[0]}'s; fit on members trained on the same data and folds")
        position = pd.Series(np.arange(len(images)), index=images["file"])
        probs.append(member_probs[position.loc[order].to_numpy()])
    return reference, probs


def fit_vote(members, method: str = "soft", fit_weights: bool = False, tune_offsets: bool = False, tta: str = "none",
             by_person: bool = False, name: str = "ensemble") -> Recipe:
    """A recipe over trained runs or CV folders, its weights and offsets fitted on their OOF."""
    for member in members:
        checkpoints_of(member)  # fails early, with a clear line, on a folder with no model
    if method == "hard" and (fit_weights or tune_offsets):
        raise MaskclsError("--fit-weights and --tune-offsets apply to soft voting; use --method soft")
    vote, notes = Vote(method=method), {}
    if fit_weights or tune_offsets:
        images, probs = aligned_oof(members)
        labels = images["label"].to_numpy()
        notes = {"n_images": len(labels), "members_macro_f1": [macro_f1(labels, p.argmax(1)) for p in probs],
                 "equal_weights_macro_f1": macro_f1(labels, soft_vote(probs).argmax(1)),
                 "hard_vote_macro_f1": macro_f1(labels, hard_vote(probs))}
        weights = fit_soft_weights(probs, labels) if fit_weights and len(members) > 1 else None
        if weights is not None:
            vote = vote.replace(weights=weights.tolist())
            notes["fitted_weights_macro_f1"] = macro_f1(labels, soft_vote(probs, weights).argmax(1))
        if tune_offsets:
            tuning = cross_fit_offsets(soft_vote(probs, weights), labels, images["id"].astype(str).to_numpy())
            vote = vote.replace(offsets=tuning["offsets"].tolist())
            notes.update({"argmax_macro_f1": tuning["argmax_f1"], "offsets_crossfit_macro_f1": tuning["tuned_f1"],
                          "offsets_gain": tuning["gain"]})
    return recipe_of_runs(members, tta, vote, by_person, name).replace(notes={"oof": notes} if notes else {})
