"""IsoGAN (JIFS 2020, doi 10.3233/JIFS-200280; the paper is unnamed, the book calls it IsoGAN): an APE-GAN
that also denoises **clean** images, tied to the denoised adversarial images by an "isomorphic" loss.

The generator ``G`` sees an adversarial image ``x_adv`` and its clean original ``x``:
``x_fake = G(x_adv)`` and ``x_dec = G(x)``. Its loss is a weighted sum of

* **repair** ``l_xf = MSE(x_fake, x)`` (APE-GAN's pixel loss),
* **recovery** ``l_xd = MSE(x_dec, x)`` (leave clean images alone: the paper's motivation is that APE-GAN
  costs clean accuracy),
* **isomorphic** ``l_df = MSE(x_fake, x_dec)`` (the paper credits its PSNR/SSIM gains to this term),
* **label** ``CE(f(x_fake), y)`` through the frozen classifier ``f`` G is trained with, and
* **gan**: the non-saturating ``−log D(·)`` on ``x_fake`` and ``x_dec``; the discriminator ``D`` learns clean
  images as real and both outputs of ``G`` as fake.

What survives of the paper and what this module chooses:

* The text kept the losses' names and what they compare; equations 3–5, the architecture (Fig. 2) and
  every table number were lost. ``G`` is :class:`~purify_lib.defenses.apegan.APEGAN` and ``D``
  :class:`~purify_lib.defenses.apegan.Discriminator` (BCE), so that against APE-GAN on the same pairs only
  the losses differ.
* The weights are not given: :data:`DEFAULT_WEIGHTS` is our starting point, and chapters choose among a
  small grid on a validation split. A term whose weight is 0 is not computed at all, and with
  ``recovery = isomorphic = 0`` clean images never enter ``G`` (nor ``D``'s fakes): :data:`ABLATION`
  builds the loss up term by term, starting from APE-GAN without its TV term.
* One discriminator update, then one generator update per batch (the paper does not say); Adam 2e-4
  (the paper's rate) with β1 = 0.5 as APE-GAN; the paper's batch is 32.
* Training pairs: FGSM at the paper's multiplier (:data:`EPS_PAPER`) against the classifier, crafted once.

By the triangle inequality ``√l_df ≤ √l_xf + √l_xd``: once repair and recovery are small, the isomorphic
distance is small too, and its *marginal* effect is an empirical question, which the chapter's ablation
tests.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cache import weights_fingerprint
from ..attacks import attack_mode
from ..checks import check_images, check_int, check_labels, check_positive
from ..evaluate import Defended, accuracy
from ..runtime import model_device
from ..train import Loop, Step, run
from .apegan import APEGAN, Discriminator

__all__ = ["TERMS", "DEFAULT_WEIGHTS", "ABLATION", "CHANGED", "EPS_PAPER", "check_weights", "uses_clean",
           "choose", "generator_losses", "isogan_step", "validation_scores", "train_isogan",
           "weights_fingerprint"]

TERMS: tuple[str, ...] = ("repair", "recovery", "isomorphic", "label", "gan")
"""The generator's loss terms, in the order the ablation adds them (the GAN term is always on)."""
DEFAULT_WEIGHTS: dict[str, float] = {"repair": 1.0, "recovery": 1.0, "isomorphic": 1.0, "label": 0.5,
                                     "gan": 0.05}
"""Our starting weights (the paper's equation 3 is lost)."""
ABLATION: dict[str, dict[str, float]] = {
    "repair": {**DEFAULT_WEIGHTS, "recovery": 0.0, "isomorphic": 0.0, "label": 0.0},
    "+recovery": {**DEFAULT_WEIGHTS, "isomorphic": 0.0, "label": 0.0},
    "+isomorphic": {**DEFAULT_WEIGHTS, "label": 0.0},
    "+label": dict(DEFAULT_WEIGHTS),
}
"""The ablation's variants: repair only (APE-GAN without TV), then recovery, isomorphic and label added."""
CHANGED = 0.5 / 255
"""An example counts as changed by its attack when some pixel moved by at least half a grey level."""
EPS_PAPER: dict[str, float] = {"grey": 0.3, "rgb": 0.15}
"""The paper's FGSM "perturbation multiplier" for grey and RGB images, read on the [0, 1] scale (for RGB
images on a [−1, 1] scale it would be 0.075 here)."""


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """``weights`` as a plain dict over :data:`TERMS`, each a finite number ≥ 0 and ``repair`` > 0."""
    if not isinstance(weights, Mapping) or set(weights) != set(TERMS):
        got = sorted(weights) if isinstance(weights, Mapping) else type(weights).__name__
        raise ValueError(f"weights: expected one weight for each of {', '.join(TERMS)}, got {got}")
    out = {k: check_positive(weights[k], f"weights[{k!r}]", allow_zero=True) for k in TERMS}
    check_positive(out["repair"], "weights['repair']")
    return out


