"""APE-GAN++ (Yang, Chen & Cao, 2021): APE-GAN with a WGAN-GP critic and a third-party classifier's loss.

The purifier is APE-GAN's generator ``G`` (:class:`purify_lib.defenses.apegan.APEGAN`); what changes is how it
is trained:

* the discriminator becomes a WGAN-GP **critic** ``D`` (Gulrajani et al. 2017): an unbounded score, trained on
  ``L_D = −D(x) + D(G(x_adv)) + 10·GP``, with the gradient penalty ``GP = E(‖∇D(x̂)‖₂ − 1)²`` at random points
  ``x̂`` between clean and purified images (:func:`gradient_penalty`);
* the generator minimises Eq. 1, ``L_G = −D(G(x_adv)) + λ1·MSE(G(x_adv), x) + λ2·CE(T(G(x_adv)), y)`` with
  λ1 = λ2 = 0.5 (:func:`generator_losses`), where ``T`` is a fixed, already trained "third-party"
  classifier whose cross-entropy on the purified image pulls ``G`` towards images ``T`` classifies right;
* the training pairs are FGSM examples at several ε at once, {0.1, 0.3, 0.5, 0.7} on MNIST and
  {0.01, 0.03, 0.05, 0.07} on CIFAR-10 (:data:`EPS_MIX`, :func:`mixed_fgsm_pairs`).

The paper's figures of ``G`` and ``D`` were lost in the text extraction; the layers here are those of the
authors' public code (Afreadyang/APE-GAN-Plus-Plus, ``models.py``), read, not copied:

* ``G`` = ``APEGAN(channels, **CODE_GENERATOR)``: 4×4 stride-2 convolutions to 64 and 128 maps, 4×4
  deconvolutions back, batch norm and LeakyReLU(0.01). The code ends in ``tanh`` on [0, 1] images (half of
  its range can never match a clean pixel); ours ends in a sigmoid, as APE-GAN's does in chapter 2.
* ``D`` (:class:`Critic`): 3×3 stride-2 unpadded convolutions to 64, 128 and 256 maps with LeakyReLU(0.01),
  then one linear unit. **Deviation from the code**, which keeps APE-GAN's batch norm in the critic and a
  sigmoid on its output: a WGAN critic must be free to take any real value (a sigmoid bounds the
  Wasserstein estimate and flattens its gradient, the very saturation WGAN-GP is meant to remove), and the
  gradient penalty is defined per example while batch norm couples the examples of a batch (Gulrajani et
  al. advise against it, and use none or layer norm). So our critic has neither.
* One critic update per generator update (the code; WGAN-GP's paper uses 5), Adam 2·10⁻⁴ with β = (0.5, 0.999)
  for both, batch 128, 300 epochs (code) or 200 (the paper's figs 4–5).

The authors' code also chose the best of its 300 checkpoints **on the test set**, used the attacked
classifier itself as the "third-party" ``T``, and left dropout on at test time in its MNIST classifier (see
:mod:`purify_lib.classifiers`). Here the checkpoint is chosen per epoch on a **validation** split
(``val``, :func:`purification_validator`), and ``T`` is whatever the chapter passes.

To test the paper's claims about stability and vanishing gradients, every training step records the losses
and two gradient norms of the generator (:func:`grad_norm`): of its whole loss (``g_grad_norm``) and of the
adversarial term alone (``adv_grad_norm``); :func:`apegan_step_with_norms` records the same for APE-GAN, and
:func:`purify_lib.analysis.apeganpp.stability_summary` turns both into numbers. One consequence of the
weights worth knowing: the MSE is a mean over pixels, so its gradient is tiny next to that of an unbounded
critic's score (whose input gradient the penalty holds near norm 1 per image); the generator is driven mostly
by the critic and by ``T``.
``Critic(code_critic=True)`` rebuilds the code's sigmoid-and-batch-norm critic for an ablation.

The chapter's tables are filled by :mod:`purify_lib.analysis.apeganpp`; how every model is trained at each
profile lives in :mod:`purify_lib.recipes.apeganpp`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import attack_mode
from ..checks import check_image_shape, check_images, check_int, check_labels, check_positive
from ..evaluate import Defended, accuracy
from ..runtime import model_device
from ..train import Loop, Step, run
from . import apegan
from .apegan import APEGAN

EPS_MIX: dict[str, tuple[float, ...]] = {"mnist": (0.1, 0.3, 0.5, 0.7), "cifar10": (0.01, 0.03, 0.05, 0.07)}
"""The FGSM ε of the training pairs (Section IV.A), on the [0, 1] scale; all four are concatenated."""
CODE_GENERATOR: dict[str, Any] = {"widths": (64, 128), "kernel": 4, "activation": "leaky_relu"}
"""The generator of the authors' code, as options of :class:`~purify_lib.defenses.apegan.APEGAN`."""
PAPER_WEIGHTS: tuple[float, float] = (0.5, 0.5)
"""λ1 (MSE) and λ2 (third-party cross-entropy) of Eq. 1."""
GP_WEIGHT = 10.0
"""The gradient penalty's weight (the code's, and WGAN-GP's)."""

