"""Search spaces: YAML ranges over dotted config keys, checked whole before any trial runs.

    # configs/space/cpu-fast.yaml
    params:
      train.lr: {type: float, low: 3.0e-4, high: 3.0e-2, log: true}
      model.head_hidden: {type: int, low: 0, high: 512, step: 128}
      train.loss: {type: categorical, choices: [ce, focal, ce+f1]}

A key the config does not have, a low above its high, an empty choice list, or a value the config
would refuse (a float range over a choice key, say) is a one-line error naming the file and key.
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, flat, named_yaml, read_yaml_mapping
from ..errors import MaskclsError

KINDS = ("float", "int", "categorical")
SPACE_KEYS = ("params", "description")
# Optuna stores categorical choices of these types as they are; others (lists such as
# data.age_cuts=[30, 58]) travel as their JSON text and are decoded when a trial is built.
PLAIN_CHOICE = (type(None), bool, int, float, str)
# Shipped spaces live in the repository's configs/space/, beside the package.
SHIPPED_SPACES = Path(__file__).resolve().parent.parent.parent / "configs" / "space"


@dataclass(frozen=True)
class Param:
    key: str  # dotted config key
    kind: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial):
        """The trial's value for this key, drawn by the study's sampler."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        picked = trial.suggest_categorical(self.key, [encode_choice(c) for c in self.choices])
        return decode_choice(picked, self.choices)

    def extremes(self) -> list:
        """Values that must each make a valid config on their own."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"type": self.kind, "choices": list(self.choices)}
        spec = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            spec["log"] = True
        if self.step is not None:
            spec["step"] = self.step
        return spec


def encode_choice(choice):
    return choice if isinstance(choice, PLAIN_CHOICE) else json.dumps(choice)


def decode_choice(picked, choices: tuple):
    for choice in choices:
        if encode_choice(choice) == picked:
            return choice
    raise MaskclsError(f"choice {picked!r} is not in this space's {list(choices)}; the study was made with another space")


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    source: str = ""

    def suggest(self, trial) -> dict:
        return {param.key: param.suggest(trial) for param in self.params}

    def to_dict(self) -> dict:
        return {"params": {param.key: param.to_dict() for param in self.params}}

    def fingerprint(self) -> str:
        """What makes two spaces the same space, as canonical JSON."""
        return json.dumps(self.to_dict(), sort_keys=True)


def resolve_space_path(name_or_path) -> Path:
    """A space file as given, else a shipped name: `cpu-fast` means configs/space/cpu-fast.yaml."""
    path = named_yaml(name_or_path, Path("configs") / "space", SHIPPED_SPACES)
    if path is not None:
        return path
    shipped = ", ".join(sorted(p.stem for p in SHIPPED_SPACES.glob("*.yaml")))
    raise MaskclsError(f"{name_or_path}: no such search space; pass a YAML file or one of {shipped}")


def load_space(name_or_path, base: Config) -> SearchSpace:
    """The space in a YAML file, each range checked against `base`, the config the trials start from."""
    path = resolve_space_path(name_or_path)
    values = read_yaml_mapping(path, "search space")
    try:
        return space_from_dict(values, base, source=str(path))
    except MaskclsError as exc:
        raise MaskclsError(f"{path}: {exc}") from None


def space_from_dict(values: dict, base: Config, source: str = "") -> SearchSpace:
    unknown = [key for key in values if key not in SPACE_KEYS]
    if unknown:
        raise MaskclsError(f"unknown key {unknown[0]!r} at the top; a space has {' and '.join(SPACE_KEYS)}")
    params = values.get("params")
    if not isinstance(params, dict) or not params:
        raise MaskclsError("params: give a mapping of dotted config keys to ranges, e.g. train.lr: {type: float, low: 1e-4, high: 1e-2}")
    known = flat(base.to_dict())
    parsed = []
    for key, spec in params.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else "; see `maskcls train --help` and the configs in configs/"
            raise MaskclsError(f"params.{key}: the config has no such key{hint}")
        param = param_from_dict(key, spec)
        for value in param.extremes():
            try:
                base.updated({key: value})
            except MaskclsError as exc:
                raise MaskclsError(f"params.{key}: {value!r} is not a valid value ({exc})") from None
        parsed.append(param)
    return SearchSpace(tuple(parsed), source)


def param_from_dict(key: str, spec) -> Param:
    where = f"params.{key}"
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise MaskclsError(f"{where}: give a mapping with type: {' | '.join(KINDS)}, e.g. {{type: float, low: 0.0001, high: 0.01, log: true}}")
    kind = spec["type"]
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise MaskclsError(f"{where}: {extra[0]!r} does not belong to a {kind} range; it takes {', '.join(sorted(allowed - {'type'}))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MaskclsError(f"{where}: choices must be a non-empty list")
        if len({json.dumps(c, sort_keys=True) for c in choices}) < len(choices):
            raise MaskclsError(f"{where}: choices repeat a value")
        return Param(key, kind, choices=tuple(choices))
    number = float if kind == "float" else int
    bounds = {}
    for end in ("low", "high"):
        value = spec.get(end)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (number is int and not float(value).is_integer()):
            raise MaskclsError(f"{where}: {end} must be {'a number' if number is float else 'an integer'}, not {value!r}")
        if not math.isfinite(value):
            raise MaskclsError(f"{where}: {end} must be finite")
        bounds[end] = number(value)
    if bounds["low"] >= bounds["high"]:
        raise MaskclsError(f"{where}: low ({bounds['low']}) must be below high ({bounds['high']})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise MaskclsError(f"{where}: log is true or false")
    if log and bounds["low"] <= 0:
        raise MaskclsError(f"{where}: a log range needs low > 0")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 or (number is int and not float(step).is_integer()):
            raise MaskclsError(f"{where}: step must be a positive {'number' if number is float else 'integer'}")
        if log:
            raise MaskclsError(f"{where}: a log range has no step")
        step = number(step)
    return Param(key, kind, bounds["low"], bounds["high"], log, step)
