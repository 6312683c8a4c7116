"""The training engine on a tiny random-init model: run folder, resume, bad input."""
import csv
import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import cli_here, kill_after_first_epoch

from maskcls.checkpoint import load as load_checkpoint
from maskcls.checkpoint import save as save_checkpoint
from maskcls.config import ModelConfig, PreprocessConfig, load_config
from maskcls.data.mix import mix_batch
from maskcls.errors import MaskclsError
from maskcls.fit import fit_vote
from maskcls.models import build_model
from maskcls.optim import create_optimizer
from maskcls.scheduler import create_scheduler
from maskcls.train import train
from maskcls.train.engine import split_data

TIME_COLUMNS = {"train_img_s", "epoch_s"}


def metrics_rows(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return [{k: float(v) for k, v in row.items() if k not in TIME_COLUMNS} for row in csv.DictReader(handle)]


def test_run_folder_holds_config_commit_metrics_and_checkpoints(tiny_cfg):
    result = train(tiny_cfg("name=first", "tracking=[tensorboard]"), progress=False)
    run_dir = Path(result["run_dir"])
    for name in ("config.yaml", "git_commit.txt", "metrics.csv", "best.pt", "last.pt", "val_probs.npy", "val_images.csv"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.*"))
    rows = metrics_rows(run_dir)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert {"val_macro_f1", "val_accuracy", "val_mask_f1", "val_gender_f1", "val_age_f1", "lr", "train_loss"} <= set(rows[0])
    best = load_checkpoint(run_dir / "best.pt")
    assert best["val"]["macro_f1"] == pytest.approx(max(r["val_macro_f1"] for r in rows), abs=1e-6)
    assert best["preprocess"]["height"] == 48 and best["config"]["model"]["backbone"] == "resnet10t"
    assert not list(run_dir.glob("*.tmp"))


def test_existing_run_folder_is_never_overwritten(tiny_cfg):
    train(tiny_cfg("name=same", "train.epochs=1"), progress=False)
    with pytest.raises(MaskclsError, match=r"same: run folder already exists; choose another name=..., or continue it with --resume"):
        train(tiny_cfg("name=same", "train.epochs=1"), progress=False)


RESUME_OVERRIDES = ("train.epochs=3", "train.ema=0.9", "train.mix=cutmix", "train.mix_prob=0.7", "augment.preset=medium", "model.drop_rate=0.3")


def test_resume_after_interrupt_matches_uninterrupted_run(tiny_cfg):
    straight = train(tiny_cfg("name=straight", *RESUME_OVERRIDES), progress=False)

    def crash(epoch, row):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg("name=broken", *RESUME_OVERRIDES), on_epoch_end=crash, progress=False)
    broken_dir = Path(straight["run_dir"]).parent / "broken"
    assert len(metrics_rows(broken_dir)) == 1
    torch.manual_seed(12345)  # the resumed run must not depend on the process's RNG state
    resumed = train(resume=broken_dir, progress=False)
    expected, got = metrics_rows(Path(straight["run_dir"])), metrics_rows(broken_dir)
    assert len(got) == 3
    for want, have in zip(expected, got, strict=True):
        for key in want:
            assert have[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    assert resumed["best_macro_f1"] == pytest.approx(straight["best_macro_f1"], abs=1e-6)


def test_kill_9_then_resume_from_the_command_line(demo_root, tmp_path):
    out = tmp_path / "runs"
    args = [f"data.root={demo_root}", f"out={out}", "name=killed", "model.backbone=resnet10t", "model.weights=none",
            "preprocess.size=48", "train.epochs=3", "train.batch_size=16", "data.num_workers=0", "tracking=[]"]
    metrics = out / "killed" / "metrics.csv"
    kill_after_first_epoch(["train", *args], metrics)
    done = len(metrics.read_text().splitlines()) - 1
    assert done < 3
    result = subprocess.run([sys.executable, "-m", "maskcls", "-q", "train", "--resume", str(out / "killed")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [r["epoch"] for r in metrics_rows(out / "killed")] == [0, 1, 2]
    assert "best val macro-F1" in result.stdout


def test_nan_loss_stops_with_the_batch_and_leaves_no_unstarted_run(tiny_cfg, tmp_path):
    with pytest.raises(MaskclsError, match=r"loss is (nan|inf|-inf) at epoch 1, batch \d+; stopped. No epoch had finished, so nothing is kept"):
        train(tiny_cfg("name=nan", "train.optimizer=sgd", "train.lr=1e12", "train.scheduler=none"), progress=False)
    assert not (tmp_path / "runs" / "nan").exists()


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "model": {}, "config": {}}, path)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(MaskclsError, match=r"^disk full at .*last.pt; the previous checkpoint is intact"):
        save_checkpoint({"epoch": 2, "model": {}, "config": {}}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("overrides,message", [
    (("model.backbone=no_such_net",), "no_such_net"),
    (("train.loss=dice",), r"train.loss='dice': unknown loss"),
    (("train.batch_size=0",), r"train.batch_size=0: must be at least 1"),
    (("train.accum_steps=0",), r"train.accum_steps=0: must be at least 1"),
    (("train.batch_size=100000",), r"train.batch_size=100000 is larger than the \d+ training photos; lower it"),
    (("train.optimizer=lbfgs",), r"train.optimizer='lbfgs': choose one of sgd, adam, adamw"),
    (("train.scheduler=onecycle",), r"train.scheduler='onecycle': choose one of"),
    (("augment.preset=wild",), r"augment.preset='wild': choose one of none, light, medium, strong, camera"),
    (("tracking=[wandb]",), r"tracking includes 'wandb' but it is not installed"),
    (("train.sampler=weighted",), r"train.sampler='weighted': choose one of random, balanced"),
    (("train.mix=mosaic",), r"train.mix='mosaic': choose one of none, mixup, cutmix, vcutmix"),
    (("train.amp=fp8",), r"train.amp='fp8': choose one of auto, bf16, fp16, none"),
    (("train.amp=fp16",), r"train.amp=fp16 needs a CUDA GPU; use auto or bf16 on a CPU"),
])
def test_bad_settings_are_one_line_errors(tiny_cfg, overrides, message):
    with pytest.raises(MaskclsError, match=message):
        train(tiny_cfg(*overrides), progress=False)


def test_misspelt_choice_leaves_no_run_folder(tiny_cfg, tmp_path):
    with pytest.raises(MaskclsError, match="train.optimizer='adamm'"):
        train(tiny_cfg("name=typo", "train.optimizer=adamm"), progress=False)
    assert not (tmp_path / "runs" / "typo").exists()
    train(tiny_cfg("name=typo", "train.epochs=1"), progress=False)  # the name is still free


@pytest.mark.parametrize("overrides, message", [
    (("model.backbone=none",), "model.backbone=none needs model.face_experts=true"),
    (("model.age_years=true", "model.head=single"), "model.age_years=true needs model.head=multi"),
    (("model.face_experts=true", "model.mode=probe"), "model.face_experts=true trains the face networks"),
])
def test_model_settings_that_clash_leave_no_run_folder(tiny_cfg, tmp_path, overrides, message):
    with pytest.raises(MaskclsError, match=message):
        train(tiny_cfg("name=clash", *overrides), progress=False)
    assert not (tmp_path / "runs" / "clash").exists()


def test_unknown_config_key_is_an_error():
    with pytest.raises(MaskclsError, match=r"unknown config key 'train.lrr'"):
        load_config(None, ["train.lrr=0.1"])
    with pytest.raises(MaskclsError, match=r"nosuch.yaml: config not found"):
        load_config("nosuch.yaml")


def test_probe_mode_caches_features_and_learns(tiny_cfg, tmp_path):
    first = train(tiny_cfg("name=p1", "model.mode=probe", "train.probe_epochs=30", "train.batch_size=64"), progress=False)
    cache = list((tmp_path / "runs" / ".feature_cache").glob("*.npy"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    train(tiny_cfg("name=p2", "model.mode=probe", "train.probe_epochs=5", "train.batch_size=64"), progress=False)
    assert cache[0].stat().st_mtime_ns == stamp  # reused, not recomputed
    assert first["best_macro_f1"] > 0


def test_accumulation_clipping_balanced_sampler_and_ordinal_head_run(tiny_cfg):
    result = train(tiny_cfg("name=misc", "train.epochs=1", "train.accum_steps=2", "train.clip_grad=1.0", "train.sampler=balanced",
                            "model.age_ordinal=true", "train.loss=focal+f1", "train.class_weights=balanced", "train.mix=vcutmix"), progress=False)
    assert result["epochs_run"] == 1


def test_param_groups_skip_decay_on_norms_and_biases_and_slow_the_backbone():
    model, _ = build_model(ModelConfig.from_dict({"backbone": "resnet10t", "weights": "none", "head": "multi"}), PreprocessConfig())
    optimizer = create_optimizer(model, opt="adamw", lr=0.01, weight_decay=0.05, backbone_lr_mult=0.1)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(0.001) and groups["head"]["lr"] == pytest.approx(0.01)
    assert groups["backbone/no_decay"]["weight_decay"] == 0 and groups["backbone"]["weight_decay"] == 0.05
    assert all(p.ndim <= 1 for p in groups["backbone/no_decay"]["params"])


def test_cosine_warmup_and_plateau_schedules():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler, per_batch = create_scheduler(optimizer, sched="cosine", num_epochs=2, steps_per_epoch=10, warmup_epochs=0.5)
    assert per_batch
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.2) and lrs[4] == pytest.approx(1.0) and lrs[-1] < 0.05
    assert np.all(np.diff(lrs[4:]) <= 1e-12)
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler, per_batch = create_scheduler(optimizer, sched="plateau", plateau_patience=0)
    scheduler.step(0.5)
    scheduler.step(0.4)
    assert not per_batch and optimizer.param_groups[0]["lr"] == pytest.approx(0.3)


def test_vertical_cutmix_pastes_full_height_strips():
    x = torch.stack([torch.zeros(3, 8, 10), torch.ones(3, 8, 10)])
    target = torch.eye(18)[[0, 17]]
    mixed, mixed_target = mix_batch(x, target, "vcutmix", 1.0, 1.0, np.random.default_rng(0))
    pasted = (mixed[0] != 0).any(0)
    assert (pasted.all(0) | ~pasted.any(0)).all()  # every column is either fully pasted or untouched
    assert mixed_target[0, 17] == pytest.approx(pasted.float().mean().item())
    assert torch.allclose(mixed_target.sum(1), torch.ones(2))


def test_numbers_in_exponent_form_are_numbers():
    cfg = load_config(None, ["train.lr=1e-3", "train.epochs=4", "train.ema=0.99"])
    assert cfg.train.lr == pytest.approx(0.001) and cfg.train.epochs == 4 and isinstance(cfg.train.epochs, int)
    with pytest.raises(MaskclsError, match=r"config key 'train.lr': 'fast' is not a number"):
        load_config(None, ["train.lr=fast"])


def test_early_stopping_after_patience_epochs_without_gain(tiny_cfg, monkeypatch):
    import maskcls.train.engine as engine

    flat_score = {"macro_f1": 0.3, "accuracy": 0.5, **{f"{h}_{m}": 0.5 for h in ("mask", "gender", "age") for m in ("f1", "acc")}}
    monkeypatch.setattr(engine, "score", lambda labels, predictions: dict(flat_score))
    result = train(tiny_cfg("name=early", "train.epochs=6", "train.early_stop=2"), progress=False)
    assert result["epochs_run"] == 3 and result["best_epoch"] == 0


def test_train_cli_with_config_file_and_overrides(demo_root, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("model:\n  backbone: resnet10t\n  weights: none\npreprocess:\n  size: 48\ntrain:\n  epochs: 1\n  batch_size: 16\ntracking: []\n")
    result = subprocess.run([sys.executable, "-m", "maskcls", "-q", "train", "--config", str(config), f"data.root={demo_root}",
                             f"out={tmp_path / 'runs'}", "name=cli", "train.lr=1e-3", "data.num_workers=0"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    saved = load_config(tmp_path / "runs" / "cli" / "config.yaml")
    assert saved.train.lr == pytest.approx(1e-3) and saved.model.backbone == "resnet10t"
    bad = cli_here("train", "--config", config, "train.lr")
    assert bad.returncode == 2 and bad.stderr.strip() == "maskcls: error: override 'train.lr': write it as dotted.key=value, e.g. train.lr=0.001"


def test_val_fraction_zero_trains_on_every_person_and_keeps_the_last_epoch(tiny_cfg, demo_root):
    result = train(tiny_cfg("name=all", "data.val_fraction=0"), progress=False)
    run_dir = Path(result["run_dir"])
    assert not result["validated"] and result["best_epoch"] == 1
    assert not (run_dir / "val_probs.npy").exists()
    assert [r["epoch"] for r in metrics_rows(run_dir)] == [0, 1]
    assert "val_macro_f1" not in metrics_rows(run_dir)[0]
    best, last = load_checkpoint(run_dir / "best.pt"), load_checkpoint(run_dir / "last.pt")
    assert best["epoch"] == 1 and best["val"] == {}
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    n_persons = len(pd.read_csv(demo_root / "train" / "train.csv"))
    assert len(pd.read_csv(run_dir / "val_images.csv")) == 0
    assert split_data(tiny_cfg("data.val_fraction=0"))[1]["path"].nunique() == n_persons
    with pytest.raises(MaskclsError, match=r"none when trained on every person"):
        fit_vote([run_dir], fit_weights=True)


@pytest.mark.parametrize("overrides", [("train.scheduler=plateau",), ("train.early_stop=2",)])
def test_no_validation_rejects_settings_that_follow_validation(tiny_cfg, overrides):
    with pytest.raises(MaskclsError, match=r"data.val_fraction=0 trains without validation"):
        train(tiny_cfg("data.val_fraction=0", *overrides), progress=False)


def test_split_seed_alone_decides_the_holdout(tiny_cfg):
    def val_persons(*overrides):
        return set(split_data(tiny_cfg(*overrides))[2]["path"])

    assert val_persons("seed=0") == val_persons("seed=5")
    assert val_persons("data.split_seed=0") != val_persons("data.split_seed=1")