def uses_clean(weights: Mapping[str, float]) -> bool:
    """Whether ``G`` must see the clean images: only the recovery and isomorphic terms need ``G(x)``."""
    return weights["recovery"] > 0 or weights["isomorphic"] > 0


def generator_losses(fake: Tensor, clean: Tensor, *, weights: Mapping[str, float], dec: Tensor | None = None,
                     logits: Tensor | None = None, y: Tensor | None = None,
                     d_logits: Tensor | None = None) -> dict[str, Tensor]:
    """The generator's loss terms with a nonzero weight, and their weighted ``total``.

    Args:
        fake: ``G(x_adv)``; clean: ``x``; dec: ``G(x)`` (needed by recovery and isomorphic).
        logits, y: ``f(G(x_adv))`` and the labels (needed by label).
        d_logits: ``D``'s logits on every output of ``G`` (``fake``, then ``dec`` if used; needed by gan).
        weights: one weight per term of :data:`TERMS`; a zero weight leaves its term out entirely.
    """
    weights = check_weights(weights)
    needs = {"recovery": dec, "isomorphic": dec, "label": logits, "gan": d_logits}
    missing = [k for k, v in needs.items() if weights[k] > 0 and v is None]
    if weights["label"] > 0 and y is None:
        missing.append("label (y)")
    if missing:
        raise ValueError(f"generator_losses: the terms {missing} have nonzero weights but no inputs")
    compute = {
        "repair": lambda: F.mse_loss(fake, clean),
        "recovery": lambda: F.mse_loss(dec, clean),
        "isomorphic": lambda: F.mse_loss(fake, dec),
        "label": lambda: F.cross_entropy(logits, y),
        "gan": lambda: F.binary_cross_entropy_with_logits(d_logits, torch.ones_like(d_logits)),
    }
    terms = {k: compute[k]() for k in TERMS if weights[k] > 0}
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    return terms


def isogan_step(generator: APEGAN, discriminator: Discriminator, classifier: nn.Module,
                opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, *,
                weights: Mapping[str, float]) -> Step:
    """IsoGAN's step on a batch ``(clean, adversarial, labels)``: one ``D`` update, then one ``G`` update.

    ``G`` runs on the adversarial and (when a clean term is on) the clean images in one batch. ``D`` learns
    clean images as real and ``G``'s outputs as fake; ``G`` then minimises :func:`generator_losses`. The
    classifier is only read (frozen, eval mode) by the label term. Returns ``d_loss``, ``g_loss`` and each
    active term.
    """
    weights = check_weights(weights)
    with_clean = uses_clean(weights)

    def step(loop: Loop, batch: tuple[Tensor, ...]) -> dict[str, float]:
        clean, adv, y = batch
        inputs = torch.cat([adv, clean]) if with_clean else adv
        with loop.autocast():
            with torch.no_grad():
                fakes = generator(inputs)
            real_logits, fake_logits = discriminator(clean), discriminator(fakes)
            d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                      + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        loop.update(opt_d, d_loss)
        with loop.autocast():
            out = generator(inputs)
            fake, dec = (out[:len(adv)], out[len(adv):]) if with_clean else (out, None)
            logits = classifier(fake).float() if weights["label"] > 0 else None
            d_logits = discriminator(out).float() if weights["gan"] > 0 else None
            losses = generator_losses(fake.float(), clean, weights=weights,
                                      dec=None if dec is None else dec.float(), logits=logits, y=y,
                                      d_logits=d_logits)
        loop.update(opt_g, losses["total"])
        return {"d_loss": d_loss.item(), "g_loss": losses["total"].item(),
                **{k: v.item() for k, v in losses.items() if k != "total"}}

    return step


