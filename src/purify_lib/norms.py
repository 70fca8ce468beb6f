"""Sizes of adversarial perturbations: L0, L2 and L∞ per example, a summary over a batch, and the L2 a
minimum-norm attack needed to flip a right answer (:func:`flip_distances`)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .checks import check_images, check_labels
from .evaluate import predict

__all__ = ["perturbation_norms", "summarize_norms", "flip_distances"]


def perturbation_norms(x: Tensor, x_adv: Tensor, tol: float = 1e-6) -> dict[str, Tensor]:
    """Per-example norms of ``δ = x_adv − x``.

    Returns:
        ``l0``: the fraction of input components (pixels × channels) changed by more than ``tol``;
        ``l2``: the Euclidean norm; ``linf``: the largest absolute change. Each a length-N tensor.
    """
    check_images(x, "x")
    check_images(x_adv, "x_adv")
    if x.shape != x_adv.shape:
        raise ValueError(f"x_adv: expected shape {tuple(x.shape)} like x, got {tuple(x_adv.shape)}")
    delta = (x_adv - x).flatten(1)
    return {"l0": (delta.abs() > tol).float().mean(1), "l2": delta.norm(dim=1), "linf": delta.abs().amax(1)}


def summarize_norms(x: Tensor, x_adv: Tensor, changed: Tensor | None = None) -> dict[str, float]:
    """Means of the L0 fraction, L2 and L∞ of the perturbations over ``changed`` examples if given (e.g. only
    the successful ones of a minimum-norm attack), else over all; ``n`` is how many were averaged (the
    means are NaN when it is 0)."""
    norms = perturbation_norms(x, x_adv)
    keep = torch.ones(len(x), dtype=torch.bool) if changed is None else changed.detach().cpu().bool()
    if keep.shape != (len(x),):
        raise ValueError(f"changed: expected a length-{len(x)} mask, got shape {tuple(keep.shape)}")
    summary = {k: float(v.cpu()[keep].mean()) if keep.any() else float("nan") for k, v in norms.items()}
    return {**summary, "n": int(keep.sum())}


def flip_distances(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
    """‖x_adv − x‖₂ per image, over the images ``model`` classifies right on ``x`` and wrong on ``x_adv``
    (what a minimum-norm attack such as C&W-L2 needed to flip a right answer), on the CPU. ``x_adv`` may
    cover only the first images of ``x``."""
    check_images(x_adv, "x_adv")
    x, y = x[:len(x_adv)], y[:len(x_adv)]
    check_labels(y, len(x_adv))
    right = predict(model, x).argmax(1).cpu() == y.cpu()
    wrong = predict(model, x_adv).argmax(1).cpu() != y.cpu()
    return (x_adv - x).flatten(1).norm(dim=1).cpu()[right & wrong]
