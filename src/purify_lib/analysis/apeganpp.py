"""Chapter 3's analysis of APE-GAN++: examples crafted once on the source classifier and scored on any
defended system, C&W's distortion, and the training-stability summary of Figs. 4-5.

The paper's method itself (networks, losses, step, training) is :mod:`purify_lib.defenses.apeganpp`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import cw_l2
from ..evaluate import Attack, accuracy, attack_dataset, predict
from ..norms import flip_distances
from ..results import Results

__all__ = ["craft", "score", "cw_distortion", "accuracy_mask", "stability_summary"]


def craft(
    source: nn.Module,
    x: Tensor,
    y: Tensor,
    attacks: Mapping[str, tuple[Attack, Mapping[str, Any], int]],
    *,
    batch_size: int = 256,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Adversarial examples crafted **once** on ``source`` (the paper's classifier S) for every attack.

    ``attacks``: name → ``(attack, params, n)``: the attack runs on the first ``n`` images. Returns name →
    ``(x_adv, y)`` for those images; score any defended system on them with :func:`score`.
    """
    found = {}
    for name, (attack, params, n) in attacks.items():
        xs, ys = x[:n], y[:n]
        found[name] = (attack_dataset(attack, source, xs, ys, batch_size, desc=name, **params), ys)
    return found


def score(results: Results, examples: Mapping[str, tuple[Tensor, Tensor]], systems: Mapping[str, nn.Module],
          *, table: str | Mapping[str, str], dataset: str, classifier: str, eps: Mapping[str, float],
          threat: str = "oblivious", batch_size: int = 500) -> None:
    """Add one ``accuracy`` row per system × attack: the system's accuracy on the examples of :func:`craft`.

    ``systems``: defense name → the defended model (e.g. ``Defended(G, S)``, or ``S`` itself for "none");
    ``table``: one table label, or defense name → table label; ``eps``: attack name → its ε (0 if absent).
    """
    for defense, system in systems.items():
        label = table if isinstance(table, str) else table[defense]
        for attack, (x_adv, y) in examples.items():
            results.add(table=label, dataset=dataset, classifier=classifier, defense=defense, attack=attack,
                        threat=threat, eps=float(eps.get(attack, 0.0)), metric="accuracy",
                        value=accuracy(system, x_adv, y, batch_size), n=len(y))


def cw_distortion(target: nn.Module, system: nn.Module, x: Tensor, y: Tensor, **cw: Any) -> dict[str, float]:
    """C&W-L2 (:func:`purify_lib.attacks.cw_l2`, parameters ``cw``) crafted on ``target``, scored on
    ``system``.

    Returns ``accuracy`` of ``system`` on the examples, ``n_fooled``: how many images ``system`` classified
    right before and wrong after, and, when there are any, ``median_l2``: their median L2 distortion.
    """
    x_adv = attack_dataset(cw_l2, target, x, y, desc="C&W-L2", **cw)
    l2 = flip_distances(system, x, y, x_adv)
    found = {"accuracy": accuracy_mask(system, x_adv, y).float().mean().item(), "n_fooled": float(len(l2))}
    if len(l2):
        found["median_l2"] = l2.median().item()
    return found


def accuracy_mask(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> Tensor:
    """Per image: whether ``model`` classifies it as ``y`` (a boolean tensor on the CPU)."""
    return predict(model, x, batch_size).argmax(1).cpu() == y.cpu()


def stability_summary(history: Mapping[str, Any], fraction: float = 0.1) -> dict[str, float]:
    """The numbers behind the loss curves of figs 4–5, from a history with per-step lists
    (``history["steps"]``).

    - ``adv_grad_first`` / ``adv_grad_last``: the median of ``adv_grad_norm`` (the adversarial term's gradient
      reaching the generator) over the first / last ``fraction`` of the steps, and ``adv_grad_min`` its
      smallest value: a vanishing gradient shows as a last (or minimum) value far below the first;
    - ``g_grad_first`` / ``g_grad_last``: the same for the generator's whole loss;
    - ``g_loss_jitter`` / ``d_loss_jitter``: the median absolute change of the loss between consecutive steps,
      as a fraction of its spread over the run (10th to 90th percentile): scale-free, so a BCE loss and a
      Wasserstein loss can be compared; large values mean a noisy, oscillating curve.
    """
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction: expected a number in (0, 0.5], got {fraction!r}")
    steps = history.get("steps") if isinstance(history, Mapping) else None
    needed = ("adv_grad_norm", "g_grad_norm", "g_loss", "d_loss")
    if not steps or any(len(steps.get(k, ())) < 2 for k in needed):
        raise ValueError(f"history: expected per-step lists {', '.join(needed)} (two steps or more)")
    out: dict[str, float] = {}
    for name, key in (("adv_grad", "adv_grad_norm"), ("g_grad", "g_grad_norm")):
        values = torch.tensor(steps[key], dtype=torch.float64)
        k = max(1, int(len(values) * fraction))
        out[f"{name}_first"] = values[:k].quantile(0.5).item()
        out[f"{name}_last"] = values[-k:].quantile(0.5).item()
        out[f"{name}_min"] = values.min().item()
    for key in ("g_loss", "d_loss"):
        values = torch.tensor(steps[key], dtype=torch.float64)
        spread = (values.quantile(0.9) - values.quantile(0.1)).item()
        out[f"{key}_jitter"] = values.diff().abs().quantile(0.5).item() / spread if spread > 0 else 0.0
    return out