def _check_triple(x: Tensor, x_adv: Tensor, y: Tensor, names: tuple[str, str, str], channels: int) -> None:
    check_images(x, names[0], channels=channels)
    check_images(x_adv, names[1], channels=channels)
    if x.shape != x_adv.shape:
        raise ValueError(f"{names[1]}: expected the shape of {names[0]} {tuple(x.shape)}, "
                         f"got {tuple(x_adv.shape)}")
    check_labels(y, len(x), names[2])
    if len(x) == 0:
        raise ValueError(f"{names[0]}: expected at least one image, got 0")


def validation_scores(generator: nn.Module, classifier: nn.Module, x: Tensor, x_adv: Tensor,
                      y: Tensor) -> dict[str, float]:
    """Accuracy of ``classifier(G(·))`` on clean (``clean_acc``) and adversarial (``adv_acc``) validation
    images: what :func:`choose` picks weights by."""
    system = Defended(generator, classifier)
    return {"clean_acc": accuracy(system, x, y), "adv_acc": accuracy(system, x_adv, y)}


def choose(scores: Mapping[str, Mapping[str, float]], reference: float, tolerance: float = 0.01) -> str:
    """The candidate to keep, from its :func:`validation_scores`: the highest ``adv_acc`` among those whose
    ``clean_acc`` is at least ``reference − tolerance`` (``reference``: the bare classifier's clean
    validation accuracy; the paper's motivation is to keep it), else the highest ``clean_acc``. Ties go to
    the first candidate."""
    if not scores:
        raise ValueError("scores: expected at least one candidate")
    for name, s in scores.items():
        if not isinstance(s, Mapping) or not {"clean_acc", "adv_acc"} <= set(s):
            raise ValueError(f"scores[{name!r}]: expected clean_acc and adv_acc")
    check_positive(tolerance, "tolerance", allow_zero=True)
    keep = [k for k, s in scores.items() if s["clean_acc"] >= reference - tolerance - 1e-9]
    if keep:
        return max(keep, key=lambda k: scores[k]["adv_acc"])
    return max(scores, key=lambda k: scores[k]["clean_acc"])


def train_isogan(
    generator: APEGAN,
    discriminator: Discriminator,
    classifier: nn.Module,
    x_clean: Tensor,
    x_adv: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-4,
    weights: Mapping[str, float] = DEFAULT_WEIGHTS,
    val: tuple[Tensor, Tensor, Tensor] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``generator`` and ``discriminator`` in place on triples ``(x_clean[i], x_adv[i], y[i])``.

    :func:`isogan_step` on :func:`purify_lib.train.run`; Adam (``lr``, β = (0.5, 0.999)) for both players.
    ``classifier`` (the network ``G`` is trained with, read by the label term) stays frozen.

    Args:
        val: ``(x, x_adv, y)`` validation triples: :func:`validation_scores` after every epoch, recorded as
            ``val_clean_acc`` and ``val_adv_acc``.

    Returns:
        The engine's history: per-epoch means and per-step lists (``history["steps"]``) of ``d_loss``,
        ``g_loss`` and every active term, ``seconds`` per epoch, the validation numbers, and ``weights``.
    """
    weights = check_weights(weights)
    _check_triple(x_clean, x_adv, y, ("x_clean", "x_adv", "y"), generator.channels)
    if val is not None:
        if not isinstance(val, (tuple, list)) or len(val) != 3:
            raise ValueError("val: expected a triple (x, x_adv, y)")
        _check_triple(*val, ("val[0]", "val[1]", "val[2]"), generator.channels)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        check_int(value, name)
    check_positive(lr, "lr")

    device = model_device(generator)
    discriminator.to(device)
    classifier.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    step = isogan_step(generator, discriminator, classifier, opt_g, opt_d, weights=weights)
    validate = None
    if val is not None:
        def validate() -> dict[str, float]:
            return {f"val_{k}": v for k, v in validation_scores(generator, classifier, *val).items()}
    with attack_mode(classifier):  # eval mode, frozen weights: gradients reach G only
        history = run(step, (x_clean, x_adv, y), epochs=epochs, batch_size=batch_size,
                      modules=[generator, discriminator], optimizers=[opt_g, opt_d], seed=seed,
                      validate=validate, step_history=True, desc="IsoGAN")
    history["weights"] = weights
    return history


