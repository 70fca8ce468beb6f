"""Uncertainty of the book's numbers, and the verdict rules that use it.

An accuracy measured on ``n`` test images is a proportion: its 95% interval is Wilson's score interval
(:func:`wilson`), which stays inside [0, 1] and behaves at 0 and 1 where the normal approximation does not.
A difference of two accuracies measured on the same images gets a paired bootstrap interval over images
(:func:`paired_bootstrap`) when the per-image outcomes are at hand, and Newcombe's interval built from the two
Wilson intervals (:func:`difference`) when only the two proportions are (it ignores the pairing, so it is
wider than the paired one: conservative). A verdict compares an interval with a threshold (:func:`verdict`)
and says ``"inconclusive"`` when the interval straddles it. The intervals cover the sampling of test images
only, not the randomness of training.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .checks import check_int, check_positive

__all__ = ["Z95", "wilson", "difference", "paired_bootstrap", "verdict", "at_least", "at_most", "within",
           "ahead_by", "combine", "HOLDS", "FAILS", "INCONCLUSIVE"]

Z95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    return float(level)


def _z(level: float) -> float:
    if level == 0.95:
        return Z95
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2)))


def wilson(value: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``value`` observed on ``n`` trials.

    ``value`` is a fraction in [0, 1] (the successes are ``round(value·n)``). Returns ``(low, high)``.
    """
    n = check_int(n, "n", 1)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"value: expected a proportion in [0, 1], got {value!r}")
    z = _z(_check_level(level))
    p = round(value * n) / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def difference(a: float, n_a: int, b: float, n_b: int, level: float = 0.95) -> tuple[float, float, float]:
    """``b − a`` for two proportions, with Newcombe's hybrid score interval (his method 10, 1998).

    Built from the Wilson intervals of ``a`` (on ``n_a`` trials) and ``b`` (on ``n_b``). It treats the two
    samples as independent: on the same images it is wider than a paired interval, so a verdict drawn from
    it errs towards "inconclusive". Returns ``(difference, low, high)``.
    """
    la, ha = wilson(a, n_a, level)
    lb, hb = wilson(b, n_b, level)
    pa, pb = round(a * n_a) / n_a, round(b * n_b) / n_b
    d = pb - pa
    low = d - math.sqrt((pb - lb) ** 2 + (ha - pa) ** 2)
    high = d + math.sqrt((hb - pb) ** 2 + (pa - la) ** 2)
    return d, max(-1.0, low), min(1.0, high)


def paired_bootstrap(a: Tensor, b: Tensor, *, n_boot: int = 2_000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Mean of ``b − a`` over paired per-image values, with a percentile bootstrap interval over images.

    ``a`` and ``b`` hold one value per image (0/1 correctness, a PSNR, …), the same images in the same order.
    Returns ``mean``, ``low``, ``high``.
    """
    if not (isinstance(a, Tensor) and isinstance(b, Tensor) and a.ndim == 1 and a.shape == b.shape
            and len(a)):
        raise ValueError("a, b: expected two non-empty 1-D tensors of equal length")
    level = _check_level(level)
    n_boot = int(check_positive(n_boot, "n_boot"))
    diff = (b - a).double().cpu()
    idx = torch.randint(len(diff), (n_boot, len(diff)), generator=torch.Generator().manual_seed(seed))
    means = diff[idx].mean(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype)).tolist()
    return {"mean": diff.mean().item(), "low": low, "high": high}


def verdict(low: float, high: float, threshold: float) -> str:
    """Whether a claim "the quantity is at least ``threshold``" holds, given its interval ``[low, high]``.

    :data:`HOLDS` when the whole interval lies at or above the threshold, :data:`FAILS` when it lies below,
    :data:`INCONCLUSIVE` when it straddles it. For "at most ``t``", pass ``(-high, -low, -t)``.
    """
    for name, v in (("low", low), ("high", high), ("threshold", threshold)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise ValueError(f"{name}: expected a number, got {v!r}")
    if low > high:
        raise ValueError(f"low, high: expected low ≤ high, got {low} > {high}")
    if low >= threshold:
        return HOLDS
    return FAILS if high < threshold else INCONCLUSIVE


def at_least(value: float, n: int, threshold: float) -> str:
    """"The accuracy ``value`` (on ``n`` images) is at least ``threshold``", judged on its Wilson interval."""
    return verdict(*wilson(value, n), threshold)


def at_most(value: float, n: int, threshold: float) -> str:
    """"The accuracy ``value`` (on ``n`` images) is at most ``threshold``", judged on its Wilson interval."""
    low, high = wilson(value, n)
    return verdict(-high, -low, -threshold)


def ahead_by(a: float, n_a: int, b: float, n_b: int, points: float) -> str:
    """"``b`` exceeds ``a`` by at least ``points``" (a fraction: 0.05 is 5 points; negative: "falls short by
    at most"), judged on Newcombe's interval of ``b − a`` (:func:`difference`)."""
    _, low, high = difference(a, n_a, b, n_b)
    return verdict(low, high, points)


def within(a: float, n_a: int, b: float, n_b: int, points: float) -> str:
    """"``a`` and ``b`` differ by at most ``points``": holds when Newcombe's interval of ``b − a`` lies inside
    ``[−points, points]``, fails when it lies wholly outside, else inconclusive."""
    _, low, high = difference(a, n_a, b, n_b)
    if -points <= low and high <= points:
        return HOLDS
    return FAILS if low > points or high < -points else INCONCLUSIVE


def combine(*verdicts: str) -> str:
    """Several conditions together: fails if any fails, holds if all hold, else inconclusive."""
    unknown = set(verdicts) - {HOLDS, FAILS, INCONCLUSIVE}
    if not verdicts or unknown:
        raise ValueError(f"verdicts: expected at least one of {HOLDS!r}, {FAILS!r}, {INCONCLUSIVE!r}, "
                         f"got {sorted(unknown) or 'none'}")
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE
