"""The recipe format: which models, and how their answers become one.

A recipe is a versioned YAML file (shipped ones in configs/recipes/):

    name: cpu-best
    version: 1
    members:                      # each trained from a config (maskcls fit) or already trained
      - {name: face0, config: cpu-face, overrides: [data.val_fraction=0, seed=0]}
      - {name: lite0, run: members/lite0}      # a run folder, CV folder or checkpoint
    tta: hflip                    # none | hflip | multiscale
    vote: {method: soft, weights: null, mask_weights: [0, 1], offsets: null}
    by_person: true               # pool each person's 7 eval photos (competition eval sets)

`maskcls fit` trains the members that have a config and writes the same recipe, with every
member's `run`, into its folder; `maskcls ensemble` writes one over runs it was given; `maskcls
predict` takes either. A member's `run` is relative to the recipe file's folder unless absolute.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ..config import Section, check_value, config_section_from_dict, named_yaml, read_yaml_mapping
from ..errors import MaskclsError
from ..fileio import atomic_write_text
from ..labels import NUM_CLASSES
from .runtime import TTA_PRESETS

RECIPE_VERSION = 1
MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The shipped recipes live in the repository's configs/recipes/, beside the package.
SHIPPED_RECIPES = Path(__file__).resolve().parent.parent.parent / "configs" / "recipes"


@dataclass(frozen=True)
class Member(Section):
    name: str
    config: str | None = None  # a config file or a preset name in configs/
    overrides: list[str] = field(default_factory=list)  # dotted overrides laid over the config
    folds: int | None = None  # train a K-fold CV instead of one run; its folds are averaged
    run: str | None = None  # the trained run folder, CV folder or checkpoint


@dataclass(frozen=True)
class Vote(Section):
    method: Literal["soft", "hard"] = "soft"
    weights: list[float] | None = None  # one per member; None = equal
    mask_weights: list[float] | None = None  # one per member for the mask alone (soft voting)
    offsets: list[float] | None = None  # per-class log-probability offsets fitted for macro-F1


@dataclass(frozen=True)
class Recipe:
    name: str
    members: list[Member]
    version: int = RECIPE_VERSION
    description: str = ""
    tta: Literal[TTA_PRESETS] = "none"
    vote: Vote = field(default_factory=Vote)
    by_person: bool = False
    notes: dict = field(default_factory=dict)  # what fitted the vote reports (out-of-fold scores)
    home: Path | None = None  # the folder a member's relative `run` is read from

    def replace(self, **changes) -> Recipe:
        return check_recipe(dataclasses.replace(self, **changes))

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "description": self.description,
                "members": [{k: v for k, v in m.to_dict().items() if v not in (None, [])} for m in self.members],
                "tta": self.tta, "vote": self.vote.to_dict(), "by_person": self.by_person,
                **({"notes": self.notes} if self.notes else {})}

    def run_path(self, member: Member) -> Path:
        path = Path(member.run)
        return path if path.is_absolute() or self.home is None else self.home / path

    def trained_runs(self) -> list[Path]:
        """Every member's trained folder or checkpoint; an untrained member is a one-line error."""
        missing = [m.name for m in self.members if m.run is None]
        if missing:
            raise MaskclsError(f"recipe {self.name!r}: member {missing[0]!r} is not trained yet; "
                               f"run `maskcls fit {self.name} --data DATA` and predict from its folder")
        return [self.run_path(m) for m in self.members]


def check_recipe(recipe: Recipe) -> Recipe:
    """Settings that are valid alone but not together: names, sources and the vote's lengths."""
    if not recipe.members:
        raise MaskclsError(f"recipe {recipe.name!r}: no members; list at least one under members:")
    names = [m.name for m in recipe.members]
    for member in recipe.members:
        if not MEMBER_NAME.fullmatch(member.name):
            raise MaskclsError(f"recipe member name {member.name!r}: use letters, digits, '.', '_' and '-' only")
        if (member.config is None) == (member.run is None):
            raise MaskclsError(f"recipe member {member.name!r}: give exactly one of config: (to train) or run: (trained)")
        if member.folds is not None and member.folds < 2:
            raise MaskclsError(f"recipe member {member.name!r}: folds={member.folds} must be at least 2")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise MaskclsError(f"recipe {recipe.name!r}: member name {duplicated[0]!r} is used twice; names must be unique")
    vote, n = recipe.vote, len(recipe.members)
    for key in ("weights", "mask_weights"):
        values = getattr(vote, key)
        if values is not None and (len(values) != n or min(values) < 0 or sum(values) <= 0):
            raise MaskclsError(f"vote.{key}={values}: give {n} non-negative weights, one per member, with a positive sum")
    if vote.offsets is not None and len(vote.offsets) != NUM_CLASSES:
        raise MaskclsError(f"vote.offsets: give {NUM_CLASSES} values, one per class, not {len(vote.offsets)}")
    if vote.method == "hard" and (vote.mask_weights is not None or vote.offsets is not None):
        raise MaskclsError("vote.method=hard takes no mask_weights or offsets; they apply to soft voting")
    return recipe


