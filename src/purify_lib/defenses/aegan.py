"""AE-GAN+rs (anonymous ICLR 2020 submission, "Defense against adversarial examples by encoder-assisted search
in the latent coding space"): an auto-encoder whose decoder is also a GAN generator, and a short search in its
latent space that starts at the encoder's code.

Three networks of the paper's table 6: an encoder ``F`` (image → code in [−1, 1]^128), a decoder ``G``
(code → image) and a discriminator ``D``. Training (Eq. 5, algorithm 1) is a GAN game between ``G`` and
``D`` on codes drawn from a prior, plus the reconstruction error of ``G(F(x + η))`` against the clean ``x``,
where ``η`` is Gaussian noise whose standard deviation is drawn per batch from ``U(0, η_max)`` (the noise
regulariser, "+r"). At inference (algorithm 2) a purified image is ``G(z*)``, with ``z*`` found by ``L``
steps of gradient descent on ``‖G(z) − x‖²`` from ``z₀ = F(x)``, the step halved every 5 steps ("+s"). The
reconstruction error of ``G(F(x))`` doubles as a detector: above a threshold the input is called adversarial.

What the text leaves open and this module does:

* Decoder: the table's first layer "FC(1024)" cannot feed 256 maps up to 28×28. We use Defense-GAN's MNIST
  generator: FC to 4·4·4w maps, transposed convolutions 4w→2w→w→channels (5×5, stride 2), the 8×8 maps
  cropped to 7×7 for 28×28 images; batch norm and ReLU as in table 6, sigmoid output. ``w = 64`` in the
  paper (the ``width`` argument lets a CPU profile narrow it).
* Discriminator: the encoder's convolutions and one output unit (its logit; the sigmoid sits in the loss).
* Prior ``p(z)``: ``U(−1, 1)^128``, the range of the encoder's tanh (unstated). Noise bound ``η_max = 1``
  (unstated), the noisy image clipped to [0, 1] (the paper writes ``x + η``; clipping makes the noise look
  like a clipped attack, and helped in trials at CPU scale). Reconstruction term: the squared L2 norm per
  image (summed over pixels, as Eq. 5 writes it), averaged over the batch, weight 1 beside the GAN term
  (unstated); the GAN term for ``G`` is the non-saturating ``−log D(G(z))``. Algorithm 1's encoder line
  reads "F(z) − (x + ε)", a garble: we follow Eq. 5.
* One discriminator update, then one update of encoder and decoder together per batch (Adam, 2e-4, β1 0.5).
* Search objective: the mean squared error per pixel (Defense-GAN's), so step sizes are comparable with
  Defense-GAN's learning rate 10; the initial step ``η₀`` is unstated and is chosen on validation images
  (:func:`choose_search_lr`). Algorithm 2 prints "z + η∇": a sign slip, we descend. Codes are not
  clipped to [−1, 1]. The search returns the best iterate it evaluated (never worse than its start) and,
  with several restarts, the best restart.

:func:`latent_search` is shared with Defense-GAN (:mod:`purify_lib.defenses.defensegan`), which starts from
random codes instead of the encoder's.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_image_shape, check_images, check_int, check_positive
from ..evaluate import predict
from ..runtime import model_device
from ..train import Loop, Step, fit, run

__all__ = ["LATENT", "VARIANTS", "Encoder", "Decoder", "Discriminator", "AEGAN", "sample_prior", "aegan_step",
           "train_aegan", "Search", "latent_search",
           "reconstruction_error", "AEGANPurifier", "choose_search_lr", "train_substitute"]

LATENT = 128
"""The latent dimension of table 6."""
NOISE_MAX = 1.0
"""Our choice for the unstated bound η_max of the noise regulariser's standard deviation."""
VARIANTS: dict[str, dict[str, Any]] = {
    "ae": dict(adversarial=False, noise_max=0.0, clip=False),
    "aegan": dict(adversarial=True, noise_max=0.0, clip=False),
    "aegan_r": dict(adversarial=True, noise_max=NOISE_MAX, clip=True),
}
"""The trained models of the ablation (table 3): AE (Eq. 2), AE-GAN (Eq. 4), AE-GAN+r (Eq. 5). "+s" is the
inference-time search (:class:`AEGANPurifier` with ``search=True``), not a separate model."""
METRICS = ("mse", "l1")


