"""Chapter 5's analysis of GanDef: the discriminator's scores, GanDef-Comb's metrics and threshold sweep,
the overall-accuracy lines of Fig. 4 and their crossover, and the detector-aware attack on GanDef-Comb.

The paper's method itself (networks, losses, step, training) is :mod:`purify_lib.defenses.gandef`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import classifiers, stats
from ..adaptive import detector_aware_loss, joint_hinge_loss, worst_per_image
from ..attacks import pgd
from ..checks import check_images, check_labels, check_positive
from ..data import info
from ..defenses.gandef import GanDef, LogitDiscriminator, gandef_step
from ..runtime import model_device, seed_everything
from ..train import Adversary, WarmupPGD, run

__all__ = ["HINGE_STEPS", "demo_steps", "scores", "comb_summary", "threshold_sweep", "overall_accuracy",
           "crossover", "worst_case", "adaptive_attack", "table2_verdicts"]


def demo_steps(classifier: str, dataset: str, x: Tensor, y: Tensor, *, gamma: float, lr: float,
               batch_size: int, seed: int = 0, adversary: Adversary | None = None) -> pd.DataFrame:
    """One epoch of the game on a fresh classifier and discriminator, every step's numbers as a table.

    For watching :func:`gandef_step` run (chapter 5); nothing is cached. The default adversary is a 2-step
    PGD at ε 0.3 with step 0.2.
    """
    seed_everything(seed)
    clf = classifiers.build(classifier, dataset)
    disc = LogitDiscriminator(info(dataset).num_classes).to(model_device(clf))
    opt_c, opt_d = torch.optim.Adam(clf.parameters(), lr=lr), torch.optim.Adam(disc.parameters(), lr=1e-3)
    step = gandef_step(
        clf, disc, opt_c, opt_d, adversary=adversary or WarmupPGD(eps=0.3, alpha=0.2, steps=2), gamma=gamma
    )
    history = run(step, (x, y), epochs=1, batch_size=batch_size, modules=[clf, disc], seed=seed,
                  step_history=True, desc="GanDef demo")
    return pd.DataFrame(history["steps"]).rename_axis("step")


def scores(model: GanDef, x: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Predicted labels and ``D``'s probability of "adversarial" for every image in ``x`` (on the CPU)."""
    check_images(x)
    check_positive(batch_size, "batch_size")
    device, was_training = model_device(model), model.training
    model.eval()
    preds, probs = [], []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                logits, d = model(x[i : i + batch_size].to(device))
                preds.append(logits.argmax(1).cpu())
                probs.append(torch.sigmoid(d).cpu())
    finally:
        model.train(was_training)
    return torch.cat(preds), torch.cat(probs)


def _check_scored(pred: Tensor, prob: Tensor, y: Tensor, name: str) -> None:
    check_labels(pred, len(y), f"{name} predictions")
    if not isinstance(prob, Tensor) or prob.shape != (len(y),) or not prob.is_floating_point():
        got = tuple(prob.shape) if isinstance(prob, Tensor) else type(prob).__name__
        raise ValueError(f"{name} probabilities: expected a float tensor of shape ({len(y)},), got {got}")
    if len(y) and (prob.min() < 0 or prob.max() > 1):
        raise ValueError(f"{name} probabilities: expected values in [0, 1]")


def comb_summary(
    y: Tensor, clean: tuple[Tensor, Tensor], adv: tuple[Tensor, Tensor], threshold: float = 0.5
) -> dict[str, float]:
    """Plain and GanDef-Comb accuracies and rejection rates at one threshold.

    Args:
        y: true labels (N).
        clean, adv: ``(predictions, D probabilities)`` for the clean inputs and for their adversarial
            versions (e.g. from :func:`scores`).
        threshold: inputs with ``D`` probability ≥ ``threshold`` are rejected.

    Returns:
        ``clean_acc``, ``adv_acc`` (the classifier alone), ``clean_comb`` (correct and not rejected),
        ``adv_comb`` (correct or rejected), ``clean_reject``, ``adv_reject`` (rejection rates), all in [0, 1].
    """
    check_labels(y, len(y))
    if len(y) == 0:
        raise ValueError("y: expected at least one label, got 0")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: expected a probability in [0, 1], got {threshold!r}")
    _check_scored(*clean, y, "clean")
    _check_scored(*adv, y, "adversarial")
    y = y.cpu()
    ok_clean, rej_clean = clean[0].cpu() == y, clean[1].cpu() >= threshold
    ok_adv, rej_adv = adv[0].cpu() == y, adv[1].cpu() >= threshold
    mean = lambda t: t.float().mean().item()  # noqa: E731
    return dict(clean_acc=mean(ok_clean), adv_acc=mean(ok_adv), clean_comb=mean(ok_clean & ~rej_clean),
                adv_comb=mean(ok_adv | rej_adv), clean_reject=mean(rej_clean), adv_reject=mean(rej_adv))


