"""The leaderboard (chapter 7): every defense of the book under one evaluator.

The same MNIST test images, the same classifier behind every purifier (chapter 5's vanilla LeNet, which is
chapter 1's), the same budgets (L∞ ε 0.1, 0.2, 0.3 and one L2 ε). Per defense and budget, one row each:

* ``clean``: accuracy on the clean images.
* ``oblivious``: the papers' setting: PGD crafted on the classifier alone, scored on the defended system
  (for a defense that *is* a classifier, this is already the white-box attack).
* the adaptive attacks that fit the defense (:func:`plan`): white-box PGD through the whole system, BPDA
  (through a differentiable surrogate where the defense has one), BPDA with EOT for random purifiers, the
  latent attack for generator-based purifiers, the detector-aware attack for GanDef-Comb.
* ``adaptive``: per image, the worst case over the oblivious examples and every adaptive attack: an image
  counts as robust only if it survives all of them.
* ``autoattack``: the reference AutoAttack (``pyautoattack``, Croce & Hein's code) through the system, BPDA-
  wrapped where the system's gradient is masked.
* ``worst``: per image, adaptive and AutoAttack together: the headline number.

A detector (GanDef-Comb) counts an adversarial image as handled when it rejects it or classifies it
correctly, and a clean image only when it accepts it and classifies it correctly: "correct or rejected", at
the deployed threshold and at the one that rejects 5% of the clean images (:func:`metrics`). That is not
accuracy, so detectors get a table of their own (:func:`detector_table`), never ranked against the board.
:func:`convergence` reruns the adaptive attacks at twice the effort.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from .analysis import gandef as gandef_analysis
from . import adaptive, attacks, cache, evaluate, results, stats, zoo
from .defenses import aegan, defensegan, transforms
from .checks import check_images, check_int, check_labels
from .profiles import Profile
from .runtime import model_device, progress, seed_everything
from .zoo import Defense

__all__ = ["Defense", "BOARD", "Budget", "ATTACK_THREAT", "THREAT_OF", "target", "autoattack_threat", "build",
           "absent", "system", "is_masked", "plan", "handled",
           "craft", "evaluate_defense", "evaluate_all", "leaderboard_table", "detector_table", "checks",
           "board_html", "metrics", "FPR", "convergence", "converged_rows", "doubled", "CONVERGED_POINTS",
           "MAX_DOUBLINGS", "pgd_params", "properties", "published_value", "check_lines"]

THRESHOLD = 0.5
"""GanDef-Comb's rejection threshold on the discriminator's probability, as in chapter 5."""

ATTACK_THREAT = dict.fromkeys(("latent", "detector_aware", "adaptive", "adaptive_previous", "worst",
                               "worst_previous"), "adaptive")
"""The threat model (``results.THREATS``) each leaderboard column is recorded under, besides the gradient
attacks' (:data:`THREAT_OF`) and AutoAttack's (:func:`autoattack_threat`)."""


@dataclass(frozen=True)
class Budget:
    """An attack budget and the attacks' effort: ``norm`` is ``"linf"`` or ``"l2"``."""

    eps: float
    norm: str = "linf"
    steps: int = 40
    stages: int = 4  # PGD's step-size schedule: from eps / 2, halved after each quarter of the steps
    restarts: int = 1
    eot_samples: int = 4
    latent_steps: int = 100
    hinge_steps: int = 200  # the detector-aware attack's joint-hinge stage (chapter 5's adaptive attack)

    @property
    def label(self) -> str:
        return f"L∞ {self.eps:g}" if self.norm == "linf" else f"L2 {self.eps:g}"


BOARD = ("vanilla", "pure_pgd", "gandef", "gandef_comb", "apegan", "apeganpp_mnist_cnn", "isogan", "magnet",
         "aegan_rs", "defensegan", "bit_depth", "spatial_smoothing", "tv_min")