def _grid(size: int) -> int:
    """Side of the smallest feature map: three stride-2 steps (28 → 14 → 7 → 4, 32 → 16 → 8 → 4)."""
    return -(-size // 8)


def _convs(channels: int, width: int) -> nn.Sequential:
    """Table 6's three 5×5 stride-2 convolutions (c → w → 2w → 4w), LeakyReLU 0.2, batch norm after the
    first, flattened."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 5, stride=2, padding=2), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 5, stride=2, padding=2), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2),
        nn.Flatten())


class Encoder(nn.Module):
    """``F``: images N×C×H×W → codes N×latent in [−1, 1] (table 6: three convolutions, FC + tanh)."""

    def __init__(self, channels: int = 1, size: int = 28, width: int = 64, latent: int = LATENT) -> None:
        super().__init__()
        self.channels, self.size, self.latent = channels, size, latent
        self.net = nn.Sequential(_convs(channels, width), nn.Linear(4 * width * _grid(size) ** 2, latent),
                                 nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        check_image_shape(x, "x", channels=self.channels, size=(self.size, self.size))
        return self.net(x)


class Decoder(nn.Module):
    """``G``: codes N×latent → images N×C×H×W in [0, 1] (Defense-GAN's generator, table 6's batch norm)."""

    def __init__(self, channels: int = 1, size: int = 28, width: int = 64, latent: int = LATENT) -> None:
        super().__init__()
        self.channels, self.size, self.latent = channels, size, latent
        s = _grid(size)
        self.fc = nn.Sequential(nn.Linear(latent, 4 * width * s * s), nn.ReLU(),
                                nn.Unflatten(1, (4 * width, s, s)))
        self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * width, 2 * width, 5, 2, padding=2, output_padding=1),
                                 nn.BatchNorm2d(2 * width), nn.ReLU())
        self.crop = -(-size // 4)  # 8×8 → 7×7 for 28×28 images
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 5, 2, padding=2, output_padding=1),
                                 nn.BatchNorm2d(width), nn.ReLU(),
                                 nn.ConvTranspose2d(width, channels, 5, 2, padding=2, output_padding=1),
                                 nn.Sigmoid())

    def forward(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[1] != self.latent or not z.is_floating_point():
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z: expected a float N×{self.latent} tensor of codes, got {got}")
        h = self.up1(self.fc(z))[:, :, :self.crop, :self.crop]
        return self.up2(h)


class Discriminator(nn.Module):
    """``D``: the encoder's convolutions and one unit; returns the logit of "real" (N)."""

    def __init__(self, channels: int = 1, size: int = 28, width: int = 64) -> None:
        super().__init__()
        self.channels, self.size = channels, size
        self.net = nn.Sequential(_convs(channels, width), nn.Linear(4 * width * _grid(size) ** 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        check_image_shape(x, "x", channels=self.channels, size=(self.size, self.size))
        return self.net(x).squeeze(1)


class AEGAN(nn.Module):
    """Encoder, decoder and (for the GAN variants) discriminator; ``forward`` is the reconstruction
    ``G(F(x))`` (AE-GAN+r without search, and the differentiable surrogate of the search for BPDA)."""

    def __init__(self, channels: int = 1, size: int = 28, width: int = 64, latent: int = LATENT,
                 adversarial: bool = True) -> None:
        super().__init__()
        self.encoder = Encoder(channels, size, width, latent)
        self.decoder = Decoder(channels, size, width, latent)
        self.discriminator = Discriminator(channels, size, width) if adversarial else None

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def sample_prior(n: int, latent: int, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> Tensor:
    """``n`` codes from the prior ``U(−1, 1)^latent`` (global RNG unless ``generator`` is given)."""
    return torch.rand(n, latent, generator=generator).to(device) * 2 - 1


def aegan_step(model: AEGAN, opt_fg: torch.optim.Optimizer, opt_d: torch.optim.Optimizer | None, *,
               adversarial: bool = True, noise_max: float = NOISE_MAX, clip: bool = True) -> Step:
    """AE-GAN's step on a batch ``(x,)`` (Eq. 5, algorithm 1).

    1. With ``adversarial``: ``D`` learns real ``x`` (label 1) against ``G(z)``, ``z`` from the prior
       (label 0).
    2. ``σ ~ U(0, noise_max)``, ``η ~ N(0, σ²)`` per pixel; encoder and decoder minimise the squared L2
       reconstruction error ``‖G(F(x + η)) − x‖²`` per image (batch mean) plus, with ``adversarial``,
       ``G``'s GAN loss ``−log D(G(z))`` on fresh prior codes. Both go through the decoder in one batch,
       so its batch-norm statistics always see both kinds of code.
    """
    latent = model.decoder.latent

    def step(loop: Loop, batch: tuple[Tensor, ...]) -> dict[str, float]:
        (x,) = batch
        n, metrics = len(x), {}
        if adversarial:
            with loop.autocast():
                with torch.no_grad():
                    fake = model.decoder(sample_prior(n, latent, loop.device))
                real, fake = model.discriminator(x).float(), model.discriminator(fake).float()
                d_loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                          + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
            loop.update(opt_d, d_loss)
            metrics["d_loss"] = d_loss.item()
        sigma = noise_max * torch.rand(()).item()
        noisy = x + sigma * torch.randn_like(x) if sigma > 0 else x
        noisy = noisy.clamp(0, 1) if clip else noisy
        with loop.autocast():
            codes = model.encoder(noisy)
            if adversarial:
                codes = torch.cat([codes, sample_prior(n, latent, loop.device)])
            images = model.decoder(codes).float()
            rec = (images[:n] - x).pow(2).flatten(1).sum(1).mean()
            loss = rec
            if adversarial:
                logits = model.discriminator(images[n:]).float()
                g_adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
                loss = loss + g_adv
                metrics["g_adv"] = g_adv.item()
        loop.update(opt_fg, loss)
        metrics["rec"] = rec.item()
        return metrics

    return step


def train_aegan(model: AEGAN, x: Tensor, *, epochs: int, batch_size: int = 100, lr: float = 2e-4,
                noise_max: float = NOISE_MAX, clip: bool = True, val: Tensor | None = None, seed: int = 0,
                desc: str = "AE-GAN") -> dict[str, Any]:
    """Train ``model`` in place with :func:`aegan_step` on the training engine (:func:`purify_lib.train.run`).

    The variant follows the model: with a discriminator the GAN game is played (AE-GAN), without it the
    model is a plain auto-encoder (AE); ``noise_max`` > 0 adds the noise regulariser (+r). Adam with
    ``betas=(0.5, 0.999)`` for every network (table 4: lr 2e-4, batch 100, 60 epochs).

    Args:
        val: clean validation images: their mean reconstruction MSE per pixel is recorded after every
            epoch (``val_mse``).

    Returns:
        The engine's history: per-epoch ``rec`` (squared error per image), ``d_loss`` and ``g_adv`` (GAN
        variants), ``val_mse`` (with ``val``), ``seconds``.
    """
    check_images(x, "x", channels=model.encoder.channels, size=(model.encoder.size, model.encoder.size))
    if len(x) == 0:
        raise ValueError("x: expected at least one training image, got 0")
    check_positive(lr, "lr")
    check_positive(noise_max, "noise_max", allow_zero=True)
    if val is not None:
        check_images(val, "val", channels=model.encoder.channels)
    adversarial = model.discriminator is not None
    fg = [*model.encoder.parameters(), *model.decoder.parameters()]
    opt_fg = torch.optim.Adam(fg, lr=lr, betas=(0.5, 0.999))
    opt_d = None
    if adversarial:
        opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    step = aegan_step(model, opt_fg, opt_d, adversarial=adversarial, noise_max=noise_max, clip=clip)
    validate = None if val is None else (lambda: {"val_mse": _val_mse(model, val)})
    return run(step, (x,), epochs=epochs, batch_size=batch_size, modules=[model],
               optimizers=[o for o in (opt_fg, opt_d) if o is not None], seed=seed, validate=validate,
               desc=desc)


def _val_mse(model: nn.Module, x: Tensor) -> float:
    """Mean reconstruction MSE per pixel of ``model`` (``G(F(x))``) on ``x``."""
    return reconstruction_error(predict(model, x), x).mean().item()


# ------------------------------------------------------------------------------------- the latent search
class Search(NamedTuple):
    """What :func:`latent_search` found: per image the best ``z`` (N×latent), ``images`` ``G(z)``, their
    per-pixel MSE ``errors`` against the input (N), and ``passes``, generator evaluations per image."""

    z: Tensor
    images: Tensor
    errors: Tensor
    passes: int


def _check_codes(z0: object, n: int, latent: int) -> Tensor:
    if (not isinstance(z0, Tensor) or not z0.is_floating_point() or z0.ndim not in (2, 3) or len(z0) != n
            or z0.shape[-1] != latent):
        got = tuple(z0.shape) if isinstance(z0, Tensor) else type(z0).__name__
        raise ValueError(f"z0: expected a float N×{latent} or N×R×{latent} tensor with N = {n}, got {got}")
    if not torch.isfinite(z0).all():
        raise ValueError("z0: contains NaN or inf")
    return z0


def latent_search(decoder: nn.Module, x: Tensor, z0: Tensor, *, steps: int, lr: float, momentum: float = 0.0,
                  halve_every: int | None = None, decay_at: float | None = None, decay: float = 0.1,
                  create_graph: bool = False) -> Search:
    """Gradient descent on ``J(z) = mean((G(z) − x)²)`` per image, batched over images and restarts.

    Algorithm 2 of the paper (``halve_every=5``, no momentum, ``z0 = F(x)``) and Defense-GAN's
    reconstruction (``R`` random ``z0`` per image, ``momentum=0.7``, ``decay_at=0.8``) are both this loop.

    Args:
        decoder: codes N×latent → images shaped like ``x`` (its ``latent`` attribute names the code size).
        x: the images to reconstruct (N×C×H×W).
        z0: starting codes, N×latent or N×R×latent (``R`` restarts per image, all run in one batch).
        steps: gradient steps ``L`` (0: only evaluate ``z0``).
        lr: the initial step ``η₀``.
        momentum: heavy-ball momentum (0: plain gradient descent).
        halve_every: halve the step after every this many steps (algorithm 2: 5).
        decay_at: multiply the step by ``decay`` from this fraction of the steps on (Defense-GAN: 0.8, 0.1).
        create_graph: keep the graph of every step, so that the result is differentiable with respect to
            ``x`` and ``z0`` (the paper's "white-box" attack unrolls the search this way).

    Returns:
        A :class:`Search`. Per image and restart the best iterate evaluated is kept (so the error never
        exceeds that of ``z0``), then per image the best restart. ``passes = R·(steps + 1)``.
    """
    check_image_shape(x, "x")
    latent = getattr(decoder, "latent", None)
    if not isinstance(latent, int):
        raise ValueError("decoder: expected a generator with an integer attribute `latent` (the code size)")
    z0 = _check_codes(z0, len(x), latent)
    steps = check_int(steps, "steps", 0)
    lr = check_positive(lr, "lr")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum: expected a number in [0, 1), got {momentum!r}")
    if halve_every is not None:
        halve_every = check_int(halve_every, "halve_every", 1)
    if decay_at is not None and not 0.0 <= decay_at <= 1.0:
        raise ValueError(f"decay_at: expected a fraction in [0, 1], got {decay_at!r}")
    n, restarts = len(x), (z0.shape[1] if z0.ndim == 3 else 1)
    target = x.repeat_interleave(restarts, 0) if restarts > 1 else x
    z = z0.reshape(n * restarts, latent).to(x.device)
    with torch.enable_grad():
        if not create_graph or not z.requires_grad:
            z = z.detach().requires_grad_(True)
        velocity = torch.zeros_like(z)
        best_z = best_images = best_err = None
        for k in range(steps + 1):
            images = decoder(z)
            err = (images - target).pow(2).flatten(1).mean(1)
            kept = (z, images, err) if create_graph else (z.detach(), images.detach(), err.detach())
            if best_err is None:
                best_z, best_images, best_err = kept
            else:
                better = kept[2] < best_err
                best_z = torch.where(better[:, None], kept[0], best_z)
                best_images = torch.where(better.view(-1, *[1] * (x.ndim - 1)), kept[1], best_images)
                best_err = torch.where(better, kept[2], best_err)
            if k == steps:
                break
            (grad,) = torch.autograd.grad(err.sum(), z, create_graph=create_graph)
            step = lr * (0.5 ** (k // halve_every) if halve_every else 1.0)
            if decay_at is not None and k >= decay_at * steps:
                step *= decay
            velocity = momentum * velocity + grad
            z = z - step * velocity
            if not create_graph:
                z = z.detach().requires_grad_(True)
                velocity = velocity.detach()
    pick = best_err.view(n, restarts).argmin(1) + torch.arange(n, device=best_err.device) * restarts
    return Search(best_z[pick], best_images[pick], best_err[pick], restarts * (steps + 1))


def reconstruction_error(images: Tensor, x: Tensor, metric: str = "mse") -> Tensor:
    """Per-image mean squared (``"mse"``) or absolute (``"l1"``) difference per pixel between ``images`` and
    ``x`` (N)."""
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    check_image_shape(images, "images")
    if images.shape != x.shape:
        raise ValueError(f"x: expected the shape of images {tuple(images.shape)}, got {tuple(x.shape)}")
    diff = (images - x).flatten(1)
    return diff.pow(2).mean(1) if metric == "mse" else diff.abs().mean(1)


class AEGANPurifier(nn.Module):
    """The purifier ``x ↦ G(z*)``: AE-GAN+r (``search=False``: ``G(F(x))``), AE-GAN+rs (``search=True``: the
    encoder-assisted search of algorithm 2), with the detector (``threshold``) in front if given.

    Args:
        encoder, decoder: the trained ``F`` and ``G`` (of any variant: AE, AE-GAN, AE-GAN+r).
        steps, lr, halve_every: the search's ``L``, ``η₀`` and halving period (paper: 15 or 20, ?, 5).
        search: run the search (the "+s" of the paper) or return ``G(F(x))``.
        threshold: with ``search``: search only inputs whose reconstruction error (``metric``) of ``G(F(x))``
            exceeds it (detected as adversarial) and return ``G(F(x))`` for the others; ``None`` searches
            every input (the paper's tables 1–3).
        metric: the detector's reconstruction error, ``"mse"`` or ``"l1"`` per pixel.
        unrolled: differentiate through the search's steps (the paper's white-box attack); otherwise the
            searched outputs carry no gradient and the module declares ``differentiable = False``, so
            white-box attacks refuse it (use BPDA with :attr:`AEGAN.forward` as the surrogate).
    """

    def __init__(self, encoder: Encoder, decoder: Decoder, *, steps: int = 15, lr: float = 1.0,
                 halve_every: int | None = 5, search: bool = True, threshold: float | None = None,
                 metric: str = "mse", unrolled: bool = False) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module) or not isinstance(decoder, nn.Module):
            raise ValueError("encoder, decoder: expected nn.Modules")
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
        if threshold is not None:
            check_positive(threshold, "threshold", allow_zero=True)
        self.encoder, self.decoder = encoder, decoder
        self.steps, self.lr = check_int(steps, "steps", 0), check_positive(lr, "lr")
        self.halve_every, self.search, self.threshold = halve_every, search, threshold
        self.metric, self.unrolled = metric, unrolled
        self.differentiable = (not search) or unrolled
        # an inference-time module, built in eval mode: evaluation helpers that restore the mode they found
        # then leave the shared encoder and decoder in eval mode too
        self.eval()

    @property
    def passes_per_image(self) -> int:
        """Generator evaluations per image when every input is searched (``L + 1``; 1 without search)."""
        return self.steps + 1 if self.search else 1

    def scores(self, x: Tensor, batch_size: int = 500) -> Tensor:
        """The detector's score: the reconstruction error of ``G(F(x))`` per image (N), batched, without
        gradients, in eval mode."""
        recon = predict(AEGANPurifier(self.encoder, self.decoder, search=False), x, batch_size)
        return reconstruction_error(recon, x, self.metric)

    def forward(self, x: Tensor) -> Tensor:
        z0 = self.encoder(x)
        if self.search and self.threshold is None:
            return self._search(x, z0)
        recon = self.decoder(z0)
        if not self.search:
            return recon
        flagged = reconstruction_error(recon, x, self.metric) > self.threshold
        if not flagged.any():
            return recon
        searched = self._search(x[flagged], z0[flagged])
        index = flagged.nonzero().squeeze(1)
        return (recon if self.unrolled else recon.detach()).index_put((index,), searched)

    def _search(self, x: Tensor, z0: Tensor) -> Tensor:
        return latent_search(self.decoder, x, z0, steps=self.steps, lr=self.lr, halve_every=self.halve_every,
                             create_graph=self.unrolled).images

    def extra_repr(self) -> str:
        return (f"steps={self.steps}, lr={self.lr}, halve_every={self.halve_every}, search={self.search}, "
                f"threshold={self.threshold}, metric={self.metric!r}, unrolled={self.unrolled}")


def choose_search_lr(encoder: Encoder, decoder: Decoder, x: Tensor,
                     candidates: Sequence[float] = (0.1, 1.0, 10.0), *, corrupted: Tensor | None = None,
                     steps: int = 15, halve_every: int | None = 5, noise: float = 0.3,
                     seed: int = 0) -> tuple[float, dict[float, float]]:
    """The initial search step ``η₀`` that best restores clean images: the candidate whose search, run on
    ``corrupted`` (default: ``clip(x + noise·N(0, 1), 0, 1)``), returns images with the lowest mean MSE per
    pixel against the clean ``x``.

    Use validation images, never test ones. (Scoring the reconstruction of the clean images themselves
    rewards the largest step, which also reconstructs whatever perturbation an input carries.)

    Returns:
        ``(best, errors)``: the chosen step and the mean MSE per candidate.
    """
    check_images(x, "x")
    check_positive(noise, "noise", allow_zero=True)
    if not candidates:
        raise ValueError("candidates: expected at least one step size")
    if corrupted is None:
        gaussian = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x)
        corrupted = (x + noise * gaussian).clamp(0, 1)
    check_images(corrupted, "corrupted")
    if corrupted.shape != x.shape:
        raise ValueError(f"corrupted: expected the shape of x {tuple(x.shape)}, got {tuple(corrupted.shape)}")
    errors = {}
    for lr in candidates:
        purifier = AEGANPurifier(encoder, decoder, steps=steps, lr=lr, halve_every=halve_every)
        errors[float(lr)] = reconstruction_error(predict(purifier, corrupted), x).mean().item()
    return min(errors, key=errors.get), errors


# ------------------------------------------------------------------------- the black-box substitute
def _jacobian_augment(substitute: nn.Module, x: Tensor, labels: Tensor, lam: float) -> Tensor:
    """Papernot et al.'s new points ``x + λ·sign(∇ₓ substitute(x)[label])``, clipped to [0, 1]."""
    device = model_device(substitute)
    out = []
    substitute.eval()
    for xb, yb in zip(x.split(500), labels.split(500)):
        xb = xb.to(device).requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(substitute(xb).gather(1, yb.to(device)[:, None]).sum(), xb)
        out.append((xb + lam * grad.sign()).clamp(0, 1).detach().to(x.device))
    return torch.cat(out)


def train_substitute(substitute: nn.Module, oracle: nn.Module, x_seed: Tensor, *, rounds: int,
                     lam: float = 0.1, epochs: int, batch_size: int = 100, lr: float = 1e-3,
                     seed: int = 0) -> dict[str, Any]:
    """Papernot et al.'s (2017) black-box substitute, trained in place: label the current set with the
    oracle's predictions, train the substitute on it (:func:`purify_lib.train.fit`), add one
    Jacobian-augmented copy of the set, ``rounds`` times. The seed set (150 held-out test images in the paper)
    doubles each round.

    Returns:
        ``{"sizes": training-set size per round, "agreement": the substitute's agreement with the oracle on
        its last training set}``.
    """
    check_images(x_seed, "x_seed")
    rounds = check_int(rounds, "rounds", 1)
    check_positive(lam, "lam")
    x, sizes = x_seed, []
    for r in range(rounds):
        labels = predict(oracle, x).argmax(1).cpu()
        sizes.append(len(x))
        fit(substitute, x, labels, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed + r,
            desc=f"substitute round {r + 1}/{rounds}")
        if r < rounds - 1:
            x = torch.cat([x, _jacobian_augment(substitute, x, labels, lam)])
    agreement = (predict(substitute, x).argmax(1).cpu() == labels).float().mean().item()
    return {"sizes": sizes, "agreement": agreement}

