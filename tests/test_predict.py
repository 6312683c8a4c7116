"""Prediction, submission checking, TTA, cross-validation with OOF, and ensembles."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import cli_here, tiny_config
from sklearn.metrics import adjusted_rand_score

from maskcls.checkpoint import load_model
from maskcls.data.dataset import PhotoDataset
from maskcls.data.layout import load_train
from maskcls.errors import MaskclsError
from maskcls.fit import fit_vote
from maskcls.infer import Vote, check_submission, predict, recipe_of_runs
from maskcls.infer.runtime import tta_views
from maskcls.train import run_cv, train


@pytest.fixture(scope="module")
def trained_run(demo_root, tmp_path_factory):
    """A run trained on non-square input (height 48, width 40)."""
    out = tmp_path_factory.mktemp("runs")
    return train(tiny_config(demo_root, out, "name=tiny", "preprocess.size=[48,40]"), progress=False)["run_dir"]


@pytest.fixture(scope="module")
def cv_dir(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv")
    return run_cv(tiny_config(demo_root, out, "name=cv", "train.epochs=1"), folds=3, progress=False)["cv_dir"]


def test_submission_keeps_info_rows_and_order(trained_run, demo_root, tmp_path):
    result = predict(recipe_of_runs([trained_run], tta="hflip"), demo_root / "eval", tmp_path / "sub.csv", progress=False)
    info = pd.read_csv(demo_root / "eval" / "info.csv", dtype=str)
    submission = pd.read_csv(tmp_path / "sub.csv", dtype={"ImageID": str})
    assert submission["ImageID"].tolist() == info["ImageID"].tolist()
    assert submission["ans"].between(0, 17).all()
    probs = np.load(result["probs"])
    assert probs.shape == (len(info), 18) and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert (probs.argmax(1) == submission["ans"].to_numpy()).all()
    meta = json.loads((tmp_path / "sub.meta.json").read_text())
    assert meta["recipe"]["tta"] == "hflip" and meta["preprocess"][0]["height"] == 48 and meta["preprocess"][0]["width"] == 40


def test_preprocessing_comes_from_the_run_and_keeps_height_first(trained_run, demo_root):
    model, pre, checkpoint = load_model(f"{trained_run}/best.pt")
    assert (pre.height, pre.width) == (48, 40)
    files = load_train(demo_root).images["file"][:2]
    eval_view = PhotoDataset(files, None, pre)[0][0]
    train_view = PhotoDataset(files, [0, 0], pre, augment="medium")[0][0]
    assert eval_view.shape == train_view.shape == (3, 48, 40)


def test_tta_views():
    x = torch.arange(2 * 3 * 8 * 6, dtype=torch.float32).reshape(2, 3, 8, 6)
    assert len(tta_views(x, "none")) == 1
    flipped = tta_views(x, "hflip")
    assert len(flipped) == 2 and torch.equal(flipped[1][..., 0], x[..., -1])
    scaled = tta_views(x, "multiscale")
    assert len(scaled) == 4 and all(v.shape == x.shape for v in scaled)
    with pytest.raises(MaskclsError, match="tta='rotate'"):
        tta_views(x, "rotate")


def test_person_grouped_prediction_shares_gender_and_age(trained_run, demo_root, tmp_path):
    predict(recipe_of_runs([trained_run], by_person=True), demo_root / "eval", tmp_path / "sub.csv", progress=False)
    groups = np.load(tmp_path / "sub.groups.npy")
    labels = pd.read_csv(tmp_path / "sub.csv")["ans"].to_numpy()
    assert len(np.unique(groups)) == round(len(labels) / 7)
    persons = pd.read_csv(demo_root / "eval" / "meta.csv", dtype=str)["id"].to_numpy()  # same order as info.csv
    assert adjusted_rand_score(persons, groups) > 0.6  # chance is about 0
    # A recipe of bare runs has no stored projection: one is fitted on the run's own train persons.
    assert json.loads((tmp_path / "sub.meta.json").read_text())["persons"]["projection"] == "fitted now"
    for group in np.unique(groups):
        assert len(set(labels[groups == group] % 6)) == 1  # one gender x age per person


def test_without_its_train_persons_a_run_groups_on_raw_thumbnails(trained_run, demo_root, tmp_path, caplog):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo_root / "eval", data / "eval")  # the eval set alone: the run's train persons are elsewhere
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    checkpoint = torch.load(run / "best.pt", weights_only=False)
    checkpoint["config"]["data"]["root"] = str(tmp_path / "gone")
    torch.save(checkpoint, run / "best.pt")
    predict(recipe_of_runs([run], by_person=True), data / "eval", tmp_path / "sub.csv", progress=False)
    meta = json.loads((tmp_path / "sub.meta.json").read_text())
    assert meta["persons"]["projection"] is None and "grouped on raw thumbnails" in caplog.text
    assert "gone" in caplog.text  # the warning says which train folder was missing


def test_a_grouping_that_found_no_persons_is_not_pooled(trained_run, demo_root, tmp_path, monkeypatch, caplog):
    import maskcls.infer.prediction as predicting

    # Photos dealt into groups at random, and the check made to run on this small model's unsure masks.
    monkeypatch.setattr(predicting, "person_groups", lambda files, faces=None, projection=None: np.random.default_rng(0).permutation(len(files)) // 7)
    monkeypatch.setattr(predicting, "MIN_MASK_CONFIDENCE", 0.0)
    out = tmp_path / "sub.csv"
    np.save(tmp_path / "sub.groups.npy", np.zeros(3))  # an earlier prediction's, replaced with force
    result = predict(recipe_of_runs([trained_run], by_person=True), demo_root / "eval", out, progress=False, force=True)
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["persons"]["asked"] and not meta["persons"]["grouped"] and meta["persons"]["distance"] > 0.8
    assert result["groups"] is None and not (tmp_path / "sub.groups.npy").exists()
    assert "each photo is predicted on its own" in caplog.text
    alone = predict(recipe_of_runs([trained_run]), demo_root / "eval", tmp_path / "alone.csv", progress=False)
    assert np.array_equal(pd.read_csv(out)["ans"], pd.read_csv(alone["submission"])["ans"])


def _write(path, frame):
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.rename(columns={"ans": "label"}), r"columns are ImageID,label; the header must be ImageID,ans"),
    (lambda s: s.iloc[:-1], r"rows, but .*info.csv has"),
    (lambda s: s.assign(ImageID=s["ImageID"].where(s.index != 0, "other.jpg")), r"ImageIDs differ from .*\(1 missing"),
    (lambda s: s.iloc[::-1], r"rows are not in info.csv's order \(first at line 2\)"),
    (lambda s: s.assign(ans=s["ans"].astype(object).where(s.index != 3, None)), r"line 5: ans is empty \(NaN\)"),
    (lambda s: s.assign(ans=s["ans"].astype(str).where(s.index != 2, "3.5")), r"line 4: ans '3.5' is not an integer class 0-17"),
    (lambda s: s.assign(ans=s["ans"].where(s.index != 1, 18)), r"line 3: ans '18' is not an integer class 0-17"),
])
def test_check_submission_rejects(demo_root, tmp_path, edit, message):
    info = demo_root / "eval" / "info.csv"
    good = pd.read_csv(info, dtype={"ImageID": str}).assign(ans=5)
    assert "OK" in check_submission(_write(tmp_path / "good.csv", good), info)
    with pytest.raises(MaskclsError, match=message):
        check_submission(_write(tmp_path / "bad.csv", edit(good)), info)


def test_check_submission_cli(demo_root, tmp_path):
    info = demo_root / "eval" / "info.csv"
    bad = _write(tmp_path / "bad.csv", pd.read_csv(info, dtype={"ImageID": str}).assign(ans=40))
    result = cli_here("check-submission", bad, "--info", info)
    assert result.returncode == 2 and "is not an integer class 0-17" in result.stderr and "Traceback" not in result.stderr


def test_oof_covers_every_training_photo_exactly_once(cv_dir, demo_root):
    images = pd.read_csv(f"{cv_dir}/oof_images.csv", dtype={"id": str})
    probs = np.load(f"{cv_dir}/oof_probs.npy")
    every = load_train(demo_root).images
    assert len(images) == len(every) == len(probs)
    assert sorted(images["file"]) == sorted(every["file"])
    for fold in range(3):  # a person's photos are held out together, in one fold
        assert not set(images.loc[images["fold"] == fold, "path"]) & set(images.loc[images["fold"] != fold, "path"])
    summary = json.loads(open(f"{cv_dir}/summary.json").read())
    assert len(summary["fold_macro_f1"]) == 3
    assert summary["macro_f1_mean"] == pytest.approx(np.mean(summary["fold_macro_f1"]))
    assert summary["macro_f1_std"] == pytest.approx(np.std(summary["fold_macro_f1"]))


def test_cv_resumes_at_fold_level(cv_dir):
    import shutil
    from pathlib import Path

    cv_dir = Path(cv_dir)
    kept = (cv_dir / "fold0" / "best.pt").stat().st_mtime_ns
    shutil.rmtree(cv_dir / "fold2")  # as if interrupted before fold 2's first epoch ended
    (cv_dir / "fold1" / "done.json").unlink()  # fold 1 finished training but was not marked done
    result = run_cv(resume=cv_dir, progress=False)
    assert (cv_dir / "fold0" / "best.pt").stat().st_mtime_ns == kept
    assert (cv_dir / "fold2" / "done.json").is_file() and result["n_images"] == len(np.load(cv_dir / "oof_probs.npy"))


def test_ensemble_fits_on_oof_and_predict_applies_it(cv_dir, trained_run, demo_root, tmp_path):
    recipe = fit_vote([cv_dir, cv_dir], fit_weights=True, tune_offsets=True)
    assert recipe.vote.weights is not None and sum(recipe.vote.weights) == pytest.approx(1.0)
    assert len(recipe.vote.offsets) == 18
    assert {"argmax_macro_f1", "offsets_crossfit_macro_f1", "offsets_gain"} <= set(recipe.notes["oof"])
    cli = [sys.executable, "-m", "maskcls", "-q", "ensemble", str(cv_dir), str(cv_dir), "--out", str(tmp_path / "ens"), "--fit-weights",
           "--tune-offsets", "--tta", "hflip"]
    made = subprocess.run(cli, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    again = cli_here(*cli[4:])  # an existing recipe is not replaced without --force
    assert again.returncode == 2 and again.stderr.strip().endswith("recipe.yaml: exists; pass --force to replace it, or choose another --out")
    result = cli_here("predict", tmp_path / "ens", "--data", demo_root / "eval", "--out", tmp_path / "ens_sub.csv")
    assert result.returncode == 0, result.stderr
    assert "OK" in check_submission(tmp_path / "ens_sub.csv", demo_root / "eval" / "info.csv")
    meta = json.loads((tmp_path / "ens_sub.meta.json").read_text())
    assert meta["recipe"]["vote"]["offsets"] == pytest.approx(recipe.vote.offsets) and meta["recipe"]["tta"] == "hflip"
    with pytest.raises(MaskclsError, match="held-out photos differ"):
        fit_vote([cv_dir, trained_run], fit_weights=True)


def test_predict_cli_mask_weights(trained_run, cv_dir, demo_root, tmp_path):
    out = tmp_path / "mask.csv"
    subprocess.run([sys.executable, "-m", "maskcls", "-q", "predict", str(trained_run), str(cv_dir), "--data", str(demo_root / "eval"),
                    "--out", str(out), "--mask-weights", "1", "0"], check=True, capture_output=True)
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["recipe"]["vote"]["mask_weights"] == [1.0, 0.0]
    assert "OK" in check_submission(out, demo_root / "eval" / "info.csv")


def test_hard_vote_members(trained_run, cv_dir, demo_root, tmp_path):
    result = predict(recipe_of_runs([trained_run, cv_dir], vote=Vote(method="hard")), demo_root / "eval", tmp_path / "hard.csv",
                     progress=False)
    assert "OK" in check_submission(result["submission"], demo_root / "eval" / "info.csv")
    with pytest.raises(MaskclsError, match="no best.pt here or in fold"):
        predict(recipe_of_runs([tmp_path]), demo_root / "eval", tmp_path / "x.csv", progress=False)