"""The zoo's slugs on the board (those that exist at the profile): every defense of the book, and the
undefended LeNet behind every purifier. A stand-in is not a defense of the book: at ``quick``, where
Defense-GAN's own generator is not trained, Defense-GAN is absent (chapter 4 measures its stand-in)."""


def build(P: Profile) -> dict[str, Defense]:
    """Every defense of :data:`BOARD` at ``P`` from the zoo (:func:`purify_lib.zoo.load`), by slug."""
    return zoo.load_all(P.name, [slug for slug in BOARD if slug in zoo.slugs(P.name)])


def absent(P: Profile) -> dict[str, tuple[str, ...]]:
    """The defenses of :data:`BOARD` that do not exist at ``P``: display name → the profiles they exist at."""
    return {zoo.entry(slug).name: zoo.entry(slug).profiles for slug in BOARD if slug not in zoo.slugs(P.name)}


def system(d: Defense) -> nn.Module:
    """The defended system as one model (images → logits)."""
    return d.classifier if d.purifier is None else evaluate.Defended(d.purifier, d.classifier)


def is_masked(d: Defense, probe: Tensor) -> bool:
    """Whether white-box gradients through ``d``'s purifier are missing or useless at ``probe``."""
    if d.purifier is None:
        return False
    return adaptive.gradient_is_masked(d.purifier, probe.to(model_device(d.classifier)))


def plan(d: Defense, masked: bool, norm: str = "linf") -> list[str]:
    """The attacks whose per-image worst case is ``d``'s adaptive accuracy (always starting with the
    oblivious examples): white-box PGD where gradients flow, BPDA through the purifier, EOT over a random
    purifier, the latent attack where there is a generator, the detector-aware attack where a detector
    rejects (L∞ only, as chapter 5 defines it)."""
    found = ["oblivious"]
    if d.purifier is not None:
        found += ["bpda"] if masked else ["pgd", "bpda"]
        if d.random:
            found.append("bpda_eot" if masked else "eot")
    if d.generator is not None:
        found.append("latent")
    if d.detector is not None and norm == "linf":
        found.append("detector_aware")
    return found


def properties(d: Defense, probe: Tensor) -> dict[str, object]:
    """What the evaluation checklist (:mod:`purify_lib.checklist`) needs to know about ``d``."""
    return dict(name=d.name, chapter=d.chapter, purifier=d.purifier is not None, masked=is_masked(d, probe),
                random=d.random, generator=d.generator is not None, detector=d.detector is not None,
                costly=d.costly)


def handled(d: Defense, x: Tensor, y: Tensor, adversarial: bool = True,
            threshold: float = THRESHOLD) -> Tensor:
    """Per image (bool, on the CPU): whether ``d`` handles the input: classified correctly, or, for a
    detector, rejected (discriminator probability above ``threshold``) when ``adversarial`` (and only
    accepted-and-correct when not)."""
    check_images(x)
    check_labels(y, len(x))
    correct = evaluate.predict(system(d), x).argmax(1).cpu() == y.cpu()
    if d.detector is None:
        return correct
    rejected = gandef_analysis.scores(d.detector, x)[1] > threshold
    return correct | rejected if adversarial else correct & ~rejected


FPR = 0.05
"""The clean false-positive rate of a detector's second operating point: its threshold rejects this share of
the board's clean images (chosen on those test images, as an operating point, never on attacked ones)."""


def metrics(d: Defense, x: Tensor) -> dict[str, float]:
    """The metrics ``d`` is scored under, with their thresholds: ``accuracy`` for a classifier or purifier;
    for a detector ``correct_or_rejected`` at the deployed threshold and ``correct_or_rejected_at_5fpr`` at
    the one that rejects at most :data:`FPR` of the clean images ``x`` (never ranked against plain
    accuracy)."""
    if d.detector is None:
        return {"accuracy": THRESHOLD}
    clean = gandef_analysis.scores(d.detector, x)[1].double()
    return {"correct_or_rejected": THRESHOLD,
            "correct_or_rejected_at_5fpr": float(torch.quantile(clean, 1 - FPR, interpolation="higher"))}


