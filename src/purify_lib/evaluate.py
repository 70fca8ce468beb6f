"""Evaluation in one place: predictions, accuracy, and accuracy under attack with or without a purifier.

The threat models :func:`robust_accuracy` runs, named as in :data:`purify_lib.results.THREATS`:

- ``"none"``: clean accuracy of the (defended) system;
- ``"oblivious"``: the five papers' setting: the attack sees the classifier alone; its adversarial examples
  are then purified and classified. The attacker ignores the defense, so this measures little;
- ``"whitebox"``: the attack sees the whole defended system ``classifier(purifier(x))`` and differentiates
  through it end to end (:class:`Defended`). A purifier whose gradient is masked is refused: zero gradients
  look like robustness;
- ``"bpda"``: as white-box, with the purifier's backward pass replaced by the identity or a differentiable
  surrogate (:func:`purify_lib.adaptive.bpda`);
- ``"eot"`` and ``"bpda_eot"``: the same on logits averaged over the defense's random draws
  (:func:`purify_lib.adaptive.eot`).

Latent-space and detector-aware attacks (``"adaptive"``) are in :mod:`purify_lib.adaptive`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from purify_lib import adaptive, stats
from purify_lib.checks import check_images, check_labels, check_positive
from purify_lib.results import THREATS, Results
from purify_lib.runtime import eval_mode, model_device, progress

__all__ = ["Defended", "accuracy", "predict", "attack_dataset", "robust_accuracy", "evaluate_grid",
           "RUNNABLE", "CALIBRATED", "success_rate", "calibration_row", "calibration_rows",
           "calibration_status", "CALIBRATED_STATUS", "BUDGET_LIMITED", "WEAK"]

Attack = Callable[..., Tensor]
RUNNABLE = THREATS[:6]
"""The threat models :func:`robust_accuracy` runs itself: none, oblivious, whitebox, bpda, eot, bpda_eot."""
CALIBRATED = 0.99
"""The success rate an attack must reach on the undefended classifier's correctly classified images, at the
largest budget a chapter uses it, before its numbers on a defense mean anything (:func:`calibration_row`):
an attack that fails on a classifier with no defense at all says nothing when it then fails on a defense."""


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """The model's logits for every image in ``x``: batched, without gradients, in eval mode.

    Batches go to the model's device; the logits come back on ``x``'s device, in float32. Every
    submodule's train/eval mode is restored afterwards.
    """
    check_images(x)
    check_positive(batch_size, "batch_size")
    device = model_device(model)
    with eval_mode(model), torch.no_grad():
        out = [model(x[i:i + batch_size].to(device)).float().to(x.device)
               for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, 0, device=x.device)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """The fraction of ``x`` that ``model`` classifies as ``y`` (in [0, 1])."""
    check_images(x)
    check_labels(y, len(x))
    if len(x) == 0:
        raise ValueError("x: expected at least one image, got 0")
    return (predict(model, x, batch_size).argmax(1).cpu() == y.cpu()).float().mean().item()


class Defended(nn.Module):
    """The defended system ``classifier(purifier(x))`` as one differentiable module.

    Gradients flow through the purifier, so any attack given a ``Defended`` is a white-box attack on the
    whole defense. ``train()``/``eval()`` reach both parts.
    """

    def __init__(self, purifier: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.purifier = purifier
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.purifier(x))


def _attack_name(attack: Attack) -> str:
    """A readable name for an attack function or a ``functools.partial`` of one."""
    return getattr(attack, "__name__", None) or getattr(getattr(attack, "func", None), "__name__", "attack")


def attack_dataset(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256,
                   desc: str | None = None, **params: Any) -> Tensor:
    """Craft ``attack(model, xb, yb, **params)`` batch by batch over ``(x, y)``, with a progress bar.

    Batches run on the model's device; the adversarial images come back on ``x``'s device. Every
    submodule's train/eval mode is restored afterwards (attacks run the model in eval mode).
    """
    check_images(x)
    check_labels(y, len(x))
    batch_size = int(check_positive(batch_size, "batch_size"))
    device = model_device(model)
    name = _attack_name(attack)
    out = []
    with eval_mode(model):
        for i in progress(range(0, len(x), batch_size), desc=desc or name, leave=False):
            xb = x[i:i + batch_size].to(device)
            yb = y[i:i + batch_size].to(device)
            x_adv = attack(model, xb, yb, **params)
            if x_adv.shape != xb.shape:
                raise ValueError(f"attack {name}: expected adversarial images of shape {tuple(xb.shape)}, "
                                 f"got {tuple(x_adv.shape)}")
            out.append(x_adv.detach().to(x.device))
    return torch.cat(out) if out else x.clone()


def defended_system(classifier: nn.Module, purifier: nn.Module | None, threat: str, *,
                    backward: nn.Module | None = None, eot_samples: int = 20,
                    probe: Tensor | None = None) -> nn.Module:
    """The model an attack under ``threat`` differentiates (see the module docstring).

    ``probe`` (a few images) is used to refuse a white-box or EOT attack through a purifier whose gradient is
    masked (:func:`purify_lib.adaptive.check_differentiable`): use ``"bpda"`` / ``"bpda_eot"`` there.
    """
    if threat not in RUNNABLE or threat == "none":
        raise ValueError(f"threat: expected one of {', '.join(RUNNABLE[1:])}, got {threat!r}")
    if threat == "oblivious" or purifier is None:
        system = classifier
    elif threat in ("bpda", "bpda_eot"):
        system = Defended(adaptive.bpda(purifier, backward), classifier)
    else:
        if probe is not None:
            adaptive.check_differentiable(purifier, probe)
        system = Defended(purifier, classifier)
    if threat in ("eot", "bpda_eot"):
        system = adaptive.eot(system, eot_samples)
    return system


def robust_accuracy(
    classifier: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: Attack | None = None,
    *,
    purifier: nn.Module | None = None,
    threat: str = "oblivious",
    batch_size: int = 256,
    backward: nn.Module | None = None,
    eot_samples: int = 20,
    desc: str | None = None,
    **attack_params: Any,
) -> float:
    """Accuracy in [0, 1] of ``classifier`` (behind ``purifier``, if given) on ``(x, y)`` under ``attack``.

    Args:
        classifier: returns logits.
        x, y: clean images and labels.
        attack: ``attack(model, x, y, **attack_params) -> x_adv``; must be ``None`` for threat ``"none"``.
        purifier: images → images, applied before the classifier; ``None`` for an undefended classifier
            (then every attacked threat is the plain white-box attack on the classifier).
        threat: one of :data:`RUNNABLE` (see the module docstring).
        batch_size: images per attack batch (and per evaluation batch).
        backward: BPDA's differentiable surrogate for the purifier (default: the identity).
        eot_samples: random draws averaged by ``"eot"`` and ``"bpda_eot"``.
        desc: progress-bar label (default: the attack's name and the threat).
        **attack_params: passed to the attack (``eps``, ``alpha``, ``steps``, …).

    The adversarial images are always scored on the real defended system, one random draw per image.
    """
    if threat not in RUNNABLE:
        raise ValueError(f"threat: expected one of {', '.join(RUNNABLE)}, got {threat!r} "
                         "(latent-space and detector-aware attacks: see purify_lib.adaptive)")
    check_images(x)
    check_labels(y, len(x))
    system = classifier if purifier is None else Defended(purifier, classifier)
    if threat == "none":
        if attack is not None or attack_params:
            raise ValueError("threat 'none': expected no attack and no attack parameters")
        return accuracy(system, x, y, batch_size)
    if attack is None:
        raise ValueError(f"threat {threat!r}: expected an attack")
    target = defended_system(classifier, purifier, threat, backward=backward, eot_samples=eot_samples,
                             probe=x[:8].to(model_device(classifier)))
    name = _attack_name(attack)
    x_adv = attack_dataset(attack, target, x, y, batch_size, desc=desc or f"{name} ({threat})",
                           **attack_params)
    return accuracy(system, x_adv, y, batch_size)


def evaluate_grid(
    results: Results,
    *,
    table: str,
    dataset: str,
    classifier_name: str,
    classifier: nn.Module,
    x: Tensor,
    y: Tensor,
    attacks: Mapping[str, tuple[Attack, Mapping[str, Any]]],
    defenses: Mapping[str, nn.Module | None],
    threats: Sequence[str] = ("oblivious", "whitebox"),
    batch_size: int = 256,
    eot_samples: int = 20,
    clean: bool = True,
) -> dict[str, Tensor]:
    """Add one ``accuracy`` row to ``results`` per defense × attack × threat.

    Args:
        attacks: name → ``(attack, params)``; ``params`` may hold ``eps``, which is recorded (0 if absent).
            The clean row (threat ``"none"``) is added once per defense automatically.
        defenses: name → purifier (``None`` for the undefended classifier, which is attacked once, as
            ``"whitebox"``: every threat model is the same attack on it).
        threats: the attacked threat models to run (from :data:`RUNNABLE`). A threat that does not fit a
            purifier raises (e.g. ``"whitebox"`` through a non-differentiable one): choose per defense.
        eot_samples: random draws for ``"eot"`` and ``"bpda_eot"``.
        clean: also add each defense's clean-accuracy row (threat ``"none"``); turn it off on all but one
            call when a table is filled by several calls (one per ε, say).

    Returns:
        attack name → the examples crafted on the bare classifier, where any were needed: crafted once and
        shared by the undefended classifier's row and every purifier's ``"oblivious"`` row (and reusable,
        e.g. for :func:`calibration_row`).
    """
    for threat in threats:
        if threat not in RUNNABLE or threat == "none":
            raise ValueError(f"threats: expected attacked threat models from {', '.join(RUNNABLE[1:])}, "
                             f"got {threat!r}")
    check_images(x)
    check_labels(y, len(x))
    n = len(x)
    common = dict(table=table, dataset=dataset, classifier=classifier_name, n=n)
    bare: dict[str, Tensor] = {}
    for defense, purifier in defenses.items():
        system = classifier if purifier is None else Defended(purifier, classifier)
        if clean:
            results.add(**common, defense=defense, attack="none", threat="none", eps=0.0, metric="accuracy",
                        value=accuracy(system, x, y, batch_size))
        for attack_name, (attack, params) in attacks.items():
            for threat in (["whitebox"] if purifier is None else threats):
                if purifier is None or threat == "oblivious":  # the same attack on the same classifier
                    if attack_name not in bare:
                        bare[attack_name] = attack_dataset(attack, classifier, x, y, batch_size,
                                                           desc=f"{attack_name} (classifier)", **params)
                    value = accuracy(system, bare[attack_name], y, batch_size)
                else:
                    value = robust_accuracy(classifier, x, y, attack, purifier=purifier, threat=threat,
                                            batch_size=batch_size, eot_samples=eot_samples,
                                            desc=f"{defense}: {attack_name} ({threat})", **params)
                results.add(**common, defense=defense, attack=attack_name, threat=threat,
                            eps=float(params.get("eps", 0.0)), metric="accuracy", value=value)
    return bare


def success_rate(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor,
                 batch_size: int = 512) -> tuple[float, int]:
    """``(success, n)``: the fraction of the ``n`` images of ``(x, y)`` that ``model`` classifies correctly
    whose adversarial version in ``x_adv`` it gets wrong: an attack's calibration when ``model`` is the
    undefended classifier; NaN when ``n`` is 0."""
    check_images(x_adv, "x_adv")
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv: expected shape {tuple(x.shape)} like x, got {tuple(x_adv.shape)}")
    correct = predict(model, x, batch_size).argmax(1).cpu() == y.cpu()
    n = int(correct.sum())
    if n == 0:
        return float("nan"), 0
    fooled = predict(model, x_adv, batch_size).argmax(1).cpu() != y.cpu()
    return (fooled & correct).sum().item() / n, n


def calibration_row(results: Results, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, *, dataset: str,
                    classifier: str, attack: str, eps: float = 0.0) -> bool:
    """Add the ``success_rate`` row of examples ``x_adv`` already crafted on the undefended ``model`` (table
    ``calibration``, defense ``none``; :func:`success_rate`) and return whether it reaches
    :data:`CALIBRATED`. Nothing is added when the model gets none of ``x`` right."""
    success, n = success_rate(model, x, y, x_adv)
    if n:
        results.add(table="calibration", dataset=dataset, classifier=classifier, defense="none",
                    attack=attack, threat="whitebox", eps=float(eps), metric="success_rate", value=success,
                    n=n)
    return n > 0 and success >= CALIBRATED


def calibration_rows(results: Results, *, dataset: str, classifier_name: str, model: nn.Module, x: Tensor,
                     y: Tensor, attacks: Mapping[str, tuple[Attack, Mapping[str, Any]]],
                     batch_size: int = 256) -> list[str]:
    """Craft every attack (name → ``(attack, params)`` at its largest budget) on the undefended ``model``
    and add its :func:`calibration_row` to ``results``.

    Returns the names of the attacks below :data:`CALIBRATED` (or not calibrated at all: the model got no
    image right); :func:`purify_lib.results.compare` marks every row they produced in ``dataset``.
    """
    failed = []
    for name, (attack, params) in attacks.items():
        x_adv = attack_dataset(attack, model, x, y, batch_size, desc=f"calibrate {name}", **params)
        if not calibration_row(results, model, x, y, x_adv, dataset=dataset, classifier=classifier_name,
                               attack=name, eps=float(params.get("eps", 0.0))):
            failed.append(name)
    return failed


CALIBRATED_STATUS, BUDGET_LIMITED, WEAK = "calibrated", "budget-limited", "weak"


def calibration_status(success: float, n: int, reference: float | None = None,
                       n_reference: int | None = None) -> str:
    """How to read an attack's calibration (success ``success`` on ``n`` correct images):
    :data:`CALIBRATED_STATUS` at :data:`CALIBRATED` or above; below it, :data:`BUDGET_LIMITED` when an
    independent ``reference`` attack on the same images (e.g. AutoAttack's APGD-CE, success ``reference`` on
    ``n_reference``) is not ahead of it beyond Newcombe's interval (the images left are beyond the budget,
    not beyond the attack); else :data:`WEAK` (also without a reference)."""
    if success >= CALIBRATED:
        return CALIBRATED_STATUS
    if reference is None or n_reference is None:
        return WEAK
    ahead = stats.ahead_by(success, n, reference, n_reference, 0.0) == stats.HOLDS
    return WEAK if ahead else BUDGET_LIMITED
