"""The typed config: every setting checked once, with one line naming the key."""
from typing import get_args

import numpy as np
import pytest
import torch
import yaml

from maskcls import checkpoint
from maskcls.config import AugmentPreset, Config, ModelConfig, PreprocessConfig, config_from_dict, dump_config, load_config
from maskcls.data.transforms import Preprocess, train_transform
from maskcls.errors import MaskclsError
from maskcls.models import build_model


@pytest.mark.parametrize("override, message", [
    ("train.epochs=0", r"^train.epochs=0: must be at least 1$"),
    ("train.epochs=2.5", r"^train.epochs=2.5: must be a whole number$"),
    ("train.label_smoothing=2", r"^train.label_smoothing=2.0: must be below 1$"),
    ("train.lr=-1", r"^train.lr=-1.0: must be greater than 0$"),
    ("data.num_workers=-1", r"^data.num_workers=-1: must be at least 0$"),
    ("preprocess.mean=[0.5,0.5]", r"^preprocess.mean=\[0.5, 0.5\]: give exactly 3 values$"),
    ("data.age_cuts=[60,30]", r"^data.age_cuts=\[60, 30\]: the cuts must increase, e.g. \[30, 60\]$"),
    ("data.folds=1", r"^data.folds=1: must be at least 2$"),
    ("model.head=triple", r"^model.head='triple': choose one of single, multi$"),
    ("model.mode=distill", r"^model.mode='distill': choose one of finetune, freeze, probe$"),
    ("train.channels_last=maybe", r"^train.channels_last='maybe': expected true or false$"),
    ("tracking=[tensorbored]", r"^tracking=\['tensorbored'\]: 'tensorbored' is not one of tensorboard, wandb, mlflow$"),
    ("train.head_weights={nose: 1}", r"^train.head_weights: unknown head 'nose'; use mask, gender, age$"),
    ("train.ema=nan", r"^train.ema=nan: must be a finite number$"),
    ("model=resnet", r"^config key 'model' is a section; set its fields, e.g. model.backbone=...$"),
    ("train.lr", r"^override 'train.lr': write it as dotted.key=value"),
    ("preprocess.size=[48]", r"^preprocess.size=\[48\]: give one side, or \[height, width\]$"),
    ("preprocess.size=16", r"^preprocess.size=16: images under 32 px are too small"),
    ("preprocess.std=[0.2,0,0.2]", r"^preprocess.std=\[0.2, 0.0, 0.2\]: every value must be greater than 0$"),
    ("data.fold=5", r"^data.fold=5: must be in 0..4 \(data.folds=5\)$"),
    ("data.val_fraction=0.6", r"^data.val_fraction=0.6: must be below 0.5$"),
    ("train.head_weights={mask: -1}", r"^train.head_weights=\{'mask': -1.0\}: weights must be at least 0$"),
])
def test_bad_settings_are_one_line_errors_before_anything_runs(override, message):
    with pytest.raises(MaskclsError, match=message):
        load_config(None, [override])


def test_settings_are_typed_once():
    cfg = load_config("cpu-face", ["train.lr=3e-3", "train.epochs=4.0", "tracking=tensorboard", "preprocess.size=[48, 40]"])
    assert isinstance(cfg, Config) and cfg.train.lr == 0.003 and type(cfg.train.epochs) is int and cfg.tracking == ["tensorboard"]
    assert cfg.preprocess.size == [48, 40] and cfg.model.backbone == "none"
    changed = cfg.updated({"data.fold": 1, "out": "elsewhere"})
    assert changed.data.fold == 1 and changed.out == "elsewhere" and cfg.data.fold is None
    with pytest.raises(MaskclsError, match=r"data.fold=-1: must be at least 0"):
        cfg.updated({"data.fold": -1})
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0  # frozen: a change goes through updated() and is checked


def test_a_config_file_whose_top_level_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- train.lr: 0.1\n")
    with pytest.raises(MaskclsError, match=r"list.yaml: the top level must be a mapping of keys \(key: value\), not a list"):
        load_config(path)


def old_config(dropped=(("model", "age_years"), ("model", "face_experts_age_size"), ("data", "split_seed"))) -> dict:
    """A run folder's config.yaml from before some settings existed."""
    values = Config().to_dict()
    for section, key in dropped:
        del values[section][key]
    return values


def test_old_run_folders_still_load(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old_config()))
    cfg = load_config(path)
    assert cfg.model.age_years is False and cfg.data.split_seed == 0
    assert yaml.safe_load(dump_config(cfg)) == Config().to_dict()


def test_an_old_checkpoint_rebuilds_its_model(tmp_path):
    values = old_config()
    values["model"].update(backbone="resnet10t", weights="none")
    values["preprocess"]["size"] = 48
    model, pre = build_model(ModelConfig.from_dict(values["model"]), PreprocessConfig.from_dict(values["preprocess"]))
    checkpoint.save({"model": model.state_dict(), "config": values, "preprocess": pre.to_dict(), "layout": model.layout,
                     "age_cuts": [30, 60], "epoch": 0, "val": {}}, tmp_path / "best.pt")
    rebuilt, rebuilt_pre, _ = checkpoint.load_model(tmp_path / "best.pt")
    assert rebuilt_pre == Preprocess.from_dict(pre.to_dict())
    x = torch.randn(2, 3, 48, 48)
    model.eval()
    assert torch.allclose(rebuilt(x), model(x))


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", r"best.pt: damaged or not a maskcls checkpoint .*train again"),
    (None, r"best.pt: not a maskcls checkpoint \(no model and config inside\)"),
])
def test_damaged_checkpoints_name_the_file(tmp_path, content, message):
    path = tmp_path / "best.pt"
    if content is None:
        torch.save({"weights": 1}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(MaskclsError, match=message):
        checkpoint.load(path)


def test_every_augment_choice_is_a_preset():
    pre = Preprocess(48, 48, (0.5,) * 3, (0.5,) * 3)
    for preset in get_args(AugmentPreset):
        train_transform(pre, preset)


def test_the_camera_preset_sends_some_faces_grey_and_some_soft():
    pre = Preprocess(64, 64, (0.5,) * 3, (0.5,) * 3)
    yy, xx = np.mgrid[0:64, 0:64]
    colourful = np.stack([xx * 4, yy * 4, 255 - xx * 2], -1).astype(np.uint8)
    detailed = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)

    def sharpness(image):
        return float(np.abs(np.diff(image.astype(np.float32), axis=1)).mean())

    def is_grey(image):
        return np.ptp(image, axis=2).max() == 0

    for preset, grey_range, soft_range in (("medium", (0, 0), (0, 0.02)), ("camera", (0.1, 0.35), (0.1, 0.6))):
        transform = train_transform(pre, preset)
        transform.set_random_seed(0)
        grey = np.mean([is_grey(transform(image=colourful)["image"]) for _ in range(300)])
        soft = np.mean([sharpness(transform(image=detailed)["image"]) < 0.25 * sharpness(detailed) for _ in range(300)])
        assert grey_range[0] <= grey <= grey_range[1] and soft_range[0] <= soft <= soft_range[1], (preset, grey, soft)


def test_configs_round_trip_through_their_dict():
    cfg = load_config("cpu-finetune", ["data.root=somewhere"])
    assert config_from_dict(cfg.to_dict()) == cfg
