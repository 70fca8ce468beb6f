"""PSNR and SSIM against torchmetrics' class API; ROC, AUC and error rates on known answers and sklearn."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from purify_lib.metrics import auc, psnr, rates_at, roc_auc, roc_curve, ssim

SCORES = [0.1, 0.4, 0.35, 0.8]  # a detector's scores: higher = adversarial
LABELS = [0, 0, 1, 1]


def smooth_images(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Random images with structure: 4×4 noise upsampled bilinearly."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, channels, 4, 4, generator=g), size=(size, size), mode="bilinear",
                         align_corners=False)


def noisy(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def image_pairs(mnist_x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Uniform noise vs its noisy copy, smooth colour images vs noisy copies, real digits vs noisy copies."""
    uniform = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    smooth = smooth_images(6, 3, 32, seed=1)
    digits = mnist_x[:6]
    return [(noisy(uniform, 0.1, 2), uniform), (noisy(smooth, 0.05, 3), smooth),
            (noisy(digits, 0.2, 4), digits), (smooth_images(6, 1, 28, seed=5), digits)]


def test_psnr_and_ssim_match_torchmetrics_class_api_image_by_image(mnist_data) -> None:
    for x, ref in image_pairs(mnist_data["x_test"]):
        ours_psnr, ours_ssim = psnr(x, ref), ssim(x, ref)
        assert ours_psnr.shape == ours_ssim.shape == (len(x),)
        for i in range(len(x)):
            psnr_metric = PeakSignalNoiseRatio(data_range=1.0)
            ssim_metric = StructuralSimilarityIndexMeasure(data_range=1.0)
            psnr_metric.update(x[i:i + 1], ref[i:i + 1])
            ssim_metric.update(x[i:i + 1], ref[i:i + 1])
            assert ours_psnr[i].item() == pytest.approx(psnr_metric.compute().item(), abs=1e-4)
            assert ours_ssim[i].item() == pytest.approx(ssim_metric.compute().item(), abs=1e-4)


def test_psnr_hand_computed() -> None:
    for dtype in (torch.float64, torch.float32):  # torchmetrics converts dB in float32 even for float64 input
        x = torch.full((2, 3, 8, 8), 0.5, dtype=dtype)
        ref = torch.full((2, 3, 8, 8), 0.6, dtype=dtype)
        assert torch.allclose(psnr(x, ref), torch.tensor(20.0, dtype=dtype), atol=1e-4, rtol=0)  # MSE 0.01
    x = smooth_images(3, 1, 16, seed=0)
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()


def test_ssim_is_one_for_identical_images_and_falls_as_noise_grows(mnist_data) -> None:
    for x in (smooth_images(4, 3, 32, seed=0), mnist_data["x_test"][:4]):
        assert torch.allclose(ssim(x, x), torch.ones(len(x)), atol=1e-5)
        values = torch.stack([ssim(noisy(x, sigma, seed=7), x) for sigma in (0.02, 0.05, 0.1, 0.2, 0.4)])
        assert (values[1:] < values[:-1] - 0.01).all()  # every image, at every step
        assert (values[0] > 0.5).all() and (values[-1] < 0.5).all()


def test_image_metrics_reject_bad_inputs() -> None:
    x = smooth_images(2, 1, 16, seed=0)
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match="ref: expected shape"):
            metric(x, x[:1])
        with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\]"):
            metric(x * 2, x)
        with pytest.raises(ValueError, match="4-D"):
            metric(x[0], x[0])
        with pytest.raises(ValueError, match="ref: expected dtype"):
            metric(x, x.double())
    with pytest.raises(ValueError, match="at least 11×11"):
        ssim(x[..., :8, :8], x[..., :8, :8])


