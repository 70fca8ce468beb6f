"""Recipes: how every model of the book is trained, one module per chapter that trains models.

Each recipe is a frozen dataclass holding every knob of one model; ``Recipe.at(profile, dataset)`` is the one
place a profile is read for training, and :func:`build` the one way to get the trained model (shipped weights,
the cache, or training now, resumable). A chapter shows its recipe with ``recipe.table()`` and changes a knob
with ``dataclasses.replace``.

| module | chapter | recipes |
|---|---|---|
| :mod:`~purify_lib.recipes.classifiers` | 1 | ``Supervised`` (every plain classifier), ``LeNet`` |
| :mod:`~purify_lib.recipes.apegan` | 2 | ``Target``, ``APEGANRecipe`` |
| :mod:`~purify_lib.recipes.apeganpp` | 3 | ``ThirdParty``, ``APEGANPP`` |
| :mod:`~purify_lib.recipes.aegan` | 4 | ``ClassifierA``, ``AEGANRS``, ``MagNet``, ``DefenseGAN`` |
| :mod:`~purify_lib.recipes.gandef` | 5 | ``Method`` (Pure PGD, Mix PGD, logit pairing, GanDef) |
| :mod:`~purify_lib.recipes.isogan` | 6 | ``F1``, ``IsoGAN``, ``Chosen`` |
"""

from __future__ import annotations

from .base import Recipe, build, clean_score, departures, seconds

__all__ = ["Recipe", "build", "clean_score", "departures", "seconds"]