def threshold_sweep(
    y: Tensor, clean: tuple[Tensor, Tensor], adv: tuple[Tensor, Tensor], thresholds: Sequence[float]
) -> pd.DataFrame:
    """:func:`comb_summary` at each threshold: one row per threshold."""
    return pd.DataFrame(
        [{"threshold": float(t), **comb_summary(y, clean, adv, float(t))} for t in thresholds]
    )


def overall_accuracy(clean_acc: float, adv_acc: float, rho: Sequence[float] | np.ndarray) -> np.ndarray:
    """Accuracy on a test stream whose share of adversarial inputs is ``ρ``: ``(1 − ρ)·clean + ρ·adv``."""
    rho = np.asarray(rho, dtype=float)
    for value, name in ((clean_acc, "clean_acc"), (adv_acc, "adv_acc")):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: expected a fraction in [0, 1], got {value!r}")
    if rho.size == 0 or rho.min() < 0 or rho.max() > 1:
        raise ValueError("rho: expected adversarial ratios in [0, 1]")
    return (1 - rho) * clean_acc + rho * adv_acc


def crossover(
    rho: Sequence[float], ours: Sequence[float], others: Mapping[str, Sequence[float]]
) -> float | None:
    """The smallest ``ρ`` from which ``ours`` is at least as good as the best of ``others`` up to the end.

    Curves are given on a common increasing grid ``rho`` and read as piecewise linear in between. Returns
    ``rho[0]`` when ``ours`` is never worse, ``None`` when it is worse at the last grid point.
    """
    rho, ours = np.asarray(rho, dtype=float), np.asarray(ours, dtype=float)
    if rho.ndim != 1 or len(rho) < 2 or np.any(np.diff(rho) <= 0):
        raise ValueError("rho: expected an increasing grid of at least two ratios")
    if not others:
        raise ValueError("others: expected at least one curve to compare with")
    curves = [np.asarray(c, dtype=float) for c in others.values()]
    if ours.shape != rho.shape or any(c.shape != rho.shape for c in curves):
        raise ValueError(f"curves: expected {len(rho)} values each, one per rho")
    diff = ours - np.max(curves, axis=0)
    if diff[-1] < 0:
        return None
    behind = np.flatnonzero(diff < 0)
    if len(behind) == 0:
        return float(rho[0])
    i = behind[-1]  # last grid point where ours is behind; it is not behind at i + 1
    return float(rho[i] + (rho[i + 1] - rho[i]) * (-diff[i]) / (diff[i + 1] - diff[i]))


def worst_case(model: GanDef, y: Tensor, candidates: Sequence[Tensor], threshold: float = 0.5) -> Tensor:
    """Per example, the candidate adversarial image that is worst for GanDef-Comb.

    The first candidate that is misclassified **and** not rejected (``D`` probability below ``threshold``)
    wins; else the first that is misclassified; else the first candidate.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: expected a probability in [0, 1], got {threshold!r}")
    ranks = []
    for x_adv in candidates:
        pred, prob = scores(model, x_adv)
        wrong = pred != y.cpu()
        ranks.append(wrong.long() + (wrong & (prob < threshold)).long())  # 2: evades, 1: rejected, 0: right
    return worst_per_image(candidates, ranks)


HINGE_STEPS = {"smoke": 8, "quick": 100, "full": 200, "paper": 200}
"""The joint-hinge stage's steps of :func:`adaptive_attack` by profile (chapters 5 and 7)."""


def adaptive_attack(model: GanDef, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int,
                    lambdas: Sequence[float] = (1.0, 10.0), threshold: float = 0.5, restarts: int = 1,
                    stages: int = 1, hinge_steps: int = 200, hinge_stages: int = 4) -> Tensor:
    """Detector-aware PGD on GanDef-Comb: per example the worst case (:func:`worst_case`) over its losses.

    Each ``λ`` in ``lambdas`` runs :func:`purify_lib.attacks.pgd` (``stages``: its step-size schedule) on
    :func:`purify_lib.adaptive.detector_aware_loss`; then ``hinge_steps`` steps (0: none) from ``eps / 2`` in
    ``hinge_stages`` halving stages on :func:`purify_lib.adaptive.joint_hinge_loss` at the deployed
    ``threshold``, all with ``restarts``. Combine the result with other candidates (e.g. the oblivious PGD
    examples) through :func:`worst_case`.
    """
    if not lambdas and not hinge_steps:
        raise ValueError("lambdas, hinge_steps: expected at least one weight or hinge steps")
    candidates = [
        pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, restarts=restarts, stages=stages,
            loss_fn=detector_aware_loss(lam))
        for lam in lambdas
    ]
    if hinge_steps:
        candidates.append(pgd(model, x, y, eps=eps, alpha=eps / 2, steps=hinge_steps, restarts=restarts,
                              stages=hinge_stages, loss_fn=joint_hinge_loss(threshold)))
    return worst_case(model, y, candidates, threshold)


