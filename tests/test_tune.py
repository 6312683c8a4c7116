"""`maskcls tune`: spaces checked before any trial, a study that resumes without repeating a trial,
failed and killed trials recorded with their reason, the report and best config, and two workers
sharing one study on a real PostgreSQL server."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from conftest import cli

from maskcls.config import load_config
from maskcls.errors import MaskclsError
from maskcls.infer.recipe import recipe_from_dict
from maskcls.tune import tune, write_report

# A probe on a tiny random-init backbone: its features are embedded once per study, then each
# trial trains only the head, in about a second.
PROBE = ["model.backbone=resnet10t", "model.weights=none", "model.face_features=false", "preprocess.size=48",
         "train.probe_epochs=6", "train.batch_size=16", "data.num_workers=0", "tracking=[]",
         "preprocess.crop=none"]
SPACE = {"params": {"train.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                    "model.head_hidden": {"type": "categorical", "choices": [0, 32]}}}


def write_space(path, space) -> str:
    path.write_text(yaml.safe_dump(space))
    return str(path)


def trials_of(study_dir, name="s"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'study.db'}").trials


@pytest.mark.parametrize("params, message", [
    ({"train.lrr": {"type": "float", "low": 0.1, "high": 1}}, "train.lrr: the config has no such key; did you mean train.lr"),
    ({"train.lr": {"type": "float", "low": 0.1, "high": 0.01}}, "low .* must be below high"),
    ({"train.loss": {"type": "categorical", "choices": []}}, "choices must be a non-empty list"),
    ({"train.sampler": {"type": "float", "low": 0.1, "high": 1.0}}, "train.sampler: 0.1 is not a valid value"),
    ({"train.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "a log range needs low > 0"),
    ({"train.lr": {"type": "uniform", "low": 0, "high": 1}}, "type: float | int | categorical"),
])
def test_a_malformed_space_is_one_line_before_any_trial(demo_root, tmp_path, params, message):
    space = write_space(tmp_path / "space.yaml", {"params": params})
    with pytest.raises(MaskclsError, match=message):
        tune("cpu-fast", space, 2, out=tmp_path / "study", overrides=[f"data.root={demo_root}", *PROBE])
    assert not (tmp_path / "study").exists()


def test_a_study_resumes_extends_and_reports(demo_root, tmp_path):
    space, study_dir = write_space(tmp_path / "space.yaml", SPACE), tmp_path / "study"
    args = dict(out=study_dir, study="s", overrides=[f"data.root={demo_root}", *PROBE], progress=False)
    first = tune("cpu-fast", space, 3, **args)
    assert first["ran"] == 3 and first["complete"] == 3 and 0 <= first["best_macro_f1"] <= 1
    again = tune("cpu-fast", space, 3, **args)
    assert again["ran"] == 0 and again["complete"] == 3  # the same command: nothing is repeated
    more = tune("cpu-fast", space, 4, **args)
    assert more["ran"] == 1
    trials = trials_of(study_dir)
    assert [t.number for t in trials] == [0, 1, 2, 3] and all(t.state.name == "COMPLETE" for t in trials)
    assert all(len(t.intermediate_values) == 6 for t in trials)  # every epoch reported
    assert sorted(p.name for p in (study_dir / "trials").iterdir() if not p.name.startswith(".")) == [f"trial-000{i}" for i in range(4)]

    other = write_space(tmp_path / "other.yaml", {"params": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}})
    with pytest.raises(MaskclsError, match="'s': is in use with a different search space"):
        tune("cpu-fast", other, 4, **args)

    result = write_report(study_dir)
    report = study_dir / "report"
    assert {"report.html", "history.png", "parallel.png", "slice.png", "best.yaml", "best-recipe.yaml"} <= {p.name for p in report.iterdir()}
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    assert result["best_trial"] == best.number
    cfg = load_config(report / "best.yaml", [f"data.root={demo_root}"])
    assert cfg.train.lr == best.params["train.lr"] and cfg.model.head_hidden == best.params["model.head_hidden"]
    recipe = recipe_from_dict(yaml.safe_load((report / "best-recipe.yaml").read_text()))
    assert recipe.tta == "hflip" and any(o.startswith("train.lr=") for o in recipe.members[0].overrides)
    with pytest.raises(MaskclsError, match="--force"):
        write_report(study_dir)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(demo_root, tmp_path):
    # 100000 photos per batch is a valid setting, but more than this data set holds: that trial fails.
    space = write_space(tmp_path / "space.yaml", {"params": {"train.batch_size": {"type": "categorical", "choices": [16, 100000]}}})
    args = dict(out=tmp_path / "study", study="s", overrides=[f"data.root={demo_root}", *PROBE], progress=False)
    result = tune("cpu-fast", space, 2, **args)
    trials = trials_of(tmp_path / "study")
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert result["complete"] == 2 and failed
    assert all("larger than the" in t.user_attrs["fail_reason"] for t in failed)

    always = write_space(tmp_path / "always.yaml", {"params": {"train.batch_size": {"type": "categorical", "choices": [100000]}}})
    with pytest.raises(MaskclsError, match="the last 5 trials all failed .*larger than the"):
        tune("cpu-fast", always, 2, **{**args, "out": tmp_path / "always"})


@pytest.mark.parametrize("url", ["postgresql://user:s3cret@127.0.0.1:1/nodb", "nosuchdb://somewhere/x"])
def test_an_unreachable_database_is_one_line(demo_root, tmp_path, url):
    space = write_space(tmp_path / "space.yaml", SPACE)
    with pytest.raises(MaskclsError, match="cannot open the study storage") as caught:
        tune("cpu-fast", space, 2, storage=url, out=tmp_path / "study", overrides=[f"data.root={demo_root}", *PROBE])
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


def test_kill_9_mid_trial_loses_only_that_trial(demo_root, tmp_path):
    space, study_dir = write_space(tmp_path / "space.yaml", SPACE), tmp_path / "study"
    args = ["tune", "--config", "cpu-fast", "--space", space, "--trials", "2", "--out", study_dir, "--study", "s",
            f"data.root={demo_root}", *PROBE, "train.probe_epochs=30"]
    process = subprocess.Popen([sys.executable, "-m", "maskcls", "-q", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = study_dir / "trials" / "trial-0000" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not metrics.exists():
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "trial 0: marked failed" in resumed.stdout
    trials = trials_of(study_dir)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "ended without finishing" in trials[0].user_attrs["fail_reason"]


@pytest.fixture
def postgres_url():
    url = os.environ.get("MASKCLS_TEST_POSTGRES")
    if not url:
        pytest.skip("!!! no PostgreSQL server: run the suite through `make test` (tools/with-postgres.sh starts one) "
                    "or set MASKCLS_TEST_POSTGRES=postgresql://USER@HOST:PORT/DB")
    return url


def test_two_workers_share_one_study_on_postgresql(demo_root, tmp_path, postgres_url):
    space = write_space(tmp_path / "space.yaml", SPACE)
    study = f"shared-{os.getpid()}-{time.time_ns()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "maskcls", "-q", "tune", "--config", "cpu-fast", "--space", space,
                                 "--trials", "4", "--storage", postgres_url, "--study", study, "--seed", str(seed),
                                 "--out", str(tmp_path / f"worker{seed}"), f"data.root={demo_root}", *PROBE, "train.probe_epochs=15"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for seed in (0, 1)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr.decode()
    trials = optuna.load_study(study_name=study, storage=postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)).trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert sum(t.state.name == "COMPLETE" for t in trials) >= 4
    ran_by = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials}
    assert ran_by == {str(w.pid) for w in workers}  # both workers ran trials