def pgd_params(budget: Budget) -> dict[str, object]:
    """The board's PGD at ``budget``: from ``eps / 2``, the step halved over ``stages``, with restarts."""
    return dict(eps=budget.eps, alpha=budget.eps / 2, steps=budget.steps, stages=budget.stages,
                restarts=budget.restarts, norm=budget.norm)


def _pgd(target: nn.Module, x: Tensor, y: Tensor, budget: Budget, desc: str) -> Tensor:
    return evaluate.attack_dataset(attacks.pgd, target, x, y, desc=desc, **pgd_params(budget))


THREAT_OF = {"oblivious": "oblivious", "pgd": "whitebox", "bpda": "bpda", "eot": "eot",
             "bpda_eot": "bpda_eot"}
"""The threat model (:func:`purify_lib.evaluate.defended_system`) each gradient attack of :func:`plan` runs
under."""


def target(d: Defense, threat: str, budget: Budget | None = None) -> nn.Module:
    """What an attack under ``threat`` differentiates: :func:`purify_lib.evaluate.defended_system` of ``d``
    (BPDA through ``d``'s surrogate, EOT over the budget's samples)."""
    return evaluate.defended_system(d.classifier, d.purifier, threat, backward=d.surrogate,
                                    eot_samples=budget.eot_samples if budget is not None else 1)


def autoattack_threat(d: Defense, masked: bool) -> str:
    """The threat AutoAttack runs under: through BPDA where the purifier's gradient is masked, else white-box
    (GanDef-Comb: the classifier, which AutoAttack attacks without seeing the detector that scores it)."""
    return "bpda" if d.purifier is not None and masked else "whitebox"


def craft(d: Defense, attack: str, x: Tensor, y: Tensor, budget: Budget) -> Tensor:
    """Adversarial images of ``x`` for defense ``d`` by one attack of :func:`plan`."""
    desc = f"{d.slug} {attack} {budget.label}"
    if attack in THREAT_OF:
        return _pgd(target(d, THREAT_OF[attack], budget), x, y, budget, desc)
    if attack == "latent":
        decoder, encoder = d.generator
        z0 = evaluate.predict(encoder, x) if encoder is not None else d.purifier.project(x).z
        # aimed at what the defense does with its input: its differentiable path where it has one (AE-GAN+rs
        # re-encodes, A ∘ G ∘ F), else the classifier (Defense-GAN should return the range point unchanged)
        aim = nn.Sequential(d.surrogate, d.classifier) if d.surrogate is not None else d.classifier
        return adaptive.latent_attack(decoder, aim, x, y, eps=budget.eps, z_init=z0, lr=0.05,
                                      c=100.0, steps=budget.latent_steps, kappa=5.0, norm=budget.norm,
                                      restarts=budget.restarts, spread=0.5,
                                      defense=evaluate.Defended(d.purifier, d.classifier))
    if attack == "detector_aware":
        return evaluate.attack_dataset(gandef_analysis.adaptive_attack, d.detector, x, y, desc=desc,
                                       eps=budget.eps, alpha=budget.eps / 2, steps=budget.steps,
                                       stages=budget.stages, restarts=budget.restarts, threshold=THRESHOLD,
                                       hinge_steps=budget.hinge_steps)
    raise ValueError(f"attack: expected one of oblivious, pgd, bpda, eot, bpda_eot, latent, detector_aware, "
                     f"got {attack!r}")


CONVERGED_POINTS = 1.0
"""The attacks have converged when doubling their effort moves the worst case by at most this many points."""
MAX_DOUBLINGS = 2
"""How often :func:`evaluate_defense` doubles the effort at most (up to 4× the budget's)."""


def doubled(budget: Budget) -> Budget:
    """``budget`` with twice the steps, restarts, EOT samples, latent steps and joint-hinge steps."""
    return dataclasses.replace(budget, steps=2 * budget.steps, restarts=2 * budget.restarts,
                               eot_samples=2 * budget.eot_samples, latent_steps=2 * budget.latent_steps,
                               hinge_steps=2 * budget.hinge_steps)