def table2_verdicts(frame: pd.DataFrame, dataset: str, eps: float, where: str = "in this run") -> str:
    """What one run's Table 2 rows (``frame``: a chapter 5 results table) say on ``dataset``, as Markdown
    bullets: the paper's pattern on PGD-1, whether PGD-1 was strong enough beside APGD-CE, the paper's claim
    on the headline (per image the worst case), AutoAttack's APGD-CE and APGD-T together where APGD-T ran,
    and GanDef-Comb's rejections and Comb accuracy. Each verdict on 95% intervals of ``n`` images, the same
    images for every row; ``where`` names the run in the verdicts."""
    rows = frame[(frame["table"] == "table_2") & (frame["dataset"] == dataset)]
    n = int(rows["n"].iloc[0])
    t = rows.set_index(["defense", "attack", "threat", "metric"])["value"]

    def acc(defense: str, attack: str) -> float:
        return float(t[(defense, attack, "whitebox", "accuracy")])

    g, p, v = (acc(d, "pgd1") for d in ("gandef", "pure_pgd", "vanilla"))
    pattern = stats.combine(stats.within(p, n, g, n, 0.05), stats.ahead_by(v, n, g, n, 0.60),
                            stats.ahead_by(v, n, p, n, 0.60))
    aa = {d: acc(d, "apgd_ce") for d in ("gandef", "pure_pgd")}
    strong = ("PGD-1 overstates them: the APGD-CE numbers are the robust accuracy to believe"
              if min(aa["gandef"] - g, aa["pure_pgd"] - p) < -0.02 else "PGD-1 was strong enough")
    w = {d: acc(d, "worst") for d in ("gandef", "mix_pgd", "pure_pgd")}
    headline = stats.combine(stats.within(w["mix_pgd"], n, w["gandef"], n, 0.03),
                             stats.within(w["pure_pgd"], n, w["gandef"], n, 0.05))
    settings = (("none", "none"), ("pgd1", "oblivious"), ("pgd1_detector_aware", "adaptive"))
    rejected = [t[("gandef_comb", a, th, "rejection_rate")] for a, th in settings]
    comb = [t[("gandef_comb", a, th, "comb_accuracy")] for a, th in settings[1:]]
    lines = [
        f"- PGD-1 accuracy: GanDef {g:.1%}, Pure PGD {p:.1%} ({100 * (g - p):+.1f} points), "
        f"vanilla {v:.1%}. Table 2's pattern (GanDef within 5 points of Pure PGD, both at least 60 points "
        f"above vanilla, on 95% intervals of the differences) **{pattern}** {where}.",
        f"- AutoAttack's APGD-CE, same images and ε: GanDef {aa['gandef']:.1%}, Pure PGD "
        f"{aa['pure_pgd']:.1%} ({100 * (aa['gandef'] - g):+.1f} and {100 * (aa['pure_pgd'] - p):+.1f} "
        f"points from PGD-1): {strong}.",
        f"- The paper's claim on the headline (per image the worst case over every attack of Table 2, "
        f"ε = {eps:.3g}): GanDef {w['gandef']:.1%}, Mix PGD {w['mix_pgd']:.1%}, Pure PGD "
        f"{w['pure_pgd']:.1%}; GanDef within 3 points of Mix PGD and within 5 of Pure PGD (on 95% "
        f"intervals of the differences) **{headline}** {where}."]
    if ("pure_pgd", "apgd_ce_t", "whitebox", "accuracy") in t:
        both = {d: acc(d, "apgd_ce_t") for d in ("pure_pgd", "mix_pgd", "gandef")}
        madry = ("" if dataset != "mnist" else " (Madry et al.'s MNIST model: 88.5% under all of AutoAttack, "
                 "Croce and Hein 2020). The PGD-trained LeNet keeping at least 85% "
                 f"**{stats.at_least(both['pure_pgd'], n, 0.85)}** {where}")
        lines.append(f"- AutoAttack's APGD-CE and APGD-T together: Pure PGD {both['pure_pgd']:.1%}, Mix PGD "
                     f"{both['mix_pgd']:.1%}, GanDef {both['gandef']:.1%}{madry}.")
    lines += [f"- At threshold 0.5 the discriminator rejects {rejected[0]:.1%} of clean inputs, "
              f"{rejected[1]:.1%} of the oblivious PGD-1 examples and {rejected[2]:.1%} of the "
              "detector-aware ones.",
              f"- GanDef-Comb on PGD-1 (Comb metric): {comb[0]:.1%} against the oblivious attack, "
              f"{comb[1]:.1%} against the detector-aware one."]
    return "\n".join(lines)