Validator = Callable[[], Mapping[str, float]]


class Critic(nn.Module):
    """The WGAN-GP critic: 3×3 stride-2 unpadded convolutions (``width``, 2·``width``, 4·``width`` maps) with
    LeakyReLU(0.01), then a linear score. No sigmoid and no batch norm (see the module docstring).

    On 28×28 inputs the maps are 13, 6 and 2 wide (the code's ``Linear(1024, 1)`` at ``width=64``); on 32×32,
    15, 7 and 3 (``Linear(2304, 1)``). Returns one score per image (shape N). ``code_critic=True`` rebuilds
    the authors' version, with batch norm after the second and third convolutions and a sigmoid on the score,
    for an ablation.
    """

    def __init__(self, channels: int = 1, size: int = 28, width: int = 64, code_critic: bool = False) -> None:
        super().__init__()
        check_int(width, "width")
        self.channels, self.size = channels, size

        def norm(maps: int) -> nn.Module:
            return nn.BatchNorm2d(maps) if code_critic else nn.Identity()

        features = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2), nn.LeakyReLU(0.01),
            nn.Conv2d(width, 2 * width, 3, stride=2), norm(2 * width), nn.LeakyReLU(0.01),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2), norm(4 * width), nn.LeakyReLU(0.01), nn.Flatten())
        with torch.no_grad():
            flat = features.eval()(torch.zeros(1, channels, size, size)).shape[1]
        head = [nn.Linear(flat, 1), *([nn.Sigmoid()] if code_critic else [])]
        self.net = nn.Sequential(features.train(), *head)

    def forward(self, x: Tensor) -> Tensor:
        check_image_shape(x, "x", channels=self.channels, size=(self.size, self.size))
        return self.net(x).squeeze(1)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, alpha: Tensor | None = None) -> Tensor:
    """WGAN-GP's penalty ``mean over the batch of (‖∇ₓ D(x̂)‖₂ − 1)²`` at ``x̂ = α·real + (1 − α)·fake``.

    ``α`` is drawn uniformly from [0, 1] per example unless given (N values). The graph is kept
    (``create_graph``), so the penalty back-propagates into the critic's parameters; ``real`` and ``fake``
    are detached (the penalty trains the critic only). A 10⁻¹² inside the square root keeps the gradient of
    the norm finite where ``∇D`` vanishes.
    """
    check_image_shape(real, "real")
    if not isinstance(fake, Tensor) or fake.shape != real.shape:
        got = tuple(fake.shape) if isinstance(fake, Tensor) else type(fake).__name__
        raise ValueError(f"fake: expected the shape of real {tuple(real.shape)}, got {got}")
    n = len(real)
    if alpha is None:
        alpha = torch.rand(n, device=real.device, dtype=real.dtype)
    if not isinstance(alpha, Tensor) or alpha.numel() != n or (alpha < 0).any() or (alpha > 1).any():
        raise ValueError(f"alpha: expected {n} values in [0, 1], one per example")
    alpha = alpha.to(real).reshape(n, *[1] * (real.ndim - 1))
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    norms = torch.sqrt(grad.flatten(1).pow(2).sum(1) + 1e-12)
    return (norms - 1).pow(2).mean()