def _moved(before: Tensor, after: Tensor) -> float:
    """How many points the share of ``True`` moved between two per-image masks."""
    return abs(100 * (after.float().mean().item() - before.float().mean().item()))


def _rerun(d: Defense, attack: str, x: Tensor, y: Tensor, budget: Budget, worst: dict[str, Tensor],
           score: Callable[[Tensor, Tensor], dict[str, Tensor]]) -> dict[str, Tensor]:
    """The per-image worst case ``worst`` after one more attack at ``budget``, crafted only on the images some
    metric still counts as handled: an image already broken stays broken, so the others need no attack."""
    alive = torch.stack(list(worst.values())).any(0).nonzero().flatten()
    if len(alive) == 0:
        return worst
    ok = score(craft(d, attack, x[alive], y[alive], budget), y[alive])
    out = {m: w.clone() for m, w in worst.items()}
    for m in out:
        out[m][alive] &= ok[m]
    return out


def evaluate_defense(d: Defense, x: Tensor, y: Tensor, budgets: Sequence[Budget], *,
                     autoattack_budgets: Sequence[Budget] = (), autoattack_n: int = 100,
                     autoattack_attacks: Sequence[str] | None = None,
                     oblivious: Mapping[Budget, Tensor] | None = None, converge: Sequence[Budget] = (),
                     max_doublings: int = MAX_DOUBLINGS, seed: int = 0) -> pd.DataFrame:
    """Every number of ``d``'s leaderboard rows, one row per (budget, column).

    Columns: ``clean`` (budget-free, ε 0), ``oblivious``, each attack of :func:`plan`, ``adaptive`` (per-image
    worst case), and for the budgets in ``autoattack_budgets`` ``autoattack`` (on the first ``autoattack_n``
    images; ``autoattack_attacks`` a subset of its attacks, ``None`` the standard suite) and ``worst``
    (adaptive and AutoAttack together, on those images); plus ``inference_s_per_1000``.
    ``oblivious`` may hand in PGD examples already crafted on the same classifier (by budget).

    For the budgets in ``converge`` the effort rises until the attacks have converged: every attack of the
    plan runs again at twice the effort (:func:`doubled`: steps, restarts, EOT samples, latent and hinge
    steps) on the images still standing, and ``adaptive`` becomes the per-image worst case over every
    effort, until a doubling moves the board's number (``worst`` where AutoAttack ran, else ``adaptive``) by
    at most :data:`CONVERGED_POINTS` or after ``max_doublings``. Rows ``adaptive_previous`` and
    ``worst_previous`` (before the last doubling) and ``effort`` (metric ``multiplier``: the last effort, in
    multiples of the budget's) record it for :func:`convergence`.
    Returns a frame with columns defense, attack, threat, eps, norm, metric (:func:`metrics`), value, n.
    """
    x, y = x[:d.max_images], y[:d.max_images]
    seed_everything(seed)
    rows = []

    scored = metrics(d, x)

    def add(attack: str, budget: Budget | None, ok: Mapping[str, Tensor], threat: str | None = None) -> None:
        eps, norm = (0.0, "none") if budget is None else (budget.eps, budget.norm)
        threat = threat or THREAT_OF.get(attack) or ATTACK_THREAT.get(attack, "none")
        rows.extend(dict(defense=d.slug, attack=attack, threat=threat, eps=eps, norm=norm, metric=metric,
                         value=mask.float().mean().item(), n=len(mask)) for metric, mask in ok.items())

    def score(x_in: Tensor, y_in: Tensor, adversarial: bool = True) -> dict[str, Tensor]:
        return {metric: handled(d, x_in, y_in, adversarial, t) for metric, t in scored.items()}

    start = time.perf_counter()
    clean = score(x, y, adversarial=False)
    rows.append(dict(defense=d.slug, attack="inference_s_per_1000", threat="none", eps=0.0, norm="none",
                     metric="seconds", value=1000 * (time.perf_counter() - start) / len(x), n=len(x)))
    add("clean", None, clean)
    masked = is_masked(d, x[:8])
    for budget in budgets:
        worst: dict[str, Tensor] = {}
        for attack in plan(d, masked, budget.norm):
            given = oblivious.get(budget) if oblivious and attack == "oblivious" else None
            x_adv = given[:len(x)] if given is not None else craft(d, attack, x, y, budget)
            ok = score(x_adv, y)
            add(attack, budget, ok)
            worst = {m: ok[m] & worst[m] if m in worst else ok[m] for m in ok}
        aa: dict[str, Tensor] | None = None
        k = min(autoattack_n, len(x))
        if budget in autoattack_budgets:
            threat = autoattack_threat(d, masked)
            x_aa = attacks.autoattack(target(d, threat), x[:k], y[:k], eps=budget.eps, norm=budget.norm,
                                      attacks_to_run=autoattack_attacks, seed=seed)
            aa = score(x_aa, y[:k])
            add("autoattack", budget, aa, threat)

        def headline(w: dict[str, Tensor]) -> dict[str, Tensor]:
            """The board's number per image: ``w``, and AutoAttack where it ran (on its images)."""
            return w if aa is None else {m: aa[m] & w[m][:k] for m in aa}

        if budget in converge and any(worst[m].any() for m in worst):
            effort, multiplier = budget, 1
            for _ in range(check_int(max_doublings, "max_doublings", 1)):
                effort, multiplier, previous = doubled(effort), 2 * multiplier, worst
                for attack in plan(d, masked, budget.norm):  # the oblivious one too: for a classifier it is
                    worst = _rerun(d, attack, x, y, effort, worst, score)  # the white-box attack
                before, after = headline(previous), headline(worst)
                if all(_moved(before[m], after[m]) <= CONVERGED_POINTS for m in after):
                    break
            add("adaptive_previous", budget, previous)
            if aa is not None:
                add("worst_previous", budget, headline(previous))
            rows.append(dict(defense=d.slug, attack="effort", threat="adaptive", eps=budget.eps,
                             norm=budget.norm, metric="multiplier", value=float(multiplier), n=len(x)))
        add("adaptive", budget, worst)
        if aa is not None:
            add("worst", budget, headline(worst))
            if k < len(x):  # our adaptive number on AutoAttack's images, for :func:`checks`
                add("adaptive_aa_images", budget, {m: w[:k] for m, w in worst.items()})
    return pd.DataFrame(rows)


