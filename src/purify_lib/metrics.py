"""Image quality (PSNR, SSIM) and detection quality (ROC curve, AUC, error rates at a threshold).

PSNR and SSIM are per image, for images in [0, 1], computed with torchmetrics' functional API. The detection
metrics follow one convention: a higher score means "more likely adversarial" (label 1), and an example is
flagged adversarial when ``score ≥ threshold``. They are plain numpy, with no scikit-learn at run time.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import numpy as np
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from .checks import check_images

__all__ = ["psnr", "ssim", "roc_curve", "auc", "roc_auc", "rates_at"]

SSIM_WINDOW = 11  # Gaussian window side, pixels
SSIM_SIGMA = 1.5

ArrayLike = Tensor | np.ndarray | Sequence[float]


def _check_pair(x: Tensor, ref: Tensor) -> None:
    check_images(x, "x")
    check_images(ref, "ref")
    if x.shape != ref.shape:
        raise ValueError(f"ref: expected shape {tuple(x.shape)} like x, got {tuple(ref.shape)}")
    if x.dtype != ref.dtype or x.device != ref.device:
        raise ValueError(f"ref: expected dtype {x.dtype} on {x.device} like x, "
                         f"got {ref.dtype} on {ref.device}")


def psnr(x: Tensor, ref: Tensor) -> Tensor:
    """Per-image peak signal-to-noise ratio of ``x`` against ``ref`` in dB, data range 1.

    ``10·log10(1 / MSE)`` with the MSE over each image's channels and pixels. Identical images (MSE 0)
    give ``+inf``. Returns a length-N tensor.
    """
    _check_pair(x, ref)
    return peak_signal_noise_ratio(x, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(x: Tensor, ref: Tensor) -> Tensor:
    """Per-image structural similarity of ``x`` against ``ref``, data range 1.

    SSIM of Wang et al. (2004) with their constants: an 11×11 Gaussian window with σ = 1.5, K1 = 0.01,
    K2 = 0.03. The SSIM map is averaged over channels and every pixel, the image reflected at its borders
    (torchmetrics' convention; scikit-image crops the borders instead, so its values differ slightly).
    Images must be at least 11×11 pixels. Identical images give 1. Returns a length-N tensor.
    """
    _check_pair(x, ref)
    if min(x.shape[2:]) < SSIM_WINDOW:
        raise ValueError(f"x: SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, "
                         f"got {x.shape[2]}×{x.shape[3]}")
    return structural_similarity_index_measure(
        x, ref, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW, reduction="none",
        data_range=1.0, k1=0.01, k2=0.03)


def _as_vector(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: expected at least one value, got none")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got dtype {array.dtype}")
    return array


def _check_scores_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Scores as finite float64, labels as bool (True = adversarial); both classes present."""
    s = _as_vector(scores, "scores").astype(np.float64)
    y = _as_vector(labels, "labels")
    if len(y) != len(s):
        raise ValueError(f"labels: expected {len(s)} labels to match the {len(s)} scores, got {len(y)}")
    if not np.isfinite(s).all():
        raise ValueError("scores: contains NaN or inf")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels: expected only 0 (clean) and 1 (adversarial), "
                         f"got values {np.unique(y)[:10]}")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError(f"labels: need at least one 0 (clean) and one 1 (adversarial), "
                         f"got {int(y.sum())} ones among {len(y)}")
    return s, y


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve of a detector whose higher ``scores`` mean adversarial (``labels`` 1).

    One point per distinct score (tied scores form one step), from the strictest threshold down:
    ``thresholds`` is descending and starts with ``inf`` (nothing flagged: the point (0, 0)); point ``i``
    flags every example with ``score ≥ thresholds[i]``. Needs at least one clean and one adversarial example.

    Returns:
        ``(fpr, tpr, thresholds)``, float64 arrays of equal length; ``fpr`` and ``tpr`` end at 1.
    """
    s, y = _check_scores_labels(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # where each group of equal scores ends
    tp = np.cumsum(y)[last_of_tie]
    fp = last_of_tie + 1 - tp
    fpr = np.r_[0.0, fp / fp[-1]]
    tpr = np.r_[0.0, tp / tp[-1]]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def auc(fpr: ArrayLike, tpr: ArrayLike) -> float:
    """Area under the curve ``(fpr, tpr)`` by the trapezoidal rule; ``fpr`` must be non-decreasing."""
    x = _as_vector(fpr, "fpr").astype(np.float64)
    y = _as_vector(tpr, "tpr").astype(np.float64)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"fpr, tpr: expected two arrays of the same length ≥ 2, got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("fpr, tpr: contain NaN or inf")
    if (np.diff(x) < 0).any():
        raise ValueError("fpr: expected non-decreasing values")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve: the probability that a random adversarial example scores higher than a
    random clean one, ties counting one half. 1 is perfect, 0.5 chance, 0 perfectly reversed."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return auc(fpr, tpr)


def rates_at(scores: ArrayLike, labels: ArrayLike, threshold: float) -> dict[str, float]:
    """Error rates when every example with ``score ≥ threshold`` is flagged adversarial.

    Returns:
        ``fpr`` (clean examples flagged), ``tnr = 1 − fpr``, ``tpr`` (adversarial examples flagged) and
        ``fnr = 1 − tpr``, each a fraction of its class. Needs at least one example of each class.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or math.isnan(threshold):
        raise ValueError(f"threshold: expected a number, got {threshold!r}")
    s, y = _check_scores_labels(scores, labels)
    flagged = s >= threshold
    fpr = float(flagged[~y].mean())
    tpr = float(flagged[y].mean())
    return {"fpr": fpr, "fnr": 1.0 - tpr, "tpr": tpr, "tnr": 1.0 - fpr}
