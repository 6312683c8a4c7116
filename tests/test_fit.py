"""Recipes: `maskcls fit` trains every member into one resumable folder, `maskcls predict FIT_DIR`
applies the whole recipe."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import cli, cli_here, kill_after_first_epoch

from maskcls.errors import MaskclsError
from maskcls.fit import fit, member_config
from maskcls.infer import check_submission, load_recipe, predict
from maskcls.infer.persons import PersonProjection
from maskcls.infer.recipe import SHIPPED_RECIPES

# The demo preset crops faces out of wide scenes; these tight 48 px photos are faces already.
TINY = ["model.backbone=resnet10t", "model.weights=none", "preprocess.size=48", "train.batch_size=16", "data.num_workers=0",
        "tracking=[]", "train.lr=0.003", "preprocess.crop=none"]


def write_recipe(path: Path, epochs=(1, 1), **extra) -> Path:
    recipe = {
        "name": "tiny", "version": 1,
        "members": [{"name": "a", "config": "demo", "overrides": [*TINY, f"train.epochs={epochs[0]}"]},
                    {"name": "b", "config": "demo", "overrides": [*TINY, f"train.epochs={epochs[1]}", "seed=1"]}],
        "tta": "hflip", "vote": {"method": "soft", "mask_weights": [0, 1]}, "by_person": True, **extra,
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def fitted(demo_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit")
    return fit(write_recipe(folder / "tiny.yaml"), demo_root, folder / "fit", progress=False)


def test_fit_trains_every_member_and_predict_applies_the_recipe(fitted, demo_root, tmp_path):
    fit_dir = Path(fitted["fit_dir"])
    assert fitted["trained"] == ["a", "b"]
    for name in ("a", "b"):
        assert (fit_dir / "members" / name / "best.pt").is_file() and (fit_dir / "members" / name / "done.json").is_file()
    recipe = load_recipe(fit_dir)  # the folder's recipe.yaml, members pointing at their runs
    assert [m.run for m in recipe.members] == ["members/a", "members/b"]
    assert recipe.vote.mask_weights == [0.0, 1.0] and recipe.tta == "hflip" and recipe.by_person
    result = predict(recipe, demo_root / "eval", tmp_path / "sub.csv", progress=False)
    assert "OK" in check_submission(result["submission"], demo_root / "eval" / "info.csv")
    meta = json.loads(Path(result["meta"]).read_text())
    assert meta["recipe"]["vote"]["mask_weights"] == [0.0, 1.0] and len(meta["preprocess"]) == 2
    assert (tmp_path / "sub.groups.npy").is_file()  # persons were pooled, as the recipe asks
    # ... on the person projection the fit learnt from the train persons, for these tight photos' tops
    assert meta["persons"]["projection"] == "stored" and PersonProjection.load(fit_dir / "persons.npz").fits("photo-top")
    assert len(result["members_probs"]) == 2


def test_rerun_on_a_finished_fit_trains_nothing_and_says_so(fitted, demo_root):
    fit_dir = Path(fitted["fit_dir"])
    stamps = {p: p.stat().st_mtime_ns for p in [*fit_dir.glob("members/*/best.pt"), fit_dir / "persons.npz"]}
    result = cli("fit", fit_dir.parent / "tiny.yaml", "--data", demo_root, "--out", fit_dir)
    assert result.returncode == 0, result.stderr
    assert "members trained now: none (all were done)" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_person_projection_made_otherwise_is_fitted_again(fitted, demo_root, tmp_path):
    import shutil

    fit_dir = tmp_path / "fit"
    shutil.copytree(fitted["fit_dir"], fit_dir)
    current = PersonProjection.load(fit_dir / "persons.npz")
    PersonProjection("photo-top 0.5 16x16", current.mean, current.directions, current.persons).save(fit_dir / "persons.npz")
    result = cli("fit", Path(fitted["fit_dir"]).parent / "tiny.yaml", "--data", demo_root, "--out", fit_dir)
    assert result.returncode == 0, result.stderr
    refitted = PersonProjection.load(fit_dir / "persons.npz")
    assert refitted.fits("photo-top") and np.allclose(refitted.directions, current.directions)


def test_predict_flags_override_the_recipe(fitted, demo_root, tmp_path):
    out = tmp_path / "photo.csv"
    result = cli("predict", fitted["fit_dir"], "--data", demo_root / "eval", "--out", out, "--no-by-person", "--tta", "none")
    assert result.returncode == 0, result.stderr
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["recipe"]["by_person"] is False and meta["recipe"]["tta"] == "none"
    assert not out.with_suffix(".groups.npy").exists()


def test_a_killed_fit_resumes_where_it_stopped(demo_root, tmp_path):
    recipe, fit_dir = write_recipe(tmp_path / "tiny.yaml", epochs=(1, 3)), tmp_path / "fit"
    metrics = fit_dir / "members" / "b" / "metrics.csv"
    kill_after_first_epoch(["fit", recipe, "--data", demo_root, "--out", fit_dir], metrics)
    assert (fit_dir / "members" / "a" / "done.json").is_file() and not (fit_dir / "members" / "b" / "done.json").exists()
    assert not (fit_dir / "recipe.yaml").exists()
    unfinished = cli("predict", fit_dir, "--data", demo_root / "eval", "--out", tmp_path / "early.csv")
    assert unfinished.returncode == 2 and "this fit has not finished" in unfinished.stderr
    kept = (fit_dir / "members" / "a" / "best.pt").stat().st_mtime_ns
    result = cli("fit", recipe, "--data", demo_root, "--out", fit_dir)
    assert result.returncode == 0, result.stderr
    assert "members trained now: b;" in result.stdout
    assert (fit_dir / "members" / "a" / "best.pt").stat().st_mtime_ns == kept
    rows = metrics.read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [0, 1, 2]


def test_a_fit_folder_holds_one_fit(fitted, demo_root, tmp_path):
    other = write_recipe(tmp_path / "other.yaml", epochs=(2, 1))
    with pytest.raises(MaskclsError, match=r"holds a fit with a different recipe .*choose another --out"):
        fit(other, demo_root, fitted["fit_dir"], progress=False)
    with pytest.raises(MaskclsError, match=r"holds a fit with a different overrides"):
        fit(Path(fitted["fit_dir"]).parent / "tiny.yaml", demo_root, fitted["fit_dir"], ["seed=3"], progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(MaskclsError, match=r"busy: exists and is not a fit folder"):
        fit(other, demo_root, tmp_path / "busy", progress=False)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(colour="red"), r"unknown recipe key 'colour'"),
    (lambda r: r.update(members=[]), r"no members"),
    (lambda r: r["members"][0].update(run="somewhere"), r"member 'a': give exactly one of config: \(to train\) or run:"),
    (lambda r: r["members"][1].update(name="a"), r"member name 'a' is used twice"),
    (lambda r: r["members"][0].update(nmae="x"), r"unknown config key 'members\[0\].nmae'"),
    (lambda r: r["vote"].update(mask_weights=[1]), r"vote.mask_weights=\[1.0\]: give 2 non-negative weights"),
    (lambda r: r["vote"].update(method="hard"), r"vote.method=hard takes no mask_weights"),
    (lambda r: r.update(tta="rotate"), r"tta='rotate': choose one of none, hflip, multiscale"),
    (lambda r: r.update(version=9), r"recipe version 9 is newer"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, edit, message):
    recipe = yaml.safe_load(write_recipe(tmp_path / "r.yaml").read_text())
    edit(recipe)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(MaskclsError, match=message) as error:
        load_recipe(tmp_path / "r.yaml")
    assert str(error.value).startswith(str(tmp_path / "r.yaml")) and "\n" not in str(error.value)


def test_a_bad_member_setting_fails_before_anything_trains(demo_root, tmp_path):
    recipe = yaml.safe_load(write_recipe(tmp_path / "r.yaml").read_text())
    recipe["members"][1]["overrides"].append("train.lrr=1")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = cli_here("fit", tmp_path / "r.yaml", "--data", demo_root, "--out", tmp_path / "fit")
    assert result.returncode == 2 and result.stderr.strip().startswith("maskcls: error: unknown config key 'train.lrr'")
    assert "Traceback" not in result.stderr and not (tmp_path / "fit").exists()
    missing = cli_here("fit", "no-such-recipe", "--data", demo_root)
    assert missing.returncode == 2 and "no-such-recipe: no such recipe" in missing.stderr and "cpu-best" in missing.stderr


def test_shipped_recipes_load_and_their_member_configs_are_valid(demo_root, tmp_path):
    names = sorted(p.stem for p in SHIPPED_RECIPES.glob("*.yaml"))
    assert {"demo", "cpu-fast", "cpu-best"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.version == 1
        for member in recipe.members:
            cfg = member_config(member, demo_root, tmp_path, [])
            assert cfg.name == member.name and Path(cfg.data.root) == demo_root
    best = load_recipe("cpu-best")
    assert best.by_person and best.vote.mask_weights == [0, 0, 0, 0, 1.0] and len(best.members) == 5
    assert np.isclose(sum(best.vote.mask_weights), 1.0)


def test_a_cross_validated_member_is_fitted_and_its_folds_averaged(demo_root, tmp_path):
    recipe = {"name": "cv", "members": [{"name": "cv", "config": "demo", "folds": 2, "overrides": [*TINY, "train.epochs=1"]}]}
    (tmp_path / "cv.yaml").write_text(yaml.safe_dump(recipe))
    fitted = fit(tmp_path / "cv.yaml", demo_root, tmp_path / "fit", progress=False)
    cv_dir = tmp_path / "fit" / "members" / "cv"
    assert (cv_dir / "oof_probs.npy").is_file() and sorted(p.name for p in cv_dir.glob("fold*")) == ["fold0", "fold1"]
    assert "oof" in fitted["members"]["cv"]
    result = predict(load_recipe(tmp_path / "fit"), demo_root / "eval", tmp_path / "sub.csv", progress=False)
    assert len(json.loads(Path(result["meta"]).read_text())["preprocess"]) == 2  # one per fold's checkpoint