STORED_CODE = (adaptive, attacks, evaluate, gandef_analysis, zoo, aegan, defensegan, transforms)
"""The modules whose source a stored defense's rows depend on besides this one (:func:`evaluate_all`)."""


def _stored(store: Path, d: Defense, key: Mapping[str, object]) -> pd.DataFrame | None:
    """``d``'s rows kept in ``store`` by a run with the same ``key``, else ``None``."""
    rows, kept = store / f"{d.slug}.csv", store / f"{d.slug}.json"
    if not (rows.is_file() and kept.is_file()) or json.loads(kept.read_text()) != key:
        return None
    return pd.read_csv(rows, keep_default_na=False, na_values=[""])


def _store(store: Path, d: Defense, key: Mapping[str, object], frame: pd.DataFrame) -> None:
    store.mkdir(parents=True, exist_ok=True)
    cache.atomic_write(store / f"{d.slug}.csv", frame.to_csv(index=False).encode())
    cache.atomic_write(store / f"{d.slug}.json", (json.dumps(key, indent=1, sort_keys=True) + "\n").encode())


def evaluate_all(defenses: Mapping[str, Defense], x: Tensor, y: Tensor, budgets: Sequence[Budget], *,
                 headline: Budget, full: bool, autoattack_budgets: Sequence[Budget] = (),
                 autoattack_n: int = 100, autoattack_attacks: Sequence[str] | None = None,
                 converge: bool = True, seed: int = 0, store: Path | None = None) -> pd.DataFrame:
    """:func:`evaluate_defense` for every defense on the same images, the oblivious examples crafted once per
    classifier and shared, the effort raised at ``headline`` until the attacks converge (``converge``).
    Unless ``full``, a ``costly`` defense is attacked at ``headline`` only, once, without AutoAttack.

    ``store``: a folder that keeps each defense's rows as they are finished (``<slug>.csv``, and in
    ``<slug>.json`` what they depend on: the images, every setting above, the trained models behind the
    defense (:attr:`Defense.identity`) and the evaluation code's source). A defense whose kept rows depend on
    exactly what this call has is read back, not attacked again, so a run of hours that stops resumes with
    the next defense. A defense with no identity (not loaded from the zoo) is never kept."""
    source = [inspect.getsource(m) for m in (inspect.getmodule(evaluate_all), *STORED_CODE)]
    settings = dict(images=cache.fingerprint(x, y), n=len(x),
                    budgets=[dataclasses.asdict(b) for b in budgets], headline=dataclasses.asdict(headline),
                    full=full,
                    autoattack_budgets=[dataclasses.asdict(b) for b in autoattack_budgets],
                    autoattack_n=autoattack_n, autoattack_attacks=list(autoattack_attacks or []),
                    converge=converge, seed=seed, code=cache.key_hash({"source": source}))
    shared: dict[int, dict[Budget, Tensor]] = {}
    frames = []
    for d in progress(defenses.values(), desc="leaderboard"):
        key = {**settings, "defense": d.slug, "models": d.identity}
        kept = _stored(store, d, key) if store is not None and d.identity else None
        if kept is not None:
            frames.append(kept)
            continue
        mine = list(budgets) if full or not d.costly else [headline]
        oblivious = shared.setdefault(id(d.classifier), {})
        for budget in mine:
            if budget not in oblivious and d.purifier is not None:
                oblivious[budget] = craft(d, "oblivious", x, y, budget)
        frames.append(evaluate_defense(
            d, x, y, mine, autoattack_budgets=[b for b in autoattack_budgets if full or not d.costly],
            autoattack_n=autoattack_n, autoattack_attacks=autoattack_attacks, oblivious=oblivious,
            converge=[headline] if converge and (full or not d.costly) else [], seed=seed))
        if store is not None and d.identity:
            _store(store, d, key, frames[-1])
    return pd.concat(frames, ignore_index=True)


