"""APE-GAN (Shen et al., 2017, "AE-GAN: adversarial eliminating with GAN"): purify, then classify.

A generator ``G`` is trained to map FGSM examples back to their clean originals while a discriminator ``D``
tells ``G``'s outputs from clean images. At test time ``G`` is put in front of an unchanged classifier:
``classifier(G(x))``. The training pairs are FGSM examples crafted **once** on the training set against
the target classifier.

What the paper's text says and this module does:

* ``G``: two 3×3 convolutions with 64 maps, then two deconvolutions, ReLU in between. The text gives no
  strides, deconvolution kernels or normalisation; like the authors' public code (DCGAN style) we use
  stride 2 and batch norm, and 3×3 deconvolutions too, so 28×28 → 14×14 → 7×7 → 14×14 → 28×28. The last
  layer ends in a **sigmoid**, because the book's images
  live in [0, 1]: the common PyTorch port ends in ``tanh`` (range [-1, 1]) while feeding [0, 1] images,
  so half of its output range can never match a clean image.
* ``D``: two 3×3 strided convolutions (32 and 64 maps: the text leaves the count and width open, and a
  small ``D`` keeps CPU training cheap), two dense layers and a sigmoid. ``D`` returns the logit; the sigmoid
  sits inside the numerically stable ``binary_cross_entropy_with_logits`` (the same function).
* Loss (Eq. 10): ``l_ae = ξ1·MSE + ξ2·adversarial + ξ3·TV`` with ``ξ = (0.1, 0.45, 0.45)``; the adversarial
  term is the non-saturating ``−log D(G(x_adv))`` (Eq. 12) and TV the mean per-pixel gradient norm
  (Eq. 13). No public APE-GAN code has the TV term (the official code uses 0.9·RMSE + 0.02·adversarial,
  the PyTorch port 0.7·MSE + 0.3·BCE); we implement the text.
* Two generator updates per discriminator update, on the same batch; Adam, learning rate 2e-4, β1 0.5,
  batch 64; 2 epochs on MNIST and 10 on CIFAR-10 and GTSRB at the ``paper`` profile.

The paper's FGSM ε is "15" (MNIST) and "5" (CIFAR-10, GTSRB) without a scale; read as 0–255 units that is
:data:`EPS_PAPER`. The PyTorch port used :data:`EPS_PORT` instead. Chapters pass ε explicitly and log it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import cache
from ..attacks import bim, fgsm
from ..checks import check_image_shape, check_images, check_int, check_labels, check_positive
from ..evaluate import attack_dataset
from ..runtime import model_device, progress
from ..train import Loop, Step, run

EPS_PAPER: dict[str, float] = {"mnist": 15 / 255, "cifar10": 5 / 255, "gtsrb": 5 / 255}
"""The paper's FGSM ε ("15" and "5") read as 0–255 units, on the [0, 1] scale."""
EPS_PORT: dict[str, float] = {"mnist": 0.15, "cifar10": 0.01}
"""The ε the common PyTorch port (owruby/APE-GAN) trains with, on the [0, 1] scale."""
PAPER_WEIGHTS: tuple[float, float, float] = (0.1, 0.45, 0.45)
"""ξ1 (MSE), ξ2 (adversarial), ξ3 (total variation) from Section 4.2.1 of the paper."""


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}
"""The generator's hidden activations: ReLU (APE-GAN's text) or LeakyReLU with PyTorch's default slope 0.01
(``F.leaky_relu`` in the APE-GAN++ authors' code)."""


