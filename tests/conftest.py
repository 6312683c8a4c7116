"""Shared fixtures: a small synthetic dataset from the project's own generator, and a tiny,
fast training config (random-init resnet10t at 48 px) for engine tests."""
from __future__ import annotations

import shutil

import pytest

from maskcls.config import load_config
from maskcls.data.demo import write_demo_dataset


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """Read-only demo dataset; copy it (see `demo_copy`) before changing anything."""
    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "data", persons=30, eval_persons=12, image_size=48, seed=3)


@pytest.fixture
def demo_copy(demo_root, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(demo_root, target)
    return target


def tiny_config(root, out, *overrides):
    return load_config(None, [
        f"data.root={root}", f"out={out}", "model.backbone=resnet10t", "model.weights=none",
        "preprocess.size=48", "train.epochs=2", "train.batch_size=16", "data.num_workers=0",
        "train.lr=0.003", "tracking=[]", *overrides,
    ])


@pytest.fixture
def tiny_cfg(demo_root, tmp_path):
    return lambda *overrides: tiny_config(demo_root, tmp_path / "runs", *overrides)