def _columns(f: pd.DataFrame, eps: float, norm: str, metric: str) -> dict[str, float]:
    """One defense's board columns at one budget and metric (NaN where an attack did not run)."""
    def value(attack: str, at_eps: float = eps, at_norm: str = norm, at_metric: str = metric) -> float:
        hit = f[(f["attack"] == attack) & (f["eps"] == at_eps) & (f["norm"] == at_norm)
                & (f["metric"] == at_metric)]["value"]
        return float(hit.iloc[0]) if len(hit) else float("nan")

    worst = value("worst")
    headline, attack = (value("adaptive"), "adaptive") if pd.isna(worst) else (worst, "worst")
    n = f[(f["attack"] == attack) & (f["eps"] == eps) & (f["norm"] == norm) & (f["metric"] == metric)]["n"]
    n = int(n.iloc[0]) if len(n) else 0
    low, high = stats.wilson(headline, n) if n else (float("nan"), float("nan"))
    return {"clean": value("clean", 0.0, "none"), "oblivious": value("oblivious"),
            "adaptive": value("adaptive"), "AutoAttack": value("autoattack"), "worst": headline,
            "worst 95%": f"[{low:.2f}, {high:.2f}]",
            "n": n, "gap": value("oblivious") - headline,
            "s / 1000 images": value("inference_s_per_1000", 0.0, "none", "seconds")}