class APEGAN(nn.Module):
    """The APE-GAN generator, i.e. the purifier: images in [0, 1] → images in [0, 1] of the same shape.

    Two stride-2 convolutions (``widths[0]``, then ``widths[1]`` maps), two stride-2 deconvolutions
    (``widths[0]`` maps, then the image's channels), batch norm and ``activation`` in between, a sigmoid at
    the end. The defaults are APE-GAN's (chapter 2); the APE-GAN++ authors' code uses ``widths=(64, 128)``,
    ``kernel=4`` and ``activation="leaky_relu"`` (:data:`purify_lib.defenses.apeganpp.CODE_GENERATOR`), so
    both papers, and IsoGAN, share this one class and differ only in their losses.

    Args:
        channels: image channels (1 for MNIST, 3 for CIFAR-10 and GTSRB).
        widths: feature maps of the first and second convolution ((64, 64) in APE-GAN's text).
        kernel: the kernel size of all four layers; the padding ``(kernel − 1) // 2`` and the deconvolutions'
            output padding are chosen so every layer halves or doubles the size exactly.
        activation: a key of :data:`ACTIVATIONS`.

    Height and width must be multiples of 4 (28 and 32 are).
    """

    def __init__(self, channels: int = 1, widths: tuple[int, int] = (64, 64), kernel: int = 3,
                 activation: str = "relu") -> None:
        super().__init__()
        if len(widths) != 2 or any(not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"widths: expected two positive integers, got {widths!r}")
        check_int(kernel, "kernel", 2)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.channels = channels
        w1, w2 = widths
        pad = (kernel - 1) // 2
        out_pad = 2 + 2 * pad - kernel  # (n − 1)·2 − 2·pad + kernel + out_pad = 2n
        act = ACTIVATIONS[activation]
        self.net = nn.Sequential(
            nn.Conv2d(channels, w1, kernel, stride=2, padding=pad), nn.BatchNorm2d(w1), act(),
            nn.Conv2d(w1, w2, kernel, stride=2, padding=pad), nn.BatchNorm2d(w2), act(),
            nn.ConvTranspose2d(w2, w1, kernel, stride=2, padding=pad, output_padding=out_pad),
            nn.BatchNorm2d(w1), act(),
            nn.ConvTranspose2d(w1, channels, kernel, stride=2, padding=pad, output_padding=out_pad),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_image_shape(x, "x", channels=self.channels)
        if x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"x: expected height and width divisible by 4, got {x.shape[2]}×{x.shape[3]}")
        return self.net(x)


