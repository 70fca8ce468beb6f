"""APE-GAN: architecture, loss terms, the training schedule, caching and input validation."""
from __future__ import annotations

import math

import pytest
import torch

from purify_lib.attacks import fgsm
from purify_lib.defenses import apegan
from purify_lib.defenses.apegan import APEGAN, Discriminator, total_variation, train_apegan

N_PAIRS = 320


@pytest.fixture(scope="module")
def pairs(mnist_data, mnist_model):
    """``N_PAIRS`` clean MNIST training images and their FGSM examples (ε = 0.15) against ``mnist_model``."""
    x, y = mnist_data["x_train"][:N_PAIRS], mnist_data["y_train"][:N_PAIRS]
    return x, fgsm(mnist_model, x, y, eps=0.15)


@pytest.fixture(scope="module")
def trained(pairs):
    """A generator and history after 3 epochs on ``pairs``."""
    torch.manual_seed(0)
    g, d = APEGAN(1), Discriminator(1, 28)
    history = train_apegan(g, d, *pairs, epochs=3, batch_size=64, seed=0)
    return g, history


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_shapes_and_range(channels, size):
    torch.manual_seed(0)
    x = torch.rand(5, channels, size, size)
    g, d = APEGAN(channels), Discriminator(channels, size)
    out = g(x)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    assert d(x).shape == (5,)


def test_total_variation_by_hand():
    # forward differences, zero past the edge: gradient norms 1 at (0,0) and (0,1), 0 elsewhere
    x = torch.tensor([[0.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    assert total_variation(x, eps=0.0).item() == pytest.approx(0.5)
    # a single bright pixel in a 3×3 image: norms 1 (above), 1 (left), √2 (the pixel itself)
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    assert total_variation(x, eps=0.0).item() == pytest.approx((2 + math.sqrt(2)) / 9)
    assert total_variation(torch.full((2, 3, 4, 4), 0.3), eps=0.0).item() == 0.0


def test_generator_losses_weights():
    purified, clean = torch.full((2, 1, 4, 4), 0.5), torch.zeros(2, 1, 4, 4)
    logits = torch.zeros(2)  # D(G(x)) = 0.5, so -log D = log 2
    losses = apegan.generator_losses(purified, clean, logits, weights=(0.1, 0.45, 0.45))
    assert losses["mse"].item() == pytest.approx(0.25)
    assert losses["adv"].item() == pytest.approx(math.log(2))
    expected = 0.1 * 0.25 + 0.45 * math.log(2) + 0.45 * losses["tv"].item()
    assert losses["total"].item() == pytest.approx(expected)


def test_losses_decrease(trained):
    _, h = trained
    mse, d_loss = h["steps"]["mse"], h["steps"]["d_loss"]
    first, last = sum(mse[:2]) / 2, sum(mse[-2:]) / 2
    assert last < 0.65 * first, f"MSE {first:.4f} → {last:.4f}"  # measured 0.137 → 0.062
    # the discriminator learns too; the total generator loss need not fall, since its adversarial term rises
    # as D gets better
    assert sum(d_loss[-3:]) < sum(d_loss[:3])


def test_two_generator_steps_per_discriminator_step(trained):
    _, h = trained
    batches = 3 * math.ceil(N_PAIRS / 64)
    assert h["d_updates"] == batches and len(h["steps"]["d_loss"]) == batches
    assert h["g_updates"] == 2 * batches and len(h["steps"]["g_loss"]) == batches  # mean of the 2 G steps
    assert len(h["g_loss"]) == len(h["seconds"]) == 3  # per-epoch means


def test_g_steps_is_honoured(pairs):
    x, x_adv = pairs
    g, d = APEGAN(1), Discriminator(1, 28)
    calls = {"g": 0, "d": 0}
    g.register_forward_hook(lambda *_: calls.__setitem__("g", calls["g"] + 1))
    d.register_forward_hook(lambda *_: calls.__setitem__("d", calls["d"] + 1))
    h = train_apegan(g, d, x[:64], x_adv[:64], epochs=1, g_steps=3)
    assert (h["d_updates"], h["g_updates"]) == (1, 3)
    # one batch: G once for D's step, then 3 G steps; D sees real + fake, then each G step's output
    assert calls == {"g": 1 + 3, "d": 2 + 3}


def test_fgsm_pairs_cached(mnist_data, mnist_model):
    x, y = mnist_data["x_train"][:50], mnist_data["y_train"][:50]
    a = apegan.fgsm_pairs(mnist_model, x, y, 0.1, key={"test": "pairs"})
    assert torch.equal(a, fgsm(mnist_model, x, y, eps=0.1))
    assert torch.equal(apegan.fgsm_pairs(mnist_model, x, y, 0.1, key={"test": "pairs"}), a)


def test_bad_inputs_raise(pairs):
    x, x_adv = pairs
    g, d = APEGAN(1), Discriminator(1, 28)
    with pytest.raises(ValueError, match="channels"):
        g(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.rand(2, 1, 30, 30))
    with pytest.raises(ValueError, match="4-D"):
        g(torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match="shape of x_clean"):
        train_apegan(g, d, x[:10], x_adv[:9], epochs=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_apegan(g, d, x[:10], x_adv[:10] * 2, epochs=1)
    with pytest.raises(ValueError, match="weights"):
        train_apegan(g, d, x[:10], x_adv[:10], epochs=1, weights=(0.5, 0.5))
    with pytest.raises(ValueError, match="epochs"):
        train_apegan(g, d, x[:10], x_adv[:10], epochs=0)


def test_bim_iterates(mnist_data, mnist_model):
    x, y = mnist_data["x_test"][:40], mnist_data["y_test"][:40]
    eps = 0.1
    xs = apegan.bim_iterates(mnist_model, x, y, eps, steps=3)
    assert len(xs) == 3
    assert torch.equal(xs[0], fgsm(mnist_model, x, y, eps=eps))  # α = ε: X_1 is FGSM
    for x_i in xs:
        assert (x_i - x).abs().max() <= eps + 1e-6 and x_i.min() >= 0 and x_i.max() <= 1
    assert not torch.equal(xs[1], xs[0])
    with pytest.raises(ValueError, match="steps"):
        apegan.bim_iterates(mnist_model, x, y, eps, steps=0)


def test_random_sign_noise():
    x = torch.full((2, 1, 4, 4), 0.5)
    noisy = apegan.random_sign_noise(x, 0.1, seed=1)
    assert torch.allclose((noisy - x).abs(), torch.full_like(x, 0.1))
    assert torch.equal(noisy, apegan.random_sign_noise(x, 0.1, seed=1))
    assert apegan.random_sign_noise(torch.ones(1, 1, 4, 4), 0.3).max() <= 1