def critic_losses(real_scores: Tensor, fake_scores: Tensor, penalty: Tensor,
                  gp_weight: float = GP_WEIGHT) -> dict[str, Tensor]:
    """The critic's loss ``total = −mean D(x) + mean D(G(x_adv)) + gp_weight·GP``, with its parts:
    ``wasserstein`` (mean D(x) − mean D(G(x_adv)), the critic's estimate of the Wasserstein-1 distance) and
    ``gp``."""
    wasserstein = real_scores.mean() - fake_scores.mean()
    return {"total": -wasserstein + gp_weight * penalty, "wasserstein": wasserstein, "gp": penalty}


def generator_losses(purified: Tensor, clean: Tensor, scores: Tensor, logits: Tensor, labels: Tensor,
                     weights: Sequence[float] = PAPER_WEIGHTS) -> dict[str, Tensor]:
    """The terms of Eq. 1: ``adv`` = −mean D(G(x_adv)), ``mse`` = MSE(G(x_adv), x) (mean over pixels, as the
    code's ``nn.MSELoss``), ``ce`` = CE(T(G(x_adv)), y), and ``total`` = adv + λ1·mse + λ2·ce."""
    adv = -scores.mean()
    mse = F.mse_loss(purified, clean)
    ce = F.cross_entropy(logits, labels)
    lam1, lam2 = weights
    return {"total": adv + lam1 * mse + lam2 * ce, "adv": adv, "mse": mse, "ce": ce}


def grad_norm(gradients: Iterable[Tensor | None]) -> float:
    """The L2 norm of a list of gradients taken together (``None`` entries are skipped)."""
    squares = [g.detach().float().pow(2).sum() for g in gradients if g is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``module``'s parameters get no gradients (they still pass gradients on)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def apeganpp_step(generator: APEGAN, critic: Critic, third_party: nn.Module, opt_g: torch.optim.Optimizer,
                  opt_d: torch.optim.Optimizer, *, weights: Sequence[float] = PAPER_WEIGHTS,
                  gp_weight: float = GP_WEIGHT, n_critic: int = 1) -> Step:
    """APE-GAN++'s step on a batch ``(clean, adversarial, labels)``: ``n_critic`` critic updates, then one
    generator update (all on the same batch).

    The critic minimises :func:`critic_losses` (the penalty is computed outside mixed precision); the
    generator minimises :func:`generator_losses` with ``third_party`` (kept frozen by the caller) scoring
    ``G(x_adv)``. Returns the last critic update's ``d_loss``, ``wasserstein`` and ``gp``, the generator's
    ``g_loss``, ``adv``, ``mse`` and ``ce``, and the generator's gradient norms: ``g_grad_norm`` (its whole
    loss) and ``adv_grad_norm`` (the adversarial term −D(G(x_adv)) alone).
    """
    def step(loop: Loop, batch: tuple[Tensor, ...]) -> dict[str, float]:
        clean, adv, labels = batch
        for _ in range(n_critic):
            with loop.autocast():
                with torch.no_grad():
                    fake = generator(adv).float()
                real_scores, fake_scores = critic(clean).float(), critic(fake).float()
            d = critic_losses(real_scores, fake_scores, gradient_penalty(critic, clean, fake), gp_weight)
            loop.update(opt_d, d["total"])
        with frozen(critic):
            with loop.autocast():
                purified = generator(adv)
                g = generator_losses(purified.float(), clean, critic(purified).float(),
                                     third_party(purified).float(), labels, weights)
            adv_grads = torch.autograd.grad(g["adv"], list(generator.parameters()), retain_graph=True)
            loop.update(opt_g, g["total"])
        return {"d_loss": d["total"].item(), "wasserstein": d["wasserstein"].item(), "gp": d["gp"].item(),
                "g_loss": g["total"].item(), "adv": g["adv"].item(), "mse": g["mse"].item(),
                "ce": g["ce"].item(), "g_grad_norm": grad_norm(p.grad for p in generator.parameters()),
                "adv_grad_norm": grad_norm(adv_grads)}

    return step


