"""Accuracy of classifiers, with or without a purifier, under attack.

Three threat models, named as in :data:`purify_lib.results.THREATS`:

- ``"none"``: clean accuracy of the (defended) system;
- ``"oblivious"``: the five papers' setting: the attack sees the classifier alone; its adversarial examples
  are then purified and classified. The attacker ignores the defense, so this measures little;
- ``"whitebox"``: the attack sees the whole defended system ``classifier(purifier(x))`` and differentiates
  through it end to end (:class:`Defended`).

BPDA, EOT and other adaptive attacks are built by the chapters: pass a suitable ``attack`` (or a model
wrapper) to :func:`attack_dataset` and score the result with :func:`accuracy`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from purify_lib.checks import check_images, check_labels, check_positive
from purify_lib.results import Results
from purify_lib.train import accuracy, model_device, predict

__all__ = ["Defended", "accuracy", "predict", "attack_dataset", "robust_accuracy", "evaluate_grid", "THREATS"]

Attack = Callable[..., Tensor]
THREATS = ("none", "oblivious", "whitebox")


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

    Batches run on the model's device; the adversarial images come back on ``x``'s device. The model's
    train/eval mode is restored afterwards (attacks run it in eval mode).
    """
    check_images(x)
    check_labels(y, len(x))
    batch_size = int(check_positive(batch_size, "batch_size"))
    device, was_training = model_device(model), model.training
    name = _attack_name(attack)
    out = []
    try:
        for i in tqdm(range(0, len(x), batch_size), desc=desc or name, leave=False):
            xb = x[i:i + batch_size].to(device)
            yb = y[i:i + batch_size].to(device)
            x_adv = attack(model, xb, yb, **params)
            if x_adv.shape != xb.shape:
                raise ValueError(f"attack {name}: expected adversarial images of shape {tuple(xb.shape)}, "
                                 f"got {tuple(x_adv.shape)}")
            out.append(x_adv.detach().to(x.device))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else x.clone()


def robust_accuracy(
    classifier: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: Attack | None = None,
    *,
    purifier: nn.Module | None = None,
    threat: str = "oblivious",
    batch_size: int = 256,
    desc: str | None = None,
    **attack_params: Any,
) -> float:
    """Accuracy in [0, 1] of ``classifier`` (behind ``purifier``, if given) on ``(x, y)`` under ``attack``.

    Args:
        classifier: returns logits.
        x, y: clean images and labels.
        attack: ``attack(model, x, y, **attack_params) -> x_adv``; must be ``None`` for threat ``"none"``.
        purifier: images → images, applied before the classifier; ``None`` for an undefended classifier
            (then ``"oblivious"`` and ``"whitebox"`` coincide).
        threat: ``"none"``, ``"oblivious"`` (craft on the classifier alone, then purify and classify) or
            ``"whitebox"`` (craft on ``Defended(purifier, classifier)``).
        batch_size: images per attack batch (and per evaluation batch).
        desc: progress-bar label (default: the attack's name and the threat).
        **attack_params: passed to the attack (``eps``, ``alpha``, ``steps``, …).
    """
    if threat not in THREATS:
        raise ValueError(f"threat: expected one of {', '.join(THREATS)}, got {threat!r} "
                         "(build BPDA, EOT and other adaptive attacks as an attack or model wrapper)")
    check_images(x)
    check_labels(y, len(x))
    system = classifier if purifier is None else Defended(purifier, classifier)
    if threat == "none":
        if attack is not None or attack_params:
            raise ValueError("threat 'none': expected no attack and no attack parameters")
        return accuracy(system, x, y, batch_size)
    if attack is None:
        raise ValueError(f"threat {threat!r}: expected an attack")
    target = classifier if threat == "oblivious" else system
    name = _attack_name(attack)
    x_adv = attack_dataset(attack, target, x, y, batch_size, desc=desc or f"{name} ({threat})", **attack_params)
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
) -> None:
    """Add one ``accuracy`` row to ``results`` per defense × attack × threat.

    Args:
        attacks: name → ``(attack, params)``; ``params`` may hold ``eps``, which is recorded (0 if absent).
            The clean row (threat ``"none"``) is added once per defense automatically.
        defenses: name → purifier (``None`` for the undefended classifier, whose ``"whitebox"`` rows are
            skipped as they equal ``"oblivious"``).
        threats: the attacked threat models to run, from ``"oblivious"`` and ``"whitebox"``.
    """
    for threat in threats:
        if threat not in THREATS or threat == "none":
            raise ValueError(f"threats: expected 'oblivious' and/or 'whitebox', got {threat!r}")
    n = len(x)
    for defense, purifier in defenses.items():
        clean = robust_accuracy(classifier, x, y, purifier=purifier, threat="none", batch_size=batch_size)
        results.add(table, dataset, classifier_name, defense, "none", "none", 0.0, "accuracy", clean, n)
        for attack_name, (attack, params) in attacks.items():
            for threat in threats:
                if purifier is None and threat == "whitebox":
                    continue
                value = robust_accuracy(classifier, x, y, attack, purifier=purifier, threat=threat,
                                        batch_size=batch_size, desc=f"{defense}: {attack_name} ({threat})",
                                        **params)
                results.add(table, dataset, classifier_name, defense, attack_name, threat,
                            float(params.get("eps", 0.0)), "accuracy", value, n)
