"""Chapter 4's analysis of AE-GAN+rs: per-image outcomes of the detection pipeline at any threshold, the
detector-aware attack on it, the half-masked inputs of Fig. 5 and timed purification.

The paper's method itself (networks, losses, step, training) is :mod:`purify_lib.defenses.aegan`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..adaptive import detector_aware_loss, worst_per_image
from ..attacks import pgd
from ..checks import check_images, check_labels
from ..defenses.aegan import METRICS, AEGANPurifier, Decoder, Encoder, reconstruction_error
from ..evaluate import predict

__all__ = ["outcomes", "at_threshold", "ReconstructionDetector", "detector_aware_attack", "half_mask",
           "purify_timed"]


def outcomes(
    purifier: AEGANPurifier, classifier: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500
) -> dict[str, Tensor]:
    """Per image, what the detection pipeline needs at any threshold: the detector's scores (``mse`` and
    ``l1`` of ``G(F(x))``) and whether ``classifier`` is right on ``G(F(x))`` (``correct_r``, AE-GAN+r) and on
    the searched image (``correct_rs``, AE-GAN+rs with ``purifier``'s search settings). All on the CPU."""
    check_images(x, "x")
    check_labels(y, len(x))
    recon = predict(AEGANPurifier(purifier.encoder, purifier.decoder, search=False), x, batch_size)
    searched = predict(
        AEGANPurifier(purifier.encoder, purifier.decoder, steps=purifier.steps, lr=purifier.lr,
                      halve_every=purifier.halve_every),
        x,
        batch_size,
    )
    y = y.to(x.device)
    return {"mse": reconstruction_error(recon, x, "mse").cpu(),
            "l1": reconstruction_error(recon, x, "l1").cpu(),
            "correct_r": (predict(classifier, recon, batch_size).argmax(1) == y).cpu(),
            "correct_rs": (predict(classifier, searched, batch_size).argmax(1) == y).cpu()}


def at_threshold(
    clean: Mapping[str, Tensor], adversarial: Mapping[str, Tensor], threshold: float, metric: str = "mse"
) -> dict[str, float]:
    """The detection pipeline at one threshold, from :func:`outcomes` of clean and adversarial images: an
    image is flagged when its score (``metric``) exceeds ``threshold``, as in :class:`AEGANPurifier`.

    Returns (fractions): ``fpr`` (clean images flagged), ``detection`` (adversarial images flagged),
    ``clean_acc`` and ``adv_acc`` (flagged images are searched, the others get ``G(F(x))``), and
    ``adv_correct_or_rejected`` (flagged images rejected instead: counted as defended).
    """
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    flag_c, flag_a = clean[metric] > threshold, adversarial[metric] > threshold

    def mean(t: Tensor) -> float:
        return t.float().mean().item()

    return {"fpr": mean(flag_c), "detection": mean(flag_a),
            "clean_acc": mean(torch.where(flag_c, clean["correct_rs"], clean["correct_r"])),
            "adv_acc": mean(torch.where(flag_a, adversarial["correct_rs"], adversarial["correct_r"])),
            "adv_correct_or_rejected": mean(flag_a | adversarial["correct_r"])}


# ------------------------------------------------------------------------------------ adaptive attacks
class ReconstructionDetector(nn.Module):
    """``x ↦ (classifier(G(F(x))), err(x))``: what the detection pipeline does to an input that passes the
    detector, with the detector's score, for a detector-aware attack (``adaptive.detector_aware_loss``)."""

    def __init__(
        self, encoder: Encoder, decoder: Decoder, classifier: nn.Module, metric: str = "mse"
    ) -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
        self.encoder, self.decoder, self.classifier, self.metric = encoder, decoder, classifier, metric
        self.eval()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        recon = self.decoder(self.encoder(x))
        return self.classifier(recon), reconstruction_error(recon, x, self.metric)


def detector_aware_attack(purifier: AEGANPurifier, classifier: nn.Module, x: Tensor, y: Tensor, *, eps: float,
                          alpha: float, steps: int, lambdas: Sequence[float] = (1.0, 10.0),
                          candidates: Sequence[Tensor] = ()) -> Tensor:
    """PGD on ``CE(classifier(G(F(x))), y) − λ·relu(err(x)/τ − 1)``: misclassify through the no-search path
    while keeping the reconstruction error under the purifier's threshold ``τ``, so the search never runs.

    One PGD per ``λ``; per example the worst case for the whole detection pipeline is kept among these and
    ``candidates`` (e.g. the oblivious examples): misclassified *and* undetected first, then misclassified.
    """
    if purifier.threshold is None or not purifier.search:
        raise ValueError("purifier: expected a searching purifier with a detection threshold")
    if not lambdas:
        raise ValueError("lambdas: expected at least one weight")
    tau = max(purifier.threshold, 1e-12)
    model = ReconstructionDetector(purifier.encoder, purifier.decoder, classifier, purifier.metric)
    tried = [
        pgd(model, x, y, eps=eps, alpha=alpha, steps=steps,
            loss_fn=detector_aware_loss(lam, penalty=lambda s: F.relu(s / tau - 1)))
        for lam in lambdas
    ]
    return _worst_for_pipeline(purifier, classifier, y, [*tried, *candidates])


def _worst_for_pipeline(
    purifier: AEGANPurifier, classifier: nn.Module, y: Tensor, candidates: Sequence[Tensor]
) -> Tensor:
    ranks = []
    for x_adv in candidates:
        wrong = predict(classifier, predict(purifier, x_adv)).argmax(1) != y.to(x_adv.device)
        hidden = purifier.scores(x_adv) <= purifier.threshold
        ranks.append(wrong.long() + (wrong & hidden).long())
    return worst_per_image(candidates, ranks)


def half_mask(x: Tensor) -> Tensor:
    """The paper's half-masked input: the bottom half of every image set to 0."""
    check_images(x, "x")
    out = x.clone()
    out[:, :, x.shape[2] // 2 :, :] = 0.0
    return out


def purify_timed(purifier: nn.Module, x: Tensor, batch_size: int = 500) -> tuple[Tensor, float]:
    """``purifier(x)`` batched in eval mode, and the wall-clock seconds it took."""
    check_images(x, "x")
    start = time.perf_counter()
    out = predict(purifier, x, batch_size)
    return out, time.perf_counter() - start
