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
correctly, and a clean image only when it accepts it and classifies it correctly.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from torch import Tensor, nn

from .analysis import gandef as gandef_analysis
from . import adaptive, attacks, evaluate, results, zoo
from .checks import check_images, check_labels
from .profiles import Profile
from .runtime import model_device, progress, seed_everything
from .zoo import Defense

__all__ = ["Defense", "BOARD", "Budget", "ATTACK_THREAT", "THREAT_OF", "target", "autoattack_threat", "build",
           "system", "is_masked", "plan", "handled",
           "craft", "evaluate_defense", "evaluate_all", "leaderboard_table", "checks", "board_html",
           "published_value", "check_lines"]

THRESHOLD = 0.5
"""GanDef-Comb's rejection threshold on the discriminator's probability, as in chapter 5."""

ATTACK_THREAT = dict.fromkeys(("latent", "detector_aware", "adaptive", "worst"), "adaptive")
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

    @property
    def label(self) -> str:
        return f"L∞ {self.eps:g}" if self.norm == "linf" else f"L2 {self.eps:g}"


BOARD = ("vanilla", "pure_pgd", "gandef", "gandef_comb", "apegan", "apeganpp_mnist_cnn", "isogan", "magnet",
         "aegan_rs", "defensegan", "defensegan_aegan_decoder", "bit_depth", "spatial_smoothing", "tv_min")
"""The zoo's slugs on the board (those that exist at the profile): every defense of the book, and the
undefended LeNet behind every purifier."""


def build(P: Profile) -> dict[str, Defense]:
    """Every defense of :data:`BOARD` at ``P`` from the zoo (:func:`purify_lib.zoo.load`), by slug."""
    return zoo.load_all(P.name, [slug for slug in BOARD if slug in zoo.slugs(P.name)])


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


def handled(d: Defense, x: Tensor, y: Tensor, adversarial: bool = True) -> Tensor:
    """Per image (bool, on the CPU): whether ``d`` handles the input: classified correctly, or, for a
    detector, rejected when ``adversarial`` (and only accepted-and-correct when not)."""
    check_images(x)
    check_labels(y, len(x))
    correct = evaluate.predict(system(d), x).argmax(1).cpu() == y.cpu()
    if d.detector is None:
        return correct
    rejected = gandef_analysis.scores(d.detector, x)[1] > THRESHOLD
    return correct | rejected if adversarial else correct & ~rejected


def _pgd(target: nn.Module, x: Tensor, y: Tensor, budget: Budget, desc: str) -> Tensor:
    return evaluate.attack_dataset(attacks.pgd, target, x, y, desc=desc, eps=budget.eps, alpha=budget.eps / 2,
                                   steps=budget.steps, stages=budget.stages, restarts=budget.restarts,
                                   norm=budget.norm)


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
        return adaptive.latent_attack(decoder, d.classifier, x, y, eps=budget.eps, z_init=z0, lr=0.05,
                                      c=100.0, steps=budget.latent_steps, kappa=5.0, norm=budget.norm,
                                      restarts=budget.restarts, spread=0.5,
                                      defense=evaluate.Defended(d.purifier, d.classifier))
    if attack == "detector_aware":
        return evaluate.attack_dataset(gandef_analysis.adaptive_attack, d.detector, x, y, desc=desc,
                                       eps=budget.eps, alpha=budget.eps / 2, steps=budget.steps,
                                       stages=budget.stages, restarts=budget.restarts, threshold=THRESHOLD)
    raise ValueError(f"attack: expected one of oblivious, pgd, bpda, eot, bpda_eot, latent, detector_aware, "
                     f"got {attack!r}")


def evaluate_defense(d: Defense, x: Tensor, y: Tensor, budgets: Sequence[Budget], *,
                     autoattack_budgets: Sequence[Budget] = (), autoattack_n: int = 100,
                     autoattack_attacks: Sequence[str] | None = None,
                     oblivious: Mapping[Budget, Tensor] | None = None, seed: int = 0) -> pd.DataFrame:
    """Every number of ``d``'s leaderboard rows, one row per (budget, column).

    Columns: ``clean`` (budget-free, ε 0), ``oblivious``, each attack of :func:`plan`, ``adaptive`` (per-image
    worst case), and for the budgets in ``autoattack_budgets`` ``autoattack`` (on the first ``autoattack_n``
    images; ``autoattack_attacks`` a subset of its attacks, ``None`` the standard suite) and ``worst``
    (adaptive and AutoAttack together, on those images); plus ``inference_s_per_1000``.
    ``oblivious`` may hand in PGD examples already crafted on the same classifier (by budget).
    Returns a frame with columns defense, attack, threat, eps, norm, value, n.
    """
    x, y = x[:d.max_images], y[:d.max_images]
    seed_everything(seed)
    rows = []

    def add(attack: str, budget: Budget | None, ok: Tensor, threat: str | None = None) -> None:
        eps, norm = (0.0, "none") if budget is None else (budget.eps, budget.norm)
        threat = threat or THREAT_OF.get(attack) or ATTACK_THREAT.get(attack, "none")
        rows.append(dict(defense=d.slug, attack=attack, threat=threat, eps=eps,
                         norm=norm, value=ok.float().mean().item(), n=len(ok)))

    start = time.perf_counter()
    clean = handled(d, x, y, adversarial=False)
    rows.append(dict(defense=d.slug, attack="inference_s_per_1000", threat="none", eps=0.0, norm="none",
                     value=1000 * (time.perf_counter() - start) / len(x), n=len(x)))
    add("clean", None, clean)
    masked = is_masked(d, x[:8])
    for budget in budgets:
        worst = None
        for attack in plan(d, masked, budget.norm):
            given = oblivious.get(budget) if oblivious and attack == "oblivious" else None
            x_adv = given[:len(x)] if given is not None else craft(d, attack, x, y, budget)
            ok = handled(d, x_adv, y)
            add(attack, budget, ok)
            worst = ok if worst is None else worst & ok
        add("adaptive", budget, worst)
        if budget in autoattack_budgets:
            k = min(autoattack_n, len(x))
            threat = autoattack_threat(d, masked)
            x_aa = attacks.autoattack(target(d, threat), x[:k], y[:k], eps=budget.eps, norm=budget.norm,
                                      attacks_to_run=autoattack_attacks, seed=seed)
            ok = handled(d, x_aa, y[:k])
            add("autoattack", budget, ok, threat)
            add("worst", budget, ok & worst[:k])
            if k < len(x):  # our adaptive number on AutoAttack's images, for :func:`checks`
                add("adaptive_aa_images", budget, worst[:k])
    return pd.DataFrame(rows)


