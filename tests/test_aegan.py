"""AE-GAN+rs, Defense-GAN and MagNet: architectures, training steps, the shared latent search, the detector,
gradients (unrolled, masked, BPDA), the black-box substitute and input validation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from purify_lib.analysis import aegan as analysis
from purify_lib import adaptive, evaluate, metrics
from purify_lib.defenses import aegan, defensegan, magnet
from purify_lib.defenses.aegan import AEGAN, AEGANPurifier, Decoder, Discriminator, Encoder, latent_search

N_TRAIN = 600


@pytest.fixture(scope="module")
def trained(mnist_data):
    """A narrow AE-GAN+r (width 8, latent 16) after 2 epochs on ``N_TRAIN`` MNIST images, and its history."""
    torch.manual_seed(0)
    model = AEGAN(1, 28, width=8, latent=16)
    history = aegan.train_aegan(model, mnist_data["x_train"][:N_TRAIN], epochs=2, batch_size=50, lr=2e-3,
                                noise_max=0.3, val=mnist_data["x_test"][:100], seed=0)
    return model.eval(), history


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_shapes_and_ranges(channels, size):
    torch.manual_seed(0)
    x = torch.rand(4, channels, size, size)
    enc, dec = Encoder(channels, size, 8, 16), Decoder(channels, size, 8, 16)
    disc = Discriminator(channels, size, 8)
    z = enc(x)
    assert z.shape == (4, 16) and z.abs().max() <= 1
    out = dec(z)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert disc(x).shape == (4,)
    assert defensegan.Critic(channels, size, 8)(x).shape == (4,)
    assert AEGAN(channels, size, 8, 16, adversarial=False).discriminator is None
    enc.train()
    assert not AEGANPurifier(enc, dec).training and not enc.training  # inference modules start in eval mode


def test_bad_inputs_rejected():
    enc, dec = Encoder(1, 28, 8, 16), Decoder(1, 28, 8, 16)
    with pytest.raises(ValueError, match="channels"):
        enc(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="size"):
        enc(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="z: expected"):
        dec(torch.rand(2, 15))
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="z0"):
        latent_search(dec, x, torch.rand(3, 16), steps=2, lr=1.0)
    with pytest.raises(ValueError, match="z0"):
        latent_search(dec, x, torch.full((2, 16), float("nan")), steps=2, lr=1.0)
    with pytest.raises(ValueError, match="steps"):
        latent_search(dec, x, torch.rand(2, 16), steps=-1, lr=1.0)
    with pytest.raises(ValueError, match="momentum"):
        latent_search(dec, x, torch.rand(2, 16), steps=2, lr=1.0, momentum=1.0)
    with pytest.raises(ValueError, match="decoder"):
        latent_search(nn.Identity(), x, torch.rand(2, 16), steps=2, lr=1.0)
    with pytest.raises(ValueError, match="metric"):
        AEGANPurifier(enc, dec, metric="l2")
    with pytest.raises(ValueError, match="threshold"):
        AEGANPurifier(enc, dec, threshold=-1.0)
    with pytest.raises(ValueError, match="x: expected the shape"):
        aegan.reconstruction_error(x, x[:1])
    with pytest.raises(ValueError, match="init"):
        defensegan.DefenseGANPurifier(dec, init="cauchy")
    with pytest.raises(ValueError, match="candidates"):
        aegan.choose_search_lr(enc, dec, x, candidates=())
    with pytest.raises(ValueError, match="fpr"):
        magnet.threshold_at_fpr(torch.rand(10), fpr=1.0)


def test_training_learns_and_variants(trained, mnist_data):
    model, history = trained
    assert history["rec"][-1] < 0.6 * history["rec"][0], history["rec"]  # measured 54 → 22
    assert {"d_loss", "g_adv", "val_mse", "seconds"} <= set(history)
    ae = AEGAN(1, 28, width=8, latent=16, adversarial=False)
    h = aegan.train_aegan(ae, mnist_data["x_train"][:100], epochs=1, batch_size=50, noise_max=0.0)
    assert "d_loss" not in h and "g_adv" not in h and len(h["rec"]) == 1


def test_search_never_increases_error_and_finds_a_planted_code(trained):
    torch.manual_seed(0)
    dec = trained[0].decoder
    z_true = aegan.sample_prior(6, 16)
    with torch.no_grad():
        x = dec(z_true)
    z0 = aegan.sample_prior(6, 16)
    start = aegan.reconstruction_error(dec(z0), x)
    for lr in (1.0, 1e4):  # a sane step and one that overshoots: never worse than the start either way
        found = latent_search(dec, x, z0, steps=20, lr=lr, halve_every=5)
        assert (found.errors <= start + 1e-7).all()
        assert torch.allclose(found.errors, aegan.reconstruction_error(found.images, x), atol=1e-6)
    found = latent_search(dec, x, z0, steps=200, lr=10.0, momentum=0.7)  # Defense-GAN's optimiser
    assert found.errors.mean() < 0.1 * start.mean(), (found.errors.mean(), start.mean())  # measured 0.004
    assert found.passes == 201


def test_restarts_keep_the_best_and_count_passes():
    torch.manual_seed(1)
    dec = Decoder(1, 28, 8, 16).eval()
    x = torch.rand(3, 1, 28, 28)
    z0 = aegan.sample_prior(3 * 4, 16).view(3, 4, 16)
    batched = latent_search(dec, x, z0, steps=5, lr=50.0, momentum=0.7, decay_at=0.8)
    alone = torch.stack([latent_search(dec, x, z0[:, r], steps=5, lr=50.0, momentum=0.7, decay_at=0.8).errors
                         for r in range(4)], 1)
    assert torch.allclose(batched.errors, alone.min(1).values, atol=1e-6)
    assert batched.passes == 4 * 6
    purifier = defensegan.DefenseGANPurifier(dec, steps=5, restarts=4, init="uniform")
    assert purifier.passes_per_image == 24
    assert AEGANPurifier(Encoder(1, 28, 8, 16), dec, steps=15).passes_per_image == 16


def test_defensegan_draws_fresh_starts_each_call():
    torch.manual_seed(2)
    purifier = defensegan.DefenseGANPurifier(Decoder(1, 28, 8, 16).eval(), steps=3, restarts=2)
    x = torch.rand(2, 1, 28, 28)
    assert not torch.equal(purifier(x), purifier(x))
    torch.manual_seed(3)
    first = purifier(x)
    torch.manual_seed(3)
    assert torch.equal(first, purifier(x))


def test_purifier_modes_and_detector_threshold_is_monotonic(trained, mnist_data):
    model, _ = trained
    x = mnist_data["x_test"][:80]
    noisy = (x + 0.4 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    purifier = AEGANPurifier(model.encoder, model.decoder, steps=5, lr=1.0)
    with torch.no_grad():
        scores_c, scores_a = purifier.scores(x), purifier.scores(noisy)
        assert torch.equal(AEGANPurifier(model.encoder, model.decoder, search=False)(x), model(x))
        gated = AEGANPurifier(model.encoder, model.decoder, steps=5, lr=1.0,
                              threshold=float(scores_c.median()))
        out, recon, searched = gated(x), model(x), purifier(x)
    passed = scores_c <= scores_c.median()
    assert torch.equal(out[passed], recon[passed])
    assert torch.allclose(out[~passed], searched[~passed], atol=1e-6)
    labels = torch.cat([torch.zeros(80), torch.ones(80)])
    assert metrics.roc_auc(torch.cat([scores_c, scores_a]), labels) > 0.7  # measured 0.85
    y = mnist_data["y_test"][:80]
    clean = {"mse": scores_c, "l1": scores_c, "correct_r": y >= 0, "correct_rs": y >= 0}
    adv = {"mse": scores_a, "l1": scores_a, "correct_r": y < 0, "correct_rs": y >= 0}
    sweep = [analysis.at_threshold(clean, adv, float(t)) for t in torch.linspace(0, scores_a.max(), 12)]
    for a, b in zip(sweep, sweep[1:]):
        assert b["fpr"] <= a["fpr"] and b["detection"] <= a["detection"]
        assert b["adv_acc"] <= a["adv_acc"]  # here only the search classifies adversarial inputs right
    assert sweep[0]["fpr"] == 1.0 and sweep[-1]["fpr"] == 0.0


def test_bpda_gradient_where_autograd_vanishes(trained, mnist_model, mnist_data):
    model, _ = trained
    x = mnist_data["x_test"][:8]
    searched = AEGANPurifier(model.encoder, model.decoder, steps=3, lr=1.0)
    assert adaptive.gradient_is_masked(evaluate.Defended(searched, mnist_model), x)
    with pytest.raises(ValueError, match="masked"):
        evaluate.defended_system(mnist_model, searched, "whitebox", probe=x)
    bpda = evaluate.defended_system(mnist_model, searched, "bpda", backward=model)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(bpda(xg).logsumexp(1).sum(), xg)
    assert (grad.flatten(1).abs().amax(1) > 1e-6).all()
    unrolled = AEGANPurifier(model.encoder, model.decoder, steps=3, lr=1.0, unrolled=True)
    assert not adaptive.gradient_is_masked(evaluate.Defended(unrolled, mnist_model), x)
    with torch.no_grad():
        assert torch.allclose(unrolled(x), searched(x), atol=1e-6)


def test_choose_search_lr_and_outcomes(trained, mnist_data, mnist_model):
    model, _ = trained
    x, y = mnist_data["x_test"][:40], mnist_data["y_test"][:40]
    best, errors = aegan.choose_search_lr(model.encoder, model.decoder, x, (0.01, 1.0, 1e5), steps=5)
    assert best == min(errors, key=errors.get) and set(errors) == {0.01, 1.0, 1e5}
    found = analysis.outcomes(AEGANPurifier(model.encoder, model.decoder, steps=3), mnist_model, x, y)
    assert {k: v.shape for k, v in found.items()} == dict.fromkeys(("mse", "l1", "correct_r", "correct_rs"),
                                                                   (40,))
    corrupted = (x + 0.3).clamp(0, 1)
    best, errors = aegan.choose_search_lr(model.encoder, model.decoder, x, (0.01, 1.0), corrupted=corrupted,
                                          steps=3)
    assert best in errors and len(errors) == 2
    with pytest.raises(ValueError, match="corrupted"):
        aegan.choose_search_lr(model.encoder, model.decoder, x, (1.0,), corrupted=corrupted[:3])
    with pytest.raises(ValueError, match="threshold"):
        analysis.detector_aware_attack(AEGANPurifier(model.encoder, model.decoder), mnist_model, x, y,
                                       eps=0.3, alpha=0.1, steps=1)
    assert torch.equal(analysis.half_mask(x)[:, :, 14:], torch.zeros(40, 1, 14, 28))
    assert torch.equal(analysis.half_mask(x)[:, :, :14], x[:, :, :14])


def test_gradient_penalty_of_a_linear_critic():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        critic[1].weight.copy_(torch.tensor([[3.0, 0.0, 4.0, 0.0]]))  # ‖∇‖ = 5 everywhere
    real, fake = torch.rand(6, 1, 2, 2), torch.rand(6, 1, 2, 2)
    assert defensegan.gradient_penalty(critic, real, fake).item() == pytest.approx(16.0)


def test_wgan_gp_and_magnet_train(mnist_data):
    x = mnist_data["x_train"][:200]
    torch.manual_seed(0)
    g, c = Decoder(1, 28, 8, 16), defensegan.Critic(1, 28, 8)
    h = defensegan.train_defensegan(g, c, x, epochs=1, batch_size=20, n_critic=5)
    assert h["g_updates"] == 2 and len(h["wasserstein"]) == 1
    model = magnet.MagNet(1, 28, 8, 16)
    h = magnet.train_magnet(model, x, epochs=3, batch_size=20, lr=2e-3)
    assert h["mse"][-1] < 0.7 * h["mse"][0], h["mse"]
    scores = magnet.detector_scores(model.eval(), x, "l1")
    tau = magnet.threshold_at_fpr(scores, fpr=0.05)
    assert (scores > tau).float().mean() <= 0.05  # by construction, on the scores it was set on
    held_out = magnet.detector_scores(model, mnist_data["x_test"][:300], "l1")
    assert (held_out > tau).float().mean() <= 0.12  # clean test images it never saw: measured 0.053


def test_substitute_doubles_its_set_and_learns_the_oracle(mnist_data, mnist_model):
    torch.manual_seed(0)
    sub = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    found = aegan.train_substitute(sub, mnist_model, mnist_data["x_test"][:150], rounds=3, epochs=5, lr=3e-3)
    assert found["sizes"] == [150, 300, 600]
    assert evaluate.accuracy(sub, mnist_data["x_test"][150:], mnist_data["y_test"][150:]) > 0.5