def leaderboard_table(frame: pd.DataFrame, defenses: Mapping[str, Defense], eps: float,
                      norm: str = "linf") -> pd.DataFrame:
    """One row per classifier or purifier at one budget, sorted by the worst-case accuracy (adaptive where
    AutoAttack did not run): clean, oblivious, adaptive, AutoAttack and worst accuracy, the oblivious − worst
    gap, the cost (inference seconds per 1,000 images, training seconds) and ``n``. Detectors are scored
    differently ("correct or rejected") and are not ranked here: :func:`detector_table`."""
    rows = [{"defense": d.name, "chapter": d.chapter,
             **_columns(frame[frame["defense"] == slug], eps, norm, "accuracy"),
             "training s": d.train_seconds}
            for slug, d in defenses.items() if d.detector is None]
    return pd.DataFrame(rows).sort_values("worst", ascending=False, kind="stable").reset_index(drop=True)


def detector_table(frame: pd.DataFrame, defenses: Mapping[str, Defense], eps: float,
                   norm: str = "linf") -> pd.DataFrame:
    """One row per detector and operating point at one budget: the share of inputs it handles (clean:
    accepted and classified correctly; adversarial: rejected or classified correctly) under each attack
    column, at the deployed threshold and at the one that rejects :data:`FPR` of the clean images."""
    rows = [{"defense": d.name, "operating point": point,
             **_columns(frame[frame["defense"] == slug], eps, norm, metric)}
            for slug, d in defenses.items() if d.detector is not None
            for metric, point in (("correct_or_rejected", f"threshold {THRESHOLD:g}"),
                                  ("correct_or_rejected_at_5fpr", f"{FPR:.0%} of clean rejected"))]
    return pd.DataFrame(rows)


def checks(frame: pd.DataFrame, defenses: Mapping[str, Defense], probe: Tensor,
           tolerance: float = 0.02) -> pd.DataFrame:
    """Per defense and budget: adaptive ≤ oblivious, and (for defenses whose gradient is not masked)
    our adaptive accuracy ≤ AutoAttack's + ``tolerance`` on the same images: if AutoAttack leaves fewer
    images standing than that, our own attacks were weak there. Detectors at their deployed threshold."""
    rows = []
    for slug, d in defenses.items():
        f = frame[(frame["defense"] == slug) & frame["metric"].isin(["accuracy", "correct_or_rejected"])]
        differentiable = not is_masked(d, probe)
        for (eps, norm), g in f[f["norm"] != "none"].groupby(["eps", "norm"]):
            v = g.set_index("attack")["value"]
            aa, ours = v.get("autoattack"), v.get("adaptive_aa_images", v["adaptive"])
            rows.append(dict(defense=slug, eps=eps, norm=norm,
                             adaptive_le_oblivious=bool(v["adaptive"] <= v["oblivious"]),
                             differentiable=differentiable,
                             autoattack_within=None if aa is None or not differentiable
                             else bool(ours <= aa + tolerance)))
    return pd.DataFrame(rows)


def convergence(frame: pd.DataFrame, defenses: Mapping[str, Defense], budget: Budget) -> pd.DataFrame:
    """Whether the adaptive attacks converged at ``budget`` (:func:`evaluate_defense` with ``converge``).

    One row per defense and metric (:func:`converged_rows`): the effort reached (in multiples of the
    budget's), the board's number (``worst`` where AutoAttack ran, else ``adaptive``) before the last doubling
    and after it, the change in points, and ``converged`` when it moved by at most :data:`CONVERGED_POINTS`.
    """
    rows = []
    for slug, d in defenses.items():
        f = frame[(frame["defense"] == slug) & (frame["eps"] == budget.eps) & (frame["norm"] == budget.norm)]
        rows += [dict(defense=slug, **row) for row in converged_rows(f, d.costly)]
    return pd.DataFrame(rows)