@contextlib.contextmanager
def _buffers_restored(*modules: nn.Module) -> Iterator[None]:
    """Run a forward pass for measurement only: batch-norm running statistics are put back afterwards."""
    saved = [[b.detach().clone() for b in m.buffers()] for m in modules]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(modules, saved):
                for b, s in zip(m.buffers(), buffers):
                    b.copy_(s)


def apegan_step_with_norms(generator: APEGAN, discriminator: apegan.Discriminator,
                           opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                           **options: Any) -> Step:
    """:func:`purify_lib.defenses.apegan.apegan_step` (``options``: ``weights``, ``g_steps``), plus the same
    gradient norms as :func:`apeganpp_step`: ``g_grad_norm`` of the last generator update's whole loss and
    ``adv_grad_norm`` of its adversarial term −log D(G(x_adv)) alone (measured after the update, with the
    batch-norm statistics left untouched)."""
    inner = apegan.apegan_step(generator, discriminator, opt_g, opt_d, **options)

    def step(loop: Loop, batch: tuple[Tensor, ...]) -> dict[str, float]:
        metrics = dict(inner(loop, batch))
        metrics["g_grad_norm"] = grad_norm(p.grad for p in generator.parameters())
        with _buffers_restored(generator, discriminator), frozen(discriminator), loop.autocast():
            logits = discriminator(generator(batch[1])).float()
            adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            metrics["adv_grad_norm"] = grad_norm(torch.autograd.grad(adv, list(generator.parameters())))
        return metrics

    return step


def purification_validator(generator: nn.Module, classifier: nn.Module,
                           val: tuple[Tensor, Tensor, Tensor, Tensor]) -> Validator:
    """The per-epoch validation hook: accuracy of ``classifier(generator(·))`` on validation images.

    ``val = (x, y, x_adv, y_adv)``: clean validation images and labels, and adversarial ones (e.g. the FGSM
    ε mix of the same images). The hook returns ``val_clean_acc``, ``val_adv_acc`` and their mean
    ``val_acc``, on which the training keeps its best epoch: a checkpoint that purifies attacks by wrecking
    clean images does not win.
    """
    x, y, x_adv, y_adv = val
    check_images(x, "val[0]")
    check_labels(y, len(x), "val[1]")
    check_images(x_adv, "val[2]")
    check_labels(y_adv, len(x_adv), "val[3]")
    system = Defended(generator, classifier)

    def validate() -> dict[str, float]:
        clean, adv = accuracy(system, x, y), accuracy(system, x_adv, y_adv)
        return {"val_clean_acc": clean, "val_adv_acc": adv, "val_acc": (clean + adv) / 2}

    return validate


def _check_pairs(x_clean: Tensor, x_adv: Tensor, channels: int) -> None:
    check_images(x_clean, "x_clean", channels=channels)
    check_images(x_adv, "x_adv", channels=channels)
    if x_clean.shape != x_adv.shape:
        raise ValueError(f"x_adv: expected the shape of x_clean {tuple(x_clean.shape)}, "
                         f"got {tuple(x_adv.shape)}")


