"""DistributedDataParallel: two gloo processes on the CPU, started by torchrun, against one
process with the same global batch and seed. Two processes follow one process's path; only the
order of floating-point sums differs."""
import csv
import json
import os
import shutil
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from timm.layers import BatchNormAct2d

from maskcls.checkpoint import load as load_checkpoint
from maskcls.config import load_config
from maskcls.errors import MaskclsError
from maskcls.train import distributed, train
from maskcls.train.distributed import CpuSyncBatchNorm, cpu_sync_batchnorm

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
# Exact arithmetic (fp32, no dropout, no mixing), a constant learning rate (so one epoch of a
# longer run is a run of its own) and SGD: AdamW's first steps divide each gradient by its own
# size, which turns rounding noise in near-zero gradients into full steps.
TINY = {"model": {"backbone": "resnet10t", "weights": "none", "drop_rate": 0.0}, "preprocess": {"size": 48, "crop": "none"},
        "train": {"epochs": 2, "batch_size": 32, "optimizer": "sgd", "lr": 0.01, "scheduler": "none", "amp": "none",
                  "mix": "none", "sampler": "balanced"},
        "data": {"num_workers": 0}, "tracking": []}
PROBE = ["model.mode=probe", "train.probe_epochs=4"]
# Two processes add up in another order than one and the rounding grows along the path, as it
# does between one process on 1 thread and on 2; BatchNorm per process, not synchronised, ends
# far outside this bound.
WEIGHT_TOLERANCE = 2e-3


def metrics_epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def max_weight_difference(a: Path, b: Path) -> float:
    first, second = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert first.keys() == second.keys()
    return max((first[k].double() - second[k].double()).abs().max().item() for k in first if first[k].is_floating_point())


def same_validation(run_dir: Path, reference: Path) -> None:
    """Every holdout photo scored once, as one process scores it, so macro-F1 is the same."""
    probs, expected = np.load(run_dir / "val_probs.npy"), np.load(reference / "val_probs.npy")
    assert len(probs) == len(pd.read_csv(run_dir / "val_images.csv")) == len(expected)
    np.testing.assert_allclose(probs, expected, atol=WEIGHT_TOLERANCE)
    assert load_checkpoint(run_dir / "best.pt")["val"] == pytest.approx(load_checkpoint(reference / "best.pt")["val"], abs=1e-9)


@pytest.fixture(scope="module")
def ddp(demo_root, tmp_path_factory):
    """The single-process references, then one torchrun job fitting three members: a fine-tune
    from scratch (one epoch), the single run resumed after its first epoch, and a probe."""
    folder = tmp_path_factory.mktemp("ddp")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    fit_dir = folder / "fit"
    recipe = {"name": "ddp", "version": 1, "members": [
        {"name": "fresh", "config": str(config), "overrides": ["train.epochs=1"]}, {"name": "resumed", "config": str(config)},
        {"name": "probe", "config": str(config), "overrides": PROBE}]}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))

    def after_first_epoch(epoch, row):
        if epoch == 0:
            shutil.copytree(folder / "single" / "run", folder / "single" / "epoch1")
            shutil.copytree(folder / "single" / "run", fit_dir / "members" / "resumed")  # the fit resumes it

    single = train(load_config(config, [f"data.root={demo_root}", f"out={folder / 'single'}", "name=run"]),
                   on_epoch_end=after_first_epoch, progress=False)
    train(load_config(config, [f"data.root={demo_root}", f"out={folder / 'single'}", "name=probe", *PROBE]), progress=False)
    job = subprocess.run([*TORCHRUN, "-m", "maskcls", "-q", "fit", folder / "recipe.yaml", "--data", demo_root, "--out", fit_dir],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert job.returncode == 0, job.stderr[-3000:]
    return {"single": folder / "single", "members": fit_dir / "members", "fit_dir": fit_dir, "stdout": job.stdout,
            "single_f1": single["best_macro_f1"]}


def test_two_processes_train_as_one_with_the_same_global_batch(ddp):
    run_dir, reference = ddp["members"] / "fresh", ddp["single"] / "epoch1"
    assert sorted(p.name for p in run_dir.rglob("*.pt")) == ["best.pt", "last.pt"]
    assert metrics_epochs(run_dir) == [0]
    assert max_weight_difference(run_dir / "best.pt", reference / "best.pt") < WEIGHT_TOLERANCE
    same_validation(run_dir, reference)
    assert ddp["stdout"].count("members trained now: fresh, resumed, probe") == 1  # the summary once, not once per process
    assert (ddp["fit_dir"] / "recipe.yaml").is_file() and (run_dir / "done.json").is_file()


def test_a_run_resumed_under_torchrun_continues_as_one_process_would(ddp):
    run_dir, reference = ddp["members"] / "resumed", ddp["single"] / "run"
    assert sorted(p.name for p in run_dir.rglob("*.pt")) == ["best.pt", "last.pt"]
    assert metrics_epochs(run_dir) == [0, 1]
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    assert max_weight_difference(run_dir / "last.pt", reference / "last.pt") < WEIGHT_TOLERANCE
    same_validation(run_dir, reference)
    assert json.loads((run_dir / "done.json").read_text())["best_macro_f1"] == pytest.approx(ddp["single_f1"], abs=1e-9)


def test_probe_embeds_in_shards_into_the_same_cache(ddp):
    single_cache = list((ddp["single"] / ".feature_cache").glob("*.npy"))
    ddp_cache = list((ddp["members"] / ".feature_cache").glob("*.npy"))
    assert len(single_cache) == len(ddp_cache) == 1 and single_cache[0].name == ddp_cache[0].name
    np.testing.assert_allclose(np.load(ddp_cache[0]), np.load(single_cache[0]), atol=1e-5)
    run_dir = ddp["members"] / "probe"
    assert metrics_epochs(run_dir) == [0, 1, 2, 3]
    assert max_weight_difference(run_dir / "best.pt", ddp["single"] / "probe" / "best.pt") < WEIGHT_TOLERANCE
    same_validation(run_dir, ddp["single"] / "probe")


def test_a_batch_the_processes_cannot_share_is_a_one_line_error(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(MaskclsError, match=r"^train.batch_size=15 does not split evenly over 2 processes; use a multiple of 2$"):
        train(tiny_cfg("name=odd", "train.batch_size=15"), progress=False)
    assert not (tmp_path / "runs" / "odd").exists()


@pytest.fixture
def one_process_group(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_cpu_sync_batchnorm_computes_what_batchnorm_does(one_process_group):
    """In float64, where rounding can't hide a wrong formula; one process sums over itself only."""
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), BatchNormAct2d(4), torch.nn.Flatten(), torch.nn.BatchNorm1d(144)).double()
    copy = deepcopy(plain)
    synced = cpu_sync_batchnorm(copy)
    assert [type(m) for m in synced] == [torch.nn.Conv2d, CpuSyncBatchNorm, torch.nn.Flatten, CpuSyncBatchNorm]
    assert synced[1].weight is copy[1].weight  # the optimizer and checkpoints see the same tensors
    x, weights = torch.randn(6, 3, 8, 8, dtype=torch.float64) * 3 + 1, torch.randn(6, 144, dtype=torch.float64)
    outputs = []
    for model in (plain, synced):
        outputs.append(model(x))
        (outputs[-1] * weights).sum().backward()
    torch.testing.assert_close(outputs[1], outputs[0])
    for (name, a), b in zip(plain.state_dict().items(), synced.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, msg=name)
    for a, b in zip(plain.parameters(), synced.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad)
    plain.eval(), synced.eval()
    torch.testing.assert_close(synced(x), plain(x))
