"""Input validation shared by every public entry point.

Nothing is silently reshaped or clipped: a bad input raises ``ValueError`` naming
what was expected and what came.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_image_shape(
    x: object,
    name: str = "x",
    channels: int | Sequence[int] | None = None,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """The cheap part of :func:`check_images`: type, rank, dtype, channels and size, not the values.

    Fast enough for a model's ``forward``; returns ``x`` unchanged.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of images, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a 4-D N×C×H×W tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        if x.shape[1] not in allowed:
            raise ValueError(f"{name}: expected {' or '.join(map(str, allowed))} channels, got {x.shape[1]} "
                             f"(shape {tuple(x.shape)}; images must be N×C×H×W)")
    if size is not None and tuple(x.shape[2:]) != tuple(size):
        raise ValueError(f"{name}: expected images of size {size[0]}×{size[1]}, "
                         f"got {x.shape[2]}×{x.shape[3]}")
    return x


def check_images(x: object, name: str = "x", channels: int | Sequence[int] | None = None,
                 size: tuple[int, int] | None = None) -> Tensor:
    """Check that ``x`` is a float N×C×H×W tensor, finite and in [0, 1].

    Args:
        x: the candidate image batch.
        name: how to call it in the error message.
        channels: the allowed channel count(s), or ``None`` for any.
        size: the required (H, W), or ``None`` for any.

    Returns:
        ``x`` unchanged, so the call can be used inline.
    """
    check_image_shape(x, name, channels, size)
    if x.numel() and not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or inf")
    if x.numel():
        lo, hi = x.min().item(), x.max().item()
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name}: expected values in [0, 1], got min {lo:.4g} and max {hi:.4g}")
    return x


def check_labels(y: object, n: int, name: str = "y", num_classes: int | None = None) -> Tensor:
    """Check that ``y`` is a 1-D integer tensor of ``n`` class indices."""
    if not isinstance(y, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of labels, got {type(y).__name__}")
    if y.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D tensor of labels, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{name}: expected an integer tensor (int64), got dtype {y.dtype}")
    if y.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels to match the {n} images, got {y.shape[0]}")
    if num_classes is not None and y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name}: labels must lie in 0..{num_classes - 1}, "
                         f"got {int(y.min())}..{int(y.max())}")
    return y


def check_positive(value: float, name: str, allow_zero: bool = False) -> float:
    """Check that a hyper-parameter is a finite number > 0 (or ≥ 0)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or value == float("inf"):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return float(value)


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """Check that a count (epochs, steps, a batch size...) is an integer ≥ ``minimum`` (bools refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")
    return value