def train_apeganpp(
    generator: APEGAN,
    critic: Critic,
    third_party: nn.Module,
    x_clean: Tensor,
    x_adv: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 2e-4,
    weights: Sequence[float] = PAPER_WEIGHTS,
    gp_weight: float = GP_WEIGHT,
    n_critic: int = 1,
    val: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``generator`` and ``critic`` in place on pairs ``(x_adv[i], x_clean[i])`` with labels ``y[i]``.

    :func:`apeganpp_step` on the training engine (:func:`purify_lib.train.run`), Adam with β = (0.5, 0.999)
    for both players; ``third_party`` stays frozen, in eval mode. With ``val`` (see
    :func:`purification_validator`, scored through ``third_party``) the engine evaluates after every epoch
    and restores the epoch with the best ``val_acc``.

    Returns:
        The engine's history: per-step lists under ``history["steps"]`` (the metrics of
        :func:`apeganpp_step`), their per-epoch means, ``val_*`` per epoch and ``best_epoch`` (with ``val``),
        ``seconds`` per epoch, and the counts ``d_updates`` and ``g_updates``.
    """
    _check_pairs(x_clean, x_adv, generator.channels)
    check_labels(y, len(x_clean), "y")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("n_critic", n_critic)):
        check_int(value, name)
    check_positive(lr, "lr")
    check_positive(gp_weight, "gp_weight", allow_zero=True)
    if len(weights) != 2:
        raise ValueError(f"weights: expected two numbers (λ1, λ2), got {weights!r}")
    for i, w in enumerate(weights, 1):
        check_positive(w, f"weights[λ{i}]", allow_zero=True)
    if not isinstance(third_party, nn.Module):
        raise ValueError(f"third_party: expected a classifier (nn.Module), got {type(third_party).__name__}")

    device = model_device(generator)
    critic.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.999))
    step = apeganpp_step(generator, critic, third_party, opt_g, opt_d, weights=weights, gp_weight=gp_weight,
                         n_critic=n_critic)
    validate = None if val is None else purification_validator(generator, third_party, val)
    with attack_mode(third_party):
        history = run(step, (x_clean, x_adv, y), epochs=epochs, batch_size=batch_size,
                      modules=[generator, critic], optimizers=[opt_g, opt_d], seed=seed, validate=validate,
                      keep_best=None if val is None else "val_acc", step_history=True, desc="APE-GAN++")
    history["g_updates"] = len(history["steps"]["g_loss"])
    history["d_updates"] = n_critic * history["g_updates"]
    return history


def train_apegan_baseline(
    generator: APEGAN,
    discriminator: apegan.Discriminator,
    x_clean: Tensor,
    x_adv: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-4,
    weights: Sequence[float] = apegan.PAPER_WEIGHTS,
    g_steps: int = 2,
    val: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    classifier: nn.Module | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """APE-GAN (chapter 2's loss and discriminator) on the same footing as :func:`train_apeganpp`: any
    generator (e.g. APE-GAN++'s), the gradient norms of :func:`apegan_step_with_norms`, and the same
    per-epoch validation and checkpoint choice, scored through ``classifier`` (needed with ``val``).

    Returns the engine's history, as :func:`train_apeganpp`.
    """
    _check_pairs(x_clean, x_adv, generator.channels)
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("g_steps", g_steps)):
        check_int(value, name)
    check_positive(lr, "lr")
    if len(weights) != 3:
        raise ValueError(f"weights: expected three numbers (ξ1, ξ2, ξ3), got {weights!r}")
    if val is not None and classifier is None:
        raise ValueError("classifier: expected the classifier to validate through (val was given)")

    discriminator.to(model_device(generator))
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    step = apegan_step_with_norms(generator, discriminator, opt_g, opt_d, weights=weights, g_steps=g_steps)
    validate = None if val is None else purification_validator(generator, classifier, val)
    history = run(step, (x_clean, x_adv), epochs=epochs, batch_size=batch_size,
                  modules=[generator, discriminator], optimizers=[opt_g, opt_d], seed=seed, validate=validate,
                  keep_best=None if val is None else "val_acc", step_history=True, desc="APE-GAN")
    history["d_updates"] = len(history["steps"]["d_loss"])
    history["g_updates"] = g_steps * history["d_updates"]
    return history



def mixed_fgsm_pairs(classifier: nn.Module, x: Tensor, y: Tensor, eps: Sequence[float], *,
                     key: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
    """The paper's training set: FGSM examples of ``x`` against ``classifier`` at every ε of ``eps``
    (:func:`purify_lib.defenses.apegan.fgsm_pairs`, cached under ``key``), concatenated.

    Returns ``(x_clean, x_adv, y)``, each ``len(eps)·len(x)`` long, ε by ε: the clean images and labels are
    repeated to match their adversarial examples.
    """
    if not eps:
        raise ValueError("eps: expected at least one ε")
    k = len(eps)
    adv = torch.cat([apegan.fgsm_pairs(classifier, x, y, e, key=key) for e in eps])
    return x.repeat(k, 1, 1, 1), adv, y.repeat(k)