class Discriminator(nn.Module):
    """APE-GAN's discriminator: strided 3×3 convolutions, two dense layers; returns the logit of "clean"."""

    def __init__(self, channels: int = 1, size: int = 28, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.channels, self.size = channels, size
        s = (size + 3) // 4
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * s * s, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_image_shape(x, "x", channels=self.channels, size=(self.size, self.size))
        return self.net(x).squeeze(1)


def total_variation(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean per-pixel gradient norm (Eq. 13): ``mean sqrt(dx² + dy² + eps)`` over N, C, H, W.

    ``dx[i, j] = x[i, j+1] − x[i, j]`` and ``dy[i, j] = x[i+1, j] − x[i, j]`` (forward differences), set to
    0 past the last column / row. ``eps`` keeps the gradient finite where the image is flat.
    """
    check_image_shape(x, "x")
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return torch.sqrt(dx ** 2 + dy ** 2 + eps).mean()


def generator_losses(purified: Tensor, clean: Tensor, d_logits: Tensor,
                     weights: Sequence[float] = PAPER_WEIGHTS) -> dict[str, Tensor]:
    """The terms of ``l_ae`` (Eq. 10): ``mse``, ``adv`` (−log D(G(x_adv)), mean), ``tv`` and their
    ``total``."""
    mse = F.mse_loss(purified, clean)
    adv = F.binary_cross_entropy_with_logits(d_logits, torch.ones_like(d_logits))
    tv = total_variation(purified)
    w1, w2, w3 = weights
    return {"total": w1 * mse + w2 * adv + w3 * tv, "mse": mse, "adv": adv, "tv": tv}


def apegan_step(generator: APEGAN, discriminator: Discriminator, opt_g: torch.optim.Optimizer,
                opt_d: torch.optim.Optimizer, *, weights: Sequence[float] = PAPER_WEIGHTS,
                g_steps: int = 2) -> Step:
    """APE-GAN's step on a batch ``(clean, adversarial)``: one discriminator update, then ``g_steps``
    generator updates on ``l_ae`` (the paper's two G steps per D step, on the same batch).

    The discriminator learns to tell clean images (label 1) from purified ones (label 0); the generator then
    minimises ``ξ1·MSE(G(x_adv), x) − ξ2·log D(G(x_adv)) + ξ3·TV(G(x_adv))`` (:func:`generator_losses`).
    Returns the discriminator's loss and the mean of each generator term over the ``g_steps`` updates.
    """
    def step(loop: Loop, batch: tuple[Tensor, ...]) -> dict[str, float]:
        clean, adv = batch
        with loop.autocast():
            with torch.no_grad():
                fake = generator(adv)
            real_logits, fake_logits = discriminator(clean), discriminator(fake)
            d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                      + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        loop.update(opt_d, d_loss)
        totals = dict.fromkeys(("g_loss", "mse", "adv", "tv"), 0.0)
        for _ in range(g_steps):
            with loop.autocast():
                purified = generator(adv)
                losses = generator_losses(purified.float(), clean, discriminator(purified).float(), weights)
            loop.update(opt_g, losses["total"])
            for k, name in (("g_loss", "total"), ("mse", "mse"), ("adv", "adv"), ("tv", "tv")):
                totals[k] += losses[name].item() / g_steps
        return {"d_loss": d_loss.item(), **totals}

    return step


def train_apegan(
    generator: APEGAN,
    discriminator: Discriminator,
    x_clean: Tensor,
    x_adv: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-4,
    weights: Sequence[float] = PAPER_WEIGHTS,
    g_steps: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``generator`` and ``discriminator`` in place on pairs ``(x_adv[i], x_clean[i])``.

    :func:`apegan_step` on the training engine (:func:`purify_lib.train.run`); Adam with
    ``betas=(0.5, 0.999)``
    for both players.

    Returns:
        The engine's history with per-step lists (``history["steps"]``: ``d_loss``, ``g_loss``, ``mse``,
        ``adv``, ``tv``), per-epoch means of the same, ``seconds`` per epoch, and the counts ``g_updates`` and
        ``d_updates``.
    """
    check_images(x_clean, "x_clean", channels=generator.channels)
    check_images(x_adv, "x_adv", channels=generator.channels)
    if x_clean.shape != x_adv.shape:
        raise ValueError(f"x_adv: expected the shape of x_clean {tuple(x_clean.shape)}, "
                         f"got {tuple(x_adv.shape)}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("g_steps", g_steps)):
        check_int(value, name)
    check_positive(lr, "lr")
    if len(weights) != 3:
        raise ValueError(f"weights: expected three numbers (ξ1, ξ2, ξ3), got {weights!r}")
    for i, w in enumerate(weights, 1):
        check_positive(w, f"weights[ξ{i}]", allow_zero=True)

    discriminator.to(model_device(generator))
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    step = apegan_step(generator, discriminator, opt_g, opt_d, weights=weights, g_steps=g_steps)
    history = run(step, (x_clean, x_adv), epochs=epochs, batch_size=batch_size,
                  modules=[generator, discriminator], optimizers=[opt_g, opt_d], seed=seed, step_history=True,
                  desc="APE-GAN")
    history["d_updates"] = len(history["steps"]["d_loss"])
    history["g_updates"] = g_steps * history["d_updates"]
    return history


def fgsm_pairs(classifier: nn.Module, x: Tensor, y: Tensor, eps: float, *, key: Mapping[str, Any],
               batch_size: int = 500) -> Tensor:
    """FGSM examples of ``x`` against ``classifier``, crafted once and cached under ``key`` (+ ``eps``).

    ``key`` must name everything that produced ``classifier`` and ``x`` (dataset, n, profile, seed ...).
    """
    check_images(x, "x")
    check_labels(y, len(x), "y")
    check_positive(eps, "eps")
    device = next(classifier.parameters()).device

    def compute() -> Tensor:
        parts = [fgsm(classifier, xb.to(device), yb.to(device), eps=eps).cpu()
                 for xb, yb in progress(list(zip(x.split(batch_size), y.split(batch_size))),
                                    desc="FGSM pairs", leave=False)]
        return torch.cat(parts)

    return cache.load_or_compute("apegan-fgsm-pairs", {**key, "eps": eps, "n": len(x)}, compute)


def bim_iterates(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 5,
                 batch_size: int = 256) -> list[Tensor]:
    """The paper's iterative examples ``X_1 … X_steps`` (Eq. 2) against ``model``.

    The step is ``α = ε``, so ``X_1`` is FGSM at ``ε`` (the paper's ``X_1`` column matches its FGSM row at the
    same ε) and every later iterate stays in the ε-ball. ``X_i`` is BIM with ``i`` steps (no random start,
    hence deterministic).
    """
    check_positive(eps, "eps")
    check_int(steps, "steps")
    return [attack_dataset(bim, model, x, y, batch_size, desc=f"X_{i} (ε={eps:.3g})", eps=eps, alpha=eps,
                           steps=i) for i in range(1, steps + 1)]


def random_sign_noise(x: Tensor, eps: float, seed: int = 0) -> Tensor:
    """``x`` plus ±``eps`` per value, random signs (seeded), clipped to [0, 1]: a non-adversarial
    perturbation of the same L∞ size as FGSM (the "random noise images" of tables 17–18; the paper does
    not state its noise)."""
    check_images(x, "x")
    check_positive(eps, "eps")
    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, x.shape, generator=gen).to(x) * 2 - 1
    return (x + eps * signs).clamp(0, 1)
