"""Shared fixtures: a small synthetic dataset from the project's own generator, and a tiny,
fast training config (random-init resnet10t at 48 px) for engine tests."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on the machine's cores: one thread each, for them and for the
    # processes they start, as two threads each would make both wait on each other.
    os.environ["OMP_NUM_THREADS"] = "1"

from maskcls.config import load_config  # noqa: E402
from maskcls.data.demo import write_demo_dataset  # noqa: E402


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """Read-only demo dataset; copy it (see `demo_copy`) before changing anything."""
    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "data", persons=30, eval_persons=12, image_size=48, seed=3, scene="tight")


@pytest.fixture(scope="session", autouse=True)
def face_cache(tmp_path_factory):
    """One detection cache for the whole suite, never the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("face-cache")
    os.environ["MASKCLS_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def wide_root(tmp_path_factory):
    """Read-only wide demo scenes (the face somewhere in a 160x213 frame), with faces.csv."""
    return write_demo_dataset(tmp_path_factory.mktemp("wide") / "data", persons=12, eval_persons=6, image_size=160, seed=5)


@pytest.fixture(scope="session")
def cropped_run(wide_root, tmp_path_factory):
    """The demo recipe fitted on the wide scenes, shrunk to a tiny model: MTCNN face crops, hflip TTA."""
    from maskcls.fit import fit

    out = tmp_path_factory.mktemp("demo-fit") / "fit"
    fit("demo", wide_root, out, ["model.backbone=resnet10t", "model.weights=none", "preprocess.size=48", "train.epochs=1",
                                 "train.batch_size=16", "data.num_workers=0", "tracking=[]", "data.val_fraction=0.34",
                                 "preprocess.crop_margin=0.3"], progress=False)
    return out


@pytest.fixture
def demo_copy(demo_root, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(demo_root, target)
    return target


# The demo's tight faces fill under half their photo's width, which preprocess.crop=auto reads as
# scenes; tests of other things train on the whole photo, as they always have.
def tiny_config(root, out, *overrides):
    return load_config(None, [
        f"data.root={root}", f"out={out}", "model.backbone=resnet10t", "model.weights=none",
        "preprocess.size=48", "train.epochs=2", "train.batch_size=16", "data.num_workers=0",
        "train.lr=0.003", "tracking=[]", "preprocess.crop=none", *overrides,
    ])


@pytest.fixture
def tiny_cfg(demo_root, tmp_path):
    return lambda *overrides: tiny_config(demo_root, tmp_path / "runs", *overrides)


def kill_after_first_epoch(args, metrics_csv, timeout: float = 240) -> None:
    """Run `maskcls -q ARGS` and kill -9 it as soon as `metrics_csv` holds its first epoch's row."""
    process = subprocess.Popen([sys.executable, "-m", "maskcls", "-q", *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if metrics_csv.exists() and len(metrics_csv.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def cli(*args) -> subprocess.CompletedProcess:
    """`maskcls -q ARGS` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "maskcls", "-q", *map(str, args)], capture_output=True, text=True)


def cli_here(*args) -> subprocess.CompletedProcess:
    """`maskcls -q ARGS` through the CLI's own main() in this process: the same exit code and
    output as `cli`, without a new interpreter's imports, for tests that check what a command says."""
    from maskcls.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["-q", *map(str, args)])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return subprocess.CompletedProcess(args, code or 0, out.getvalue(), err.getvalue())
