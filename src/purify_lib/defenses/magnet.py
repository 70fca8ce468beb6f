"""MagNet (Meng & Chen, CCS 2017) as AE-GAN+rs compares with it: an auto-encoder *reformer* in front of the
classifier, and *detectors* that flag inputs whose reconstruction error is too large.

AE-GAN+rs uses table 6's encoder and decoder for MagNet too (latent 128, and 20 in its table 8), without the
discriminator, trained like the authors' MagNet code: mean squared error against the clean image of a noisy
input ``clip(x + 0.1·N(0, 1), 0, 1)``. The reformer is ``AE(x)``. MagNet's detectors threshold the L1 or L2
reconstruction error per image at the value that flags a chosen share of clean validation images (0.1% in
MagNet's code): :func:`threshold_at_fpr`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_images, check_positive
from ..evaluate import predict
from ..train import Loop, Step, run
from .aegan import LATENT, Decoder, Encoder, reconstruction_error

__all__ = ["MagNet", "magnet_step", "train_magnet", "detector_scores",
           "threshold_at_fpr"]

NOISE = 0.1
"""The standard deviation of the Gaussian noise MagNet's auto-encoders are trained with."""


class MagNet(nn.Module):
    """The auto-encoder: ``forward`` is the reformer ``G(F(x))`` (images → images in [0, 1])."""

    def __init__(self, channels: int = 1, size: int = 28, width: int = 64, latent: int = LATENT) -> None:
        super().__init__()
        self.encoder = Encoder(channels, size, width, latent)
        self.decoder = Decoder(channels, size, width, latent)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def magnet_step(model: MagNet, optimizer: torch.optim.Optimizer, *, noise: float = NOISE) -> Step:
    """MagNet's step on a batch ``(x,)``: MSE between ``model(clip(x + noise·N(0, 1), 0, 1))`` and ``x``."""
    def step(loop: Loop, batch: tuple[Tensor, ...]) -> dict[str, float]:
        (x,) = batch
        noisy = (x + noise * torch.randn_like(x)).clamp(0, 1)
        with loop.autocast():
            loss = F.mse_loss(model(noisy).float(), x)
        loop.update(optimizer, loss)
        return {"mse": loss.item()}

    return step


def train_magnet(model: MagNet, x: Tensor, *, epochs: int, batch_size: int = 100, lr: float = 2e-4,
                 noise: float = NOISE, seed: int = 0) -> dict[str, Any]:
    """Train ``model`` in place with :func:`magnet_step` on the training engine; Adam (table 4: lr 2e-4, batch
    100). Returns the engine's history (per epoch ``mse``, ``seconds``)."""
    check_images(x, "x", channels=model.encoder.channels, size=(model.encoder.size, model.encoder.size))
    if len(x) == 0:
        raise ValueError("x: expected at least one training image, got 0")
    check_positive(lr, "lr")
    check_positive(noise, "noise", allow_zero=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return run(magnet_step(model, optimizer, noise=noise), (x,), epochs=epochs, batch_size=batch_size,
               modules=[model], optimizers=[optimizer], seed=seed, desc="MagNet")


def detector_scores(model: MagNet, x: Tensor, norm: str = "l1", batch_size: int = 500) -> Tensor:
    """Per-image reconstruction error of the reformer: mean ``|x − AE(x)|`` (``"l1"``) or mean squared
    (``"l2"``) per pixel, on ``x``'s device (higher = more likely adversarial)."""
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm: expected 'l1' or 'l2', got {norm!r}")
    check_images(x, "x")
    return reconstruction_error(predict(model, x, batch_size), x, "l1" if norm == "l1" else "mse")


def threshold_at_fpr(clean_scores: Tensor, fpr: float = 0.001) -> float:
    """The threshold that flags (score > threshold) at most a share ``fpr`` of ``clean_scores``: their
    ``1 − fpr`` quantile (set it on validation images, never on test ones)."""
    if not isinstance(clean_scores, Tensor) or clean_scores.ndim != 1 or len(clean_scores) == 0:
        raise ValueError("clean_scores: expected a non-empty 1-D tensor of scores")
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr: expected a fraction in [0, 1), got {fpr!r}")
    return torch.quantile(clean_scores.double().cpu(), 1.0 - fpr, interpolation="higher").item()
