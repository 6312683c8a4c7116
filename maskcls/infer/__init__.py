"""Inference: from trained runs and a recipe to a checked submission.

Rooms: `runtime` (device, autocast, loaders, TTA), `vote` (soft/hard vote, fitted weights, the
mask's own vote), `offsets` (macro-F1 decision offsets), `persons` (grouping eval photos into
persons, one gender and age each), `recipe` (the recipe format), `submission` (writing and
checking it), `outputs` (a prediction's files) and `prediction`, whose `predict` runs a recipe
over an eval set.
"""
from importlib import import_module

# Each name's room. The rooms are imported on first use, so a light one (`outputs`) can be reached
# without torch and timm: the CLI checks a prediction's outputs before it imports a model.
_EXPORTS = {"predict": "prediction", "Member": "recipe", "Recipe": "recipe", "Vote": "recipe", "load_recipe": "recipe",
            "recipe_of_runs": "recipe", "save_recipe": "recipe", "check_submission": "submission",
            "write_submission": "submission", "combine": "vote"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # found here from now on, without this hook
    return value
