"""The model zoo: every trained model of the book under one name (RobustBench's registry is the model).

One :class:`Entry` per slug: its chapter, its display name, the recipe that trains it at each profile, and
how the trained model becomes a defense. The same slug names the model in its chapter's results, on the
leaderboard and in the weights manifest. ``zoo.load(slug, profile)`` returns the defense ready to use;
``zoo.model(slug, profile)`` the trained module and its history. A stand-in never carries the real model's
name: at ``quick`` chapter 4 searches AE-GAN's decoder from random starts in place of Defense-GAN's own
generator, and that model is ``defensegan_aegan_decoder``, never ``defensegan``.

``python -m purify_lib.zoo --profile full [slug ...]`` (``make weights``) trains what the recipes name and
ships each model as it finishes (:mod:`purify_lib.weights`).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from . import cache, data, evaluate, results, weights
from .defenses import aegan, defensegan, transforms
from .profiles import PROFILE_NAMES
from .recipes import apegan as apegan_recipes
from .recipes import apeganpp as apeganpp_recipes
from .recipes import aegan as aegan_recipes
from .recipes import classifiers as classifier_recipes
from .recipes import gandef as gandef_recipes
from .recipes import isogan as isogan_recipes
from .recipes.base import Recipe, build, clean_score, seconds
from .runtime import progress

__all__ = ["Defense", "Entry", "ENTRIES", "entry", "slugs", "recipe", "identity", "model", "load", "load_all",
           "ship", "main"]

CLASSIFIER = "vanilla"
"""The slug of the classifier behind every purifier: chapter 1's LeNet (chapter 5's "Vanilla")."""


@dataclass
class Defense:
    """One defended system: ``classifier(purifier(x))``, with what the adaptive attacks need to know.

    Attributes:
        slug, name, chapter: the zoo's slug, the display name, and the chapter (notebook stem).
        classifier: returns logits.
        purifier: images → images in front of the classifier (``None``: the classifier is the defense).
        surrogate: BPDA's differentiable stand-in for the purifier (``None``: the identity).
        detector: a :class:`purify_lib.defenses.gandef.GanDef` pair whose discriminator rejects inputs.
        generator: ``(decoder, encoder)`` of a purifier that projects onto a generator's range, for the latent
            attack (encoder ``None``: start from the purifier's own projection).
        random: the purifier draws randomness per call (EOT applies).
        max_images: a cap on the images attacked, for defenses whose every forward pass is a search.
        costly: every forward pass runs an optimisation (a search or a TV solve): below the ``paper``
            profile the leaderboard attacks it at the headline budget only and skips AutoAttack.
        train_seconds, trained_now: what training cost, and the cache entries this load had to compute.
        identity: the trained models behind its numbers, by slug (its own, or the one it uses, and the zoo's
            classifier): each one's recipe and code hash at the profile it was loaded at (:func:`identity`);
            empty for a defense not loaded from the zoo.
    """

    slug: str
    name: str
    chapter: str
    classifier: nn.Module
    purifier: nn.Module | None = None
    surrogate: nn.Module | None = None
    detector: nn.Module | None = None
    generator: tuple[nn.Module, nn.Module | None] | None = None
    random: bool = False
    max_images: int | None = None
    costly: bool = False
    train_seconds: float = 0.0
    trained_now: list[str] = field(default_factory=list)
    identity: dict[str, str] = field(default_factory=dict)


Make = Callable[[nn.Module, dict[str, Any], nn.Module, str], dict[str, Any]]
"""``make(module, history, classifier, profile) -> Defense fields``: how a trained model becomes a defense."""


@dataclass(frozen=True)
class Entry:
    """A model of the zoo: ``recipe(profile)`` trains it (``None``: nothing to train), ``make`` turns it into
    a defense, ``profiles`` are the profiles it exists at; ``uses`` names the entry whose trained model this
    defense shares (GanDef-Comb is GanDef's pair with its discriminator as a rejector), shipped once."""

    slug: str
    name: str
    chapter: str
    recipe: Callable[[str], Recipe] | None
    make: Make
    profiles: tuple[str, ...] = PROFILE_NAMES
    uses: str | None = None


def _classifier(module: nn.Module, history: dict, classifier: nn.Module, profile: str) -> dict[str, Any]:
    return dict(classifier=module)


def _gandef(module: nn.Module, history: dict, classifier: nn.Module, profile: str) -> dict[str, Any]:
    return dict(classifier=module.classifier)


def _gandef_comb(module: nn.Module, history: dict, classifier: nn.Module, profile: str) -> dict[str, Any]:
    return dict(classifier=module.classifier, detector=module)


def _purifier(module: nn.Module, history: dict, classifier: nn.Module, profile: str) -> dict[str, Any]:
    return dict(purifier=module["g"] if isinstance(module, nn.ModuleDict) else module)


def _aegan_rs(module: nn.Module, history: dict, classifier: nn.Module, profile: str) -> dict[str, Any]:
    rs = aegan.AEGANPurifier(module.encoder, module.decoder, steps=aegan_recipes.SEARCH_STEPS,
                             lr=float(history["search_lr"]))  # the step its recipe chose on validation
    return dict(purifier=rs, surrogate=module, generator=(rs.decoder, rs.encoder), costly=True)


def _defensegan(stand_in: bool) -> Make:
    def make(module: nn.Module, history: dict, classifier: nn.Module, profile: str) -> dict[str, Any]:
        generator = module.decoder if stand_in else module["g"]
        purifier = defensegan.DefenseGANPurifier(generator, steps=aegan_recipes.DEFENSEGAN_STEPS[profile],
                                                 restarts=10, init="uniform" if stand_in else "normal")
        # EOT over Defense-GAN's random starts multiplies its 2,000-pass search: paper profile only
        return dict(purifier=purifier, generator=(generator, None), random=profile == "paper", costly=True,
                    max_images={"smoke": 4, "quick": 10, "full": 200, "paper": 200}[profile])

    return make


def _transform(build_it: Callable[[str], nn.Module], **extra: Any) -> Make:
    def make(module: nn.Module, history: dict, classifier: nn.Module, profile: str) -> dict[str, Any]:
        return dict(purifier=build_it(profile), **extra)

    return make


def _tv_min(profile: str) -> nn.Module:
    steps = {"smoke": 50, "quick": 100, "full": 300, "paper": 300}[profile]
    return transforms.TVMinimisation(keep=0.3, lam=0.05, norm=2, steps=steps, seed=0)


def _method(method: str) -> Callable[[str], Recipe]:
    return lambda profile: gandef_recipes.Method.at(profile, method=method)


ENTRIES: tuple[Entry, ...] = (
    Entry(CLASSIFIER, "undefended LeNet", "05_gandef", classifier_recipes.LeNet.at, _classifier),
    Entry("pure_pgd", "PGD adversarial training", "05_gandef", _method("Pure PGD"), _classifier),
    Entry("mix_pgd", "Mix PGD", "05_gandef", _method("Mix PGD"), _classifier),
    Entry("logit_pairing", "adversarial logit pairing", "05_gandef", _method("Logit Pairing"), _classifier),
    Entry("gandef", "GanDef", "05_gandef", _method("GanDef"), _gandef),
    Entry("gandef_comb", "GanDef-Comb (rejects)", "05_gandef", None, _gandef_comb, uses="gandef"),
    Entry("apegan", "APE-GAN", "02_apegan", apegan_recipes.APEGANRecipe.at, _purifier),
    Entry("apeganpp_mnist_cnn", "APE-GAN++", "03_apeganpp", apeganpp_recipes.APEGANPP.at, _purifier),
    Entry("isogan", "IsoGAN", "06_isogan", isogan_recipes.Chosen.at, _purifier),
    Entry("magnet", "MagNet (reformer only)", "04_aegan", aegan_recipes.MagNet.at, _purifier),
    Entry("aegan_rs", "AE-GAN+rs", "04_aegan", aegan_recipes.AEGANRS.at, _aegan_rs),
    Entry("defensegan", "Defense-GAN", "04_aegan", aegan_recipes.DefenseGAN.at, _defensegan(stand_in=False),
          profiles=aegan_recipes.DEFENSEGAN_PROFILES),
    Entry("defensegan_aegan_decoder", "AE-GAN's decoder searched from random starts (Defense-GAN stand-in)",
          "04_aegan", None, _defensegan(stand_in=True),
          profiles=tuple(p for p in PROFILE_NAMES if p not in aegan_recipes.DEFENSEGAN_PROFILES),
          uses="aegan_rs"),
    Entry(
        "bit_depth", "bit depth (1 bit)", "03_apeganpp", None, _transform(lambda p: transforms.BitDepth(1))
    ),
    Entry("spatial_smoothing", "median smoothing (2×2)", "03_apeganpp", None,
          _transform(lambda p: transforms.MedianSmoothing(2))),
    Entry("tv_min", "TV minimisation", "03_apeganpp", None, _transform(_tv_min, random=True, costly=True)),
)
_BY_SLUG = {e.slug: e for e in ENTRIES}


def entry(slug: str) -> Entry:
    """The zoo's entry for ``slug`` (a ``KeyError`` naming every slug otherwise)."""
    if slug not in _BY_SLUG:
        raise KeyError(f"unknown model {slug!r}: the zoo has {', '.join(_BY_SLUG)}")
    return _BY_SLUG[slug]


def slugs(profile: str, trained: bool = False) -> list[str]:
    """The slugs that exist at ``profile`` (``trained``: only those with a model of their own to ship)."""
    return [e.slug for e in ENTRIES if profile in e.profiles and (not trained or e.recipe is not None)]


def recipe(slug: str, profile: str) -> Recipe | None:
    """The recipe that trains ``slug`` at ``profile`` (``None`` for a defense with nothing to train)."""
    e = entry(slug)
    if profile not in e.profiles:
        raise ValueError(f"{slug} does not exist at profile {profile!r} (only at {', '.join(e.profiles)})")
    return None if e.recipe is None else e.recipe(profile)


def identity(slug: str, profile: str) -> dict[str, str]:
    """The trained models behind the numbers of ``slug`` at ``profile`` behind the zoo's classifier: for the
    classifier and the model ``slug`` trains (or uses), ``"<recipe hash>-<code hash>"``. Equal identities: the
    same weights."""
    models = {CLASSIFIER, entry(slug).uses or slug}
    return {s: f"{r.recipe_hash()}-{r.code_hash()}" for s in sorted(models)
            if (r := recipe(s, profile)) is not None}


def model(slug: str, profile: str) -> tuple[nn.Module, dict[str, Any]]:
    """The trained module of ``slug`` at ``profile`` and its history, through :func:`purify_lib.recipes.build`
    (shipped weights, else the cache, else training now; a warning says why shipped weights were not used)."""
    e = entry(slug)
    if e.uses is not None:
        recipe(slug, profile)  # exists at this profile, or a clear error
        return model(e.uses, profile)
    r = recipe(slug, profile)
    if r is None:
        return nn.Identity(), {}
    reason = weights.explain(slug, profile, r.key(), r.recipe_hash(), r.code_hash())
    if reason is not None:
        warnings.warn(f"{slug}: {reason}; not used", stacklevel=2)
    return build(r)


def _make(e: Entry, module: nn.Module, history: dict[str, Any], classifier: nn.Module,
          profile: str) -> Defense:
    fields = e.make(module, history, classifier, profile)
    return Defense(e.slug, e.name, e.chapter, **{"classifier": classifier, **fields},
                   train_seconds=seconds(history))


def load(slug: str, profile: str, classifier: nn.Module | None = None) -> Defense:
    """The defense ``slug`` at ``profile``, ready to use (its classifier is the zoo's :data:`CLASSIFIER`,
    or ``classifier`` when given, unless the model is a classifier itself). ``trained_now`` lists the cache
    entries this call computed."""
    before = len(cache.computed())
    zoo_classifier = classifier is None
    if zoo_classifier:
        classifier, _ = model(CLASSIFIER, profile)
    module, history = model(slug, profile)
    d = _make(entry(slug), module, history, classifier, profile)
    d.trained_now = cache.computed()[before:]
    if zoo_classifier:
        d.identity = identity(slug, profile)
    return d


def load_all(profile: str, only: Sequence[str] | None = None) -> dict[str, Defense]:
    """Every defense of the zoo at ``profile`` (or the slugs in ``only``), by slug, behind one classifier."""
    classifier, _ = model(CLASSIFIER, profile)
    defenses = {slug: load(slug, profile, classifier)
                for slug in progress(only or slugs(profile), desc="zoo", leave=False)}
    for slug, d in defenses.items():
        d.identity = identity(slug, profile)  # behind the zoo's classifier
    return defenses


def ship(slug: str, profile: str, commit: str | None = None,
         code_hash: str | None = None) -> dict[str, Any] | None:
    """Train ``slug`` at ``profile`` if needed and write its weights and manifest entry; ``None`` when the
    shipped weights already match its recipe and code (or it has nothing to train). ``commit`` and
    ``code_hash``: those of the code this process imported (default: the working tree's now)."""
    r = recipe(slug, profile)
    if r is None:
        return None
    recipe_hash, key = r.recipe_hash(), r.key()
    code_hash = code_hash or r.code_hash()
    e = weights.entry(slug, profile)
    if e is not None and (e["recipe_hash"], e["code_hash"]) == (recipe_hash, code_hash) \
            and (weights.weights_dir() / e["file"]).exists():
        weights.read(e)  # verified, or a loud error
        return None
    commit = commit or results.git_commit()
    module, history = build(r)
    classifier = module if slug == CLASSIFIER else model(CLASSIFIER, profile)[0]
    made = entry(slug)

    def score(m: nn.Module) -> float:
        d = _make(made, m, history, classifier if slug != CLASSIFIER else m, profile)
        system = d.classifier if d.purifier is None else evaluate.Defended(d.purifier, d.classifier)
        return clean_score(system, r.dataset)

    return weights.save(slug, profile, module, history, recipe=key, recipe_hash=recipe_hash,
                        code_hash=code_hash, score=score, commit=commit, device=results.device_name(),
                        data_source=data.portable(r.data_source()))


def main(argv: Sequence[str] | None = None) -> int:
    """``make weights``: train and ship the models of a profile (all, or the slugs given)."""
    parser = argparse.ArgumentParser(prog="python -m purify_lib.zoo", description=main.__doc__)
    parser.add_argument("--profile", default="full", choices=PROFILE_NAMES)
    parser.add_argument("models", nargs="*", help="slugs (default: every model with a recipe)")
    args = parser.parse_args(argv)
    chosen = args.models or slugs(args.profile, trained=True)
    for slug in chosen:
        entry(slug)
    # the code this process imported, whatever is edited while it trains for hours
    commit = results.git_commit()
    code = {slug: recipe(slug, args.profile).code_hash() for slug in chosen if recipe(slug, args.profile)}
    for slug in progress(chosen, desc=f"weights ({args.profile})"):
        start = time.perf_counter()
        shipped = ship(slug, args.profile, commit, code.get(slug))
        took = time.perf_counter() - start
        if shipped is None:
            print(f"{slug}: up to date", flush=True)
        else:
            print(f"{slug}: {shipped['file']} ({shipped['bytes'] / 2**20:.1f} MiB, {shipped['precision']}), "
                  f"clean accuracy {shipped['clean_accuracy']:.4f}, {took / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