def converged_rows(rows: pd.DataFrame, costly: bool) -> list[dict[str, object]]:
    """:func:`convergence` for one defense at one budget, from its rows (columns attack, metric, value, n), a
    dict per metric. A defense with no image left standing is converged without a rerun; one not rerun (a
    ``costly`` defense outside ``full``) says so."""
    v = rows.set_index(["attack", "metric"])["value"]
    out = []
    for metric in (m for m in rows["metric"].unique() if m != "multiplier"):
        head = "worst" if ("worst", metric) in v.index else "adaptive"
        if (head, metric) not in v.index:
            continue
        final = float(v[head, metric])
        n = int(rows[(rows["attack"] == head) & (rows["metric"] == metric)]["n"].iloc[0])
        row = dict(metric=metric, column=head, effort=None, before=None, final=final, change_points=None,
                   converged=None, n=n, note="")
        if (f"{head}_previous", metric) in v.index:
            before = float(v[f"{head}_previous", metric])
            change = 100 * (final - before)
            row.update(effort=float(v["effort", "multiplier"]), before=before, change_points=change,
                       converged=abs(change) <= CONVERGED_POINTS + 1e-9)
        elif final == 0:
            row.update(effort=1.0, before=0.0, change_points=0.0, converged=True,
                       note="nothing left to break")
        else:
            row["note"] = "not rerun: every forward pass is a search" if costly else "not rerun"
        out.append(row)
    return out


def board_html(frame: pd.DataFrame, defenses: Mapping[str, Defense], budget: Budget) -> str:
    """:func:`leaderboard_table` at ``budget`` as an HTML table whose defenses link to their chapters."""
    t = leaderboard_table(frame, defenses, budget.eps, budget.norm)
    chapter = {d.name: d.chapter for d in defenses.values()}
    t["defense"] = [f'<a href="{chapter[name]}.html">{name}</a>' for name in t["defense"]]
    return t.drop(columns="chapter").to_html(index=False, escape=False, float_format="{:.3f}".format,
                                              na_rep="—")


def published_value(chapter: str, profile: str, **where: object) -> tuple[float, int] | None:
    """The value and image count of the one row of ``chapter``'s committed results at ``profile`` matching
    ``where`` (column=value), or ``None`` when that chapter has no such results."""
    found = results.load(chapter, profile)
    if found is None:
        return None
    f = found[0]
    for column, value in where.items():
        f = f[f[column] == value]
    return (float(f["value"].iloc[0]), int(f["n"].iloc[0])) if len(f) == 1 else None


def check_lines(checked: pd.DataFrame, consistency: tuple[float, int, tuple[float, int] | None]) -> list[str]:
    """The checks in words: ``checked`` from :func:`checks`; ``consistency`` is (our accuracy, our images,
    the chapter's (accuracy, images) or ``None``) for the PGD-trained model under chapter 5's attack, rerun
    on the chapter's images with its seed: consistent within 2 points."""
    bad = checked[~checked["adaptive_le_oblivious"]]
    weak = sorted(set(checked[checked["autoattack_within"].eq(False)]["defense"]))
    order = ("every defense and budget." if bad.empty
             else f"**not** every defense: fails for {', '.join(bad['defense'])}.")
    lines = ["- Adaptive ≤ oblivious for " + order,
             "- AutoAttack within 2 points of our adaptive attacks on every differentiable defense: "
             + ("yes." if not weak else f"**no** on {', '.join(weak)}: our attacks were weak there.")]
    here, n, chapter = consistency
    if chapter is None:
        lines.append("- Chapter 5 has no results at this profile yet; here the PGD-trained LeNet keeps "
                     f"{here:.1%}.")
        return lines
    same = n == chapter[1]
    verdict = ("consistent" if same and abs(here - chapter[0]) <= 0.02 else
               "**not consistent**" if same else "**not comparable** (different images)")
    lines.append(f"- PGD-trained LeNet under chapter 5's PGD-1, on the same {n} images and seed: {here:.1%} "
                 f"here, {chapter[0]:.1%} in chapter 5 ({chapter[1]} images): {verdict} (within 2 points).")
    return lines