RECIPE_KEYS = ("name", "version", "description", "members", "tta", "vote", "by_person", "notes")


def recipe_from_dict(values: dict, home: Path | None = None, default_name: str = "recipe") -> Recipe:
    unknown = [key for key in values if key not in RECIPE_KEYS]
    if unknown:
        raise MaskclsError(f"unknown recipe key {unknown[0]!r}; known keys: {', '.join(RECIPE_KEYS)}")
    version = check_value(values.get("version", RECIPE_VERSION), int, "version")
    if version > RECIPE_VERSION:
        raise MaskclsError(f"recipe version {version} is newer than this maskcls reads ({RECIPE_VERSION}); update maskcls")
    members = values.get("members") or []
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise MaskclsError("members: give a list of mappings, e.g. - {name: a, config: cpu-fast}")
    notes = values.get("notes") or {}
    if not isinstance(notes, dict):
        raise MaskclsError("notes: expected a mapping")
    return check_recipe(Recipe(
        name=check_value(values.get("name", default_name), str, "name"),
        members=[config_section_from_dict(Member, m, f"members[{i}].") for i, m in enumerate(members)],
        version=version,
        description=check_value(values.get("description") or "", str, "description"),
        tta=check_value(values.get("tta", "none"), Literal[TTA_PRESETS], "tta"),
        vote=config_section_from_dict(Vote, values.get("vote") or {}, "vote."),
        by_person=check_value(values.get("by_person", False), bool, "by_person"),
        notes=notes, home=home,
    ))


def looks_like_recipe(target) -> bool:
    """True for a recipe file, a fit or ensemble folder, or a shipped recipe's name; False for runs."""
    path = Path(target)
    if path.is_dir():
        return (path / "recipe.yaml").is_file() or (path / "fit.json").is_file()
    return path.suffix in (".yaml", ".yml") or (not path.exists() and (SHIPPED_RECIPES / f"{target}.yaml").is_file())


def resolve_recipe_path(name_or_path) -> Path:
    """A recipe file, a folder holding recipe.yaml (a fit or ensemble folder), or a shipped name."""
    path = Path(name_or_path)
    if path.is_dir() and (path / "recipe.yaml").is_file():
        return path / "recipe.yaml"
    if path.is_dir() and (path / "fit.json").is_file():
        raise MaskclsError(f"{path}: this fit has not finished (no recipe.yaml yet); rerun its `maskcls fit` command to finish it")
    found = named_yaml(name_or_path, Path("configs") / "recipes", SHIPPED_RECIPES)
    if found is not None:
        return found
    shipped = ", ".join(sorted(p.stem for p in SHIPPED_RECIPES.glob("*.yaml")))
    raise MaskclsError(f"{name_or_path}: no such recipe; pass a recipe YAML, a folder holding recipe.yaml, or one of {shipped}")


def load_recipe(name_or_path) -> Recipe:
    path = resolve_recipe_path(name_or_path)
    values = read_yaml_mapping(path, "recipe")
    try:
        return recipe_from_dict(values, home=path.parent.resolve(), default_name=path.stem)
    except MaskclsError as exc:
        raise MaskclsError(f"{path}: {exc}") from None


def recipe_of_runs(runs, tta: str = "none", vote: Vote | None = None, by_person: bool = False, name: str = "runs") -> Recipe:
    """An ad-hoc recipe over trained runs, CV folders or checkpoints (what `predict RUN...` votes)."""
    members = [Member(name=f"m{i}-{Path(run).name}"[:60], run=str(Path(run).resolve())) for i, run in enumerate(runs)]
    return check_recipe(Recipe(name=name, members=members, tta=tta, vote=vote or Vote(), by_person=by_person))


def save_recipe(recipe: Recipe, path) -> Path:
    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False), what="recipe")
    return path
