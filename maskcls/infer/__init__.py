"""Inference: from trained runs and a recipe to a checked submission.

Rooms: `runtime` (device, autocast, loaders, TTA), `vote` (soft/hard vote, fitted weights, the
mask's own vote), `offsets` (macro-F1 decision offsets), `persons` (grouping eval photos into
persons, one gender and age each), `recipe` (the recipe format), `submission` (writing and
checking it) and `predict`, which runs a recipe over an eval set.
"""
from .predict import predict
from .recipe import Member, Recipe, Vote, load_recipe, recipe_of_runs, save_recipe
from .submission import check_submission, write_submission
from .vote import combine

__all__ = ["predict", "Member", "Recipe", "Vote", "load_recipe", "recipe_of_runs", "save_recipe", "check_submission",
           "write_submission", "combine"]
