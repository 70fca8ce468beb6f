"""Defense-GAN (Samangouei, Kabkab & Chellappa, ICLR 2018), the baseline AE-GAN+rs is measured against.

A generator ``G`` is trained as a WGAN-GP on clean images. A purified image is ``G(z*)``, with ``z*`` the best
of ``R`` gradient-descent reconstructions of ``‖G(z) − x‖²`` from random starting codes, ``L`` steps each.
The search is :func:`purify_lib.defenses.aegan.latent_search`, the one AE-GAN+rs runs from its encoder's
code: only the start differs, which is the point of AE-GAN+rs's table 2.

The authors' code (kabkabm/defensegan, MNIST configuration), which AE-GAN+rs says it adopts:

* ``G``: the MNIST generator (our :class:`~purify_lib.defenses.aegan.Decoder`, the same architecture),
  latent 128, prior ``N(0, I)``; critic: three 5×5 stride-2 convolutions with LeakyReLU and no batch norm
  (a gradient penalty needs per-example gradients), one linear unit.
* WGAN-GP: 5 critic updates per generator update, penalty weight 10, Adam 1e-4 with ``betas=(0.5, 0.9)``,
  batch 50; 200,000 generator iterations in the paper (the ``paper`` profile caps the epochs).
* Reconstruction: ``L = 200`` steps, ``R = 10`` restarts, learning rate 10, momentum 0.7, the rate ×0.1
  from 80% of the steps on, starting codes ``N(0, 1/latent)``; the restart with the lowest MSE wins.

Each call draws fresh starting codes from the global random generator, so the purifier is random: attack it
with EOT (``evaluate`` threat ``"bpda_eot"``) and seed globally for reproducible numbers.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..checks import check_image_shape, check_images, check_int, check_positive
from ..train import Loop, Step, run
from .aegan import Decoder, Search, latent_search

__all__ = ["Critic", "gradient_penalty", "wgan_gp_step", "train_defensegan", "DefenseGANPurifier", "INITS"]

INITS = ("normal", "uniform")
"""Starting codes: ``"normal"`` = ``N(0, 1/latent)`` (Defense-GAN's code, for its ``N(0, I)`` generator);
``"uniform"`` = ``U(−1, 1)``, the prior of AE-GAN's decoder (when Defense-GAN's search runs on it)."""


class Critic(nn.Module):
    """The WGAN-GP critic: three 5×5 stride-2 convolutions (w, 2w, 4w), LeakyReLU 0.2, one linear unit (N)."""

    def __init__(self, channels: int = 1, size: int = 28, width: int = 64) -> None:
        super().__init__()
        self.channels, self.size = channels, size
        s = -(-size // 8)
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 5, 2, padding=2), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 5, 2, padding=2), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 5, 2, padding=2), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(4 * width * s * s, 1))

    def forward(self, x: Tensor) -> Tensor:
        check_image_shape(x, "x", channels=self.channels, size=(self.size, self.size))
        return self.net(x).squeeze(1)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """Gulrajani et al.'s penalty ``mean((‖∇ critic(x̂)‖₂ − 1)²)`` at random points ``x̂`` between real and
    fake images."""
    mix = torch.rand(len(real), *[1] * (real.ndim - 1), device=real.device)
    points = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(points).sum(), points, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def wgan_gp_step(generator: Decoder, critic: Critic, opt_g: torch.optim.Optimizer,
                 opt_c: torch.optim.Optimizer, *, n_critic: int = 5, gp_weight: float = 10.0) -> Step:
    """WGAN-GP's step on a batch ``(x,)``: one critic update on ``critic(G(z)) − critic(x) + λ·GP``; after
    every ``n_critic``-th critic update, one generator update on ``−critic(G(z))``, ``z ~ N(0, I)``. The
    penalty is computed in full precision."""
    latent = generator.latent

    def step(loop: Loop, batch: tuple[Tensor, ...]) -> dict[str, float]:
        (x,) = batch
        with torch.no_grad():
            fake = generator(torch.randn(len(x), latent, device=loop.device))
        with loop.autocast():
            distance = critic(x).float().mean() - critic(fake).float().mean()
        penalty = gradient_penalty(critic, x, fake.float())
        loop.update(opt_c, gp_weight * penalty - distance)
        if loop.step % n_critic == n_critic - 1:
            with loop.autocast():
                g_loss = -critic(generator(torch.randn(len(x), latent, device=loop.device))).float().mean()
            loop.update(opt_g, g_loss)
        return {"wasserstein": distance.item(), "penalty": penalty.item()}

    return step


def train_defensegan(generator: Decoder, critic: Critic, x: Tensor, *, epochs: int, batch_size: int = 50,
                     lr: float = 1e-4, n_critic: int = 5, gp_weight: float = 10.0,
                     seed: int = 0) -> dict[str, Any]:
    """Train ``generator`` and ``critic`` in place as a WGAN-GP on ``x`` (:func:`wgan_gp_step` on the training
    engine :func:`purify_lib.train.run`); Adam with ``betas=(0.5, 0.9)``.

    Returns:
        The engine's history (per epoch: ``wasserstein`` estimate, ``penalty``, ``seconds``) and
        ``g_updates``, the generator iterations done.
    """
    check_images(x, "x", channels=generator.channels, size=(generator.size, generator.size))
    if len(x) == 0:
        raise ValueError("x: expected at least one training image, got 0")
    n_critic = check_int(n_critic, "n_critic", 1)
    check_positive(lr, "lr")
    check_positive(gp_weight, "gp_weight", allow_zero=True)
    critic.to(next(generator.parameters()).device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.9))
    opt_c = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    step = wgan_gp_step(generator, critic, opt_g, opt_c, n_critic=n_critic, gp_weight=gp_weight)
    history = run(step, (x,), epochs=epochs, batch_size=batch_size, modules=[generator, critic],
                  optimizers=[opt_c], seed=seed, desc="Defense-GAN (WGAN-GP)")
    history["g_updates"] = epochs * math.ceil(len(x) / batch_size) // n_critic
    return history


class DefenseGANPurifier(nn.Module):
    """``x ↦ G(z*)``, ``z*`` the best of ``restarts`` searches of ``steps`` steps from random codes.

    Args:
        generator: a decoder (codes → images) with a ``latent`` attribute.
        steps, restarts, lr, momentum, decay_at: ``L``, ``R``, and the optimiser (defaults: the authors').
        init: the starting codes' distribution, one of :data:`INITS`.

    The searched output carries no gradient (``differentiable = False``): attack it with BPDA, EOT over its
    random starts, or in its latent space.
    """

    differentiable = False

    def __init__(self, generator: nn.Module, *, steps: int = 200, restarts: int = 10, lr: float = 10.0,
                 momentum: float = 0.7, decay_at: float | None = 0.8, init: str = "normal") -> None:
        super().__init__()
        if not isinstance(generator, nn.Module) or not isinstance(getattr(generator, "latent", None), int):
            raise ValueError("generator: expected an nn.Module with an integer attribute `latent`")
        if init not in INITS:
            raise ValueError(f"init: expected one of {', '.join(INITS)}, got {init!r}")
        self.generator = generator
        self.steps, self.restarts = check_int(steps, "steps", 0), check_int(restarts, "restarts", 1)
        self.lr, self.momentum, self.decay_at, self.init = check_positive(lr, "lr"), momentum, decay_at, init
        self.eval()  # inference only (see AEGANPurifier)

    @property
    def passes_per_image(self) -> int:
        """Generator evaluations per image: ``R·(L + 1)``."""
        return self.restarts * (self.steps + 1)

    def initial_codes(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        """``n × R × latent`` starting codes drawn from :attr:`init`'s distribution (global RNG)."""
        shape = (n, self.restarts, self.generator.latent)
        if self.init == "normal":
            return torch.randn(shape).to(device) / math.sqrt(self.generator.latent)
        return torch.rand(shape).to(device) * 2 - 1

    def project(self, x: Tensor) -> Search:
        """The search itself (fresh random starts): best codes, images, errors and passes per image."""
        z0 = self.initial_codes(len(x), x.device)
        return latent_search(self.generator, x, z0, steps=self.steps, lr=self.lr, momentum=self.momentum,
                             decay_at=self.decay_at)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(x).images

    def extra_repr(self) -> str:
        return (f"steps={self.steps}, restarts={self.restarts}, lr={self.lr}, momentum={self.momentum}, "
                f"decay_at={self.decay_at}, init={self.init!r}")