def evaluate_all(defenses: Mapping[str, Defense], x: Tensor, y: Tensor, budgets: Sequence[Budget], *,
                 headline: Budget, full: bool, autoattack_budgets: Sequence[Budget] = (),
                 autoattack_n: int = 100, autoattack_attacks: Sequence[str] | None = None,
                 seed: int = 0) -> pd.DataFrame:
    """:func:`evaluate_defense` for every defense on the same images, the oblivious examples crafted once per
    classifier and shared. Unless ``full``, a ``costly`` defense is attacked at ``headline`` only and without
    AutoAttack."""
    shared: dict[int, dict[Budget, Tensor]] = {}
    frames = []
    for d in progress(defenses.values(), desc="leaderboard"):
        mine = list(budgets) if full or not d.costly else [headline]
        oblivious = shared.setdefault(id(d.classifier), {})
        for budget in mine:
            if budget not in oblivious and d.purifier is not None:
                oblivious[budget] = craft(d, "oblivious", x, y, budget)
        frames.append(evaluate_defense(
            d, x, y, mine, autoattack_budgets=[b for b in autoattack_budgets if full or not d.costly],
            autoattack_n=autoattack_n, autoattack_attacks=autoattack_attacks, oblivious=oblivious, seed=seed))
    return pd.concat(frames, ignore_index=True)


def leaderboard_table(frame: pd.DataFrame, defenses: Mapping[str, Defense], eps: float,
                      norm: str = "linf") -> pd.DataFrame:
    """One row per defense at one budget, sorted by the worst-case accuracy (adaptive where AutoAttack did
    not run): clean, oblivious, adaptive, AutoAttack and worst accuracy, the oblivious − worst gap, and the
    cost (inference seconds per 1,000 images, training seconds)."""
    rows = []
    for slug, d in defenses.items():
        f = frame[frame["defense"] == slug]

        def value(attack: str, at_eps: float = eps, at_norm: str = norm) -> float:
            hit = f[(f["attack"] == attack) & (f["eps"] == at_eps) & (f["norm"] == at_norm)]["value"]
            return float(hit.iloc[0]) if len(hit) else float("nan")

        worst = value("worst")
        headline = value("adaptive") if pd.isna(worst) else worst
        rows.append({"defense": d.name, "chapter": d.chapter, "clean": value("clean", 0.0, "none"),
                     "oblivious": value("oblivious"), "adaptive": value("adaptive"),
                     "AutoAttack": value("autoattack"), "worst": headline,
                     "gap": value("oblivious") - headline,
                     "s / 1000 images": value("inference_s_per_1000", 0.0, "none"),
                     "training s": d.train_seconds,
                     "n": int(f[(f["attack"] == "adaptive") & (f["eps"] == eps)]["n"].iloc[0])
                     if len(f[(f["attack"] == "adaptive") & (f["eps"] == eps)]) else 0})
    return pd.DataFrame(rows).sort_values("worst", ascending=False, kind="stable").reset_index(drop=True)


def checks(frame: pd.DataFrame, defenses: Mapping[str, Defense], probe: Tensor,
           tolerance: float = 0.02) -> pd.DataFrame:
    """Per defense and budget: adaptive ≤ oblivious, and (for defenses whose gradient is not masked)
    our adaptive accuracy ≤ AutoAttack's + ``tolerance`` on the same images: if AutoAttack leaves fewer
    images standing than that, our own attacks were weak there."""
    rows = []
    for slug, d in defenses.items():
        f = frame[frame["defense"] == slug]
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
    the chapter's (accuracy, images) or ``None``) for the PGD-trained model under chapter 5's attack."""
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
    se = (max(here * (1 - here), 0.01) / n) ** 0.5
    verdict = "consistent" if abs(here - chapter[0]) <= 3 * se else "**not consistent**"
    lines.append(f"- PGD-trained LeNet under chapter 5's PGD-1: {here:.1%} on these {n} images, "
                 f"{chapter[0]:.1%} on chapter 5's first {chapter[1]}: {verdict} (3 standard errors: "
                 f"{300 * se:.1f} points).")
    return lines