def test_roc_on_a_hand_made_example() -> None:
    fpr, tpr, thresholds = roc_curve(np.array(SCORES), torch.tensor(LABELS))
    np.testing.assert_array_equal(thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
    assert auc(fpr, tpr) == pytest.approx(0.75, abs=1e-12)
    assert roc_auc(torch.tensor(SCORES), LABELS) == pytest.approx(0.75, abs=1e-12)


def test_auc_extremes_and_ties() -> None:
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.8, 0.9, 0.1, 0.2], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == pytest.approx(0.5, abs=1e-12)
    fpr, tpr, thresholds = roc_curve([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.5])  # one step for the tied group, not a staircase
    np.testing.assert_array_equal(fpr, [0, 1])
    np.testing.assert_array_equal(tpr, [0, 1])
    # one positive tied with one of two negatives: wins against one, half against the other → 0.75
    assert roc_auc([0.2, 0.5, 0.5], [0, 0, 1]) == pytest.approx(0.75, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_roc_matches_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + 0.8 * labels
    if seed % 2:
        scores = np.round(scores, 1)  # many ties
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    fpr, tpr, thresholds = roc_curve(torch.from_numpy(scores), torch.from_numpy(labels))
    sk_fpr, sk_tpr, sk_thresholds = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    np.testing.assert_array_equal(thresholds, sk_thresholds)


def test_rates_at_hand_made_example_and_agreement_with_the_roc_curve() -> None:
    # 0.4 itself is flagged: score ≥ threshold
    assert rates_at(SCORES, LABELS, 0.4) == {"fpr": 0.5, "fnr": 0.5, "tpr": 0.5, "tnr": 0.5}
    assert rates_at(SCORES, LABELS, 0.35) == {"fpr": 0.5, "fnr": 0.0, "tpr": 1.0, "tnr": 0.5}
    assert rates_at(SCORES, LABELS, 0.5) == {"fpr": 0.0, "fnr": 0.5, "tpr": 0.5, "tnr": 1.0}
    assert rates_at(SCORES, LABELS, 0.0) == {"fpr": 1.0, "fnr": 0.0, "tpr": 1.0, "tnr": 0.0}
    assert rates_at(SCORES, LABELS, float("inf")) == {"fpr": 0.0, "fnr": 1.0, "tpr": 0.0, "tnr": 1.0}
    for f, t, threshold in zip(*roc_curve(SCORES, LABELS)):
        rates = rates_at(SCORES, LABELS, threshold)
        assert (rates["fpr"], rates["tpr"]) == (f, t)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 40),
       thresholds=st.lists(st.floats(-3, 3), min_size=2, max_size=6))
def test_rates_fall_as_the_threshold_rises(seed: int, n: int, thresholds: list[float]) -> None:
    rng = np.random.default_rng(seed)
    labels = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    scores = np.round(rng.normal(size=n), 1)
    rates = [rates_at(scores, labels, t) for t in sorted(thresholds)]
    for lo, hi in zip(rates, rates[1:]):
        assert hi["fpr"] <= lo["fpr"] and hi["tpr"] <= lo["tpr"]
    for r in rates:
        assert r["fpr"] + r["tnr"] == pytest.approx(1.0) and r["tpr"] + r["fnr"] == pytest.approx(1.0)


def test_detection_metrics_reject_bad_inputs() -> None:
    for fn in (roc_curve, roc_auc, lambda s, y: rates_at(s, y, 0.5)):
        with pytest.raises(ValueError, match="labels: expected 4 labels"):
            fn(SCORES, [0, 1, 1])
        with pytest.raises(ValueError, match="labels: expected only 0"):
            fn(SCORES, [0, 2, 1, 1])
        with pytest.raises(ValueError, match="at least one 0 .clean. and one 1"):
            fn(SCORES, [1, 1, 1, 1])
        with pytest.raises(ValueError, match="scores: contains NaN"):
            fn([0.1, float("nan"), 0.3, 0.4], LABELS)
        with pytest.raises(ValueError, match="scores: expected a 1-D"):
            fn(np.zeros((2, 2)), LABELS)
        with pytest.raises(ValueError, match="scores: expected at least one"):
            fn([], [])
    with pytest.raises(ValueError, match="threshold: expected a number"):
        rates_at(SCORES, LABELS, float("nan"))
    with pytest.raises(ValueError, match="threshold: expected a number"):
        rates_at(SCORES, LABELS, "0.5")
    with pytest.raises(ValueError, match="fpr: expected non-decreasing"):
        auc([0.0, 1.0, 0.5], [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        auc([0.0, 1.0], [0.0])
