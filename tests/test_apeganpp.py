"""APE-GAN++: the gradient penalty on known cases, the loss terms by hand, a short training run, validation
and checkpoint choice, the cache, the evaluation helpers and input validation."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from purify_lib.analysis import apeganpp as analysis
from purify_lib import evaluate, results
from purify_lib.attacks import fgsm
from purify_lib.defenses import apegan, apeganpp
from purify_lib.defenses.apegan import APEGAN
from purify_lib.defenses.apeganpp import Critic, critic_losses, generator_losses, gradient_penalty
from purify_lib.profiles import get_profile

SMALL_G = {"widths": (16, 32), "kernel": 4, "activation": "leaky_relu"}
N_CLEAN = 96  # × 4 ε = 384 pairs


def linear_critic(weight: torch.Tensor) -> nn.Module:
    """D(x) = w·x + 1 on flattened 1×4×4 images: its input gradient is w everywhere."""
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    with torch.no_grad():
        critic[1].weight.copy_(weight.view(1, 16))
        critic[1].bias.fill_(1.0)
    return critic


class HalfSquaredNorm(nn.Module):
    """D(x) = ½‖x‖²: its input gradient is x itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.flatten(1).pow(2).sum(1)


@pytest.fixture(scope="module")
def pairs(mnist_data, mnist_model):
    """The paper's ε mix of FGSM pairs on ``N_CLEAN`` training images, against ``mnist_model``."""
    x, y = mnist_data["x_train"][:N_CLEAN], mnist_data["y_train"][:N_CLEAN]
    return apeganpp.mixed_fgsm_pairs(mnist_model, x, y, apeganpp.EPS_MIX["mnist"], key={"test": "pairs"})


@pytest.fixture(scope="module")
def val(mnist_data, mnist_model):
    x, y = mnist_data["x_test"][:64], mnist_data["y_test"][:64]
    x_adv = fgsm(mnist_model, x, y, eps=0.3)
    return x, y, x_adv, y


@pytest.fixture(scope="module")
def trained(pairs, val, mnist_model):
    """A small generator and critic after 3 epochs on ``pairs``, validated each epoch."""
    torch.manual_seed(0)
    g, d = APEGAN(1, **SMALL_G), Critic(1, 28, width=16)
    history = apeganpp.train_apeganpp(g, d, mnist_model, *pairs, epochs=3, batch_size=32, lr=1e-3, val=val)
    return g, d, history


@pytest.mark.parametrize("norm", [3.0, 1.0, 0.25])
def test_gradient_penalty_of_a_linear_critic(norm):
    w = torch.randn(16)
    critic = linear_critic(norm * w / w.norm())
    real, fake = torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4)
    # ∇D = w at every interpolate, whatever α: the penalty is (‖w‖ − 1)² exactly
    assert gradient_penalty(critic, real, fake).item() == pytest.approx((norm - 1) ** 2, abs=1e-5)


def test_gradient_penalty_at_given_interpolates():
    real, fake = torch.full((2, 1, 2, 2), 1.0), torch.zeros(2, 1, 2, 2)
    alpha = torch.tensor([0.25, 1.0])
    # x̂ = α·1 on 4 pixels, ∇D(x̂) = x̂, so ‖∇D‖ = 2α: (0.5 − 1)² and (2 − 1)², mean 0.625
    assert gradient_penalty(HalfSquaredNorm(), real, fake, alpha).item() == pytest.approx(0.625, abs=1e-6)


def test_gradient_penalty_trains_the_critic_only():
    critic = linear_critic(torch.full((16,), 0.5))
    real = torch.rand(3, 1, 4, 4, requires_grad=True)
    fake = torch.rand(3, 1, 4, 4, requires_grad=True)
    gradient_penalty(critic, real, fake).backward()
    # d/dw (‖w‖ − 1)² = 2(‖w‖ − 1)·w/‖w‖ with ‖w‖ = 2: 2·1·0.25 = 0.5 per weight
    assert torch.allclose(critic[1].weight.grad, torch.full((1, 16), 0.5), atol=1e-5)
    assert real.grad is None and fake.grad is None


def test_critic_losses_by_hand():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0])
    losses = critic_losses(real, fake, torch.tensor(0.5), gp_weight=10)
    assert losses["wasserstein"].item() == pytest.approx(1.0)  # 2 − 1
    assert losses["total"].item() == pytest.approx(-1.0 + 10 * 0.5)
    assert losses["gp"].item() == 0.5


def test_generator_losses_by_hand():
    purified, clean = torch.full((2, 1, 4, 4), 0.5), torch.zeros(2, 1, 4, 4)
    scores = torch.tensor([1.0, 3.0])
    logits, labels = torch.zeros(2, 10), torch.tensor([3, 7])  # uniform: CE = log 10
    losses = generator_losses(purified, clean, scores, logits, labels, weights=(0.5, 0.5))
    assert losses["adv"].item() == pytest.approx(-2.0)
    assert losses["mse"].item() == pytest.approx(0.25)
    assert losses["ce"].item() == pytest.approx(math.log(10))
    assert losses["total"].item() == pytest.approx(-2.0 + 0.5 * 0.25 + 0.5 * math.log(10))
    only_adv = generator_losses(purified, clean, scores, logits, labels, weights=(0.0, 0.0))
    assert only_adv["total"].item() == pytest.approx(-2.0)


@pytest.mark.parametrize("channels,size,flat", [(1, 28, 1024), (3, 32, 2304)])
def test_critic_matches_the_code_without_sigmoid_or_batch_norm(channels, size, flat):
    critic = Critic(channels, size)
    assert critic.net[-1].in_features == flat  # the code's Linear(1024, 1) / Linear(2304, 1)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Sigmoid)) for m in critic.modules())
    with torch.no_grad():
        critic.net[-1].bias.fill_(5.0)  # an unbounded score: nothing squashes it into (0, 1)
        assert critic(torch.rand(3, channels, size, size)).shape == (3,)
        assert (critic(torch.rand(3, channels, size, size)) > 1).all()


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_code_generator_shapes(channels, size):
    g = APEGAN(channels, **apeganpp.CODE_GENERATOR)
    out = g(torch.rand(2, channels, size, size))
    assert out.shape == (2, channels, size, size) and out.min() >= 0 and out.max() <= 1
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert [m.kernel_size for m in convs] == [(4, 4)] * 4
    assert [m.out_channels for m in convs] == [64, 128, 64, channels]
    assert any(isinstance(m, nn.LeakyReLU) for m in g.modules())
    default = [m for m in APEGAN(channels).modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert [m.kernel_size for m in default] == [(3, 3)] * 4  # APE-GAN's own generator is unchanged


def test_mixed_fgsm_pairs(pairs, mnist_data):
    x_clean, x_adv, y = pairs
    x = mnist_data["x_train"][:N_CLEAN]
    assert len(x_clean) == len(x_adv) == len(y) == 4 * N_CLEAN
    for i, eps in enumerate(apeganpp.EPS_MIX["mnist"]):
        block = slice(i * N_CLEAN, (i + 1) * N_CLEAN)
        assert torch.equal(x_clean[block], x)
        assert (x_adv[block] - x).abs().max() <= eps + 1e-6
        assert (x_adv[block] - x).abs().max() >= eps - 1e-6  # FGSM moves some pixel by the full ε


def test_a_short_run_moves_the_losses_the_right_way(trained):
    _, _, h = trained
    steps = h["steps"]

    def first_last(name: str, k: int = 4) -> tuple[float, float]:
        values = steps[name]
        return sum(values[:k]) / k, sum(values[-k:]) / k

    mse, ce, w = first_last("mse"), first_last("ce"), first_last("wasserstein")
    # measured over three seeds: MSE falls by 30–36%, CE by 65–71%, the Wasserstein estimate rises from
    # about 0 to 1.6–3.2 and the penalty falls from about 0.9 to below 0.02
    assert mse[1] < 0.85 * mse[0], f"MSE {mse}"
    assert ce[1] < 0.6 * ce[0], f"third-party CE {ce}"
    assert w[1] > w[0] + 0.5, f"Wasserstein estimate {w}"  # the critic learns to separate the two
    assert first_last("gp")[1] < 0.1  # and becomes roughly 1-Lipschitz
    for name in ("g_grad_norm", "adv_grad_norm"):
        assert all(math.isfinite(v) and v > 0 for v in steps[name])
    batches = 3 * math.ceil(4 * N_CLEAN / 32)
    assert h["g_updates"] == h["d_updates"] == batches == len(steps["d_loss"])


def test_validation_chooses_the_checkpoint(trained, val, mnist_model):
    g, _, h = trained
    assert len(h["val_acc"]) == 3
    best = max(range(3), key=lambda i: h["val_acc"][i])
    assert h["best_epoch"] == best + 1
    system = evaluate.Defended(g, mnist_model)
    restored = (evaluate.accuracy(system, val[0], val[1]) + evaluate.accuracy(system, val[2], val[3])) / 2
    assert restored == pytest.approx(h["val_acc"][best], abs=1e-6)
    assert h["val_acc"][best] > 0.2  # measured 0.41–0.56 after three short epochs (first epoch: 0.125)


def test_third_party_stays_frozen_and_unchanged(pairs, mnist_model):
    before = {k: v.clone() for k, v in mnist_model.state_dict().items()}
    flags = [p.requires_grad for p in mnist_model.parameters()]
    for p in mnist_model.parameters():
        p.grad = None
    g, d = APEGAN(1, **SMALL_G), Critic(1, 28, width=8)
    x_clean, x_adv, y = (t[:32] for t in pairs)
    apeganpp.train_apeganpp(g, d, mnist_model, x_clean, x_adv, y, epochs=1, batch_size=32)
    assert all(torch.equal(before[k], v) for k, v in mnist_model.state_dict().items())
    assert [p.requires_grad for p in mnist_model.parameters()] == flags
    assert all(p.grad is None for p in mnist_model.parameters())


def test_n_critic_is_honoured(pairs, mnist_model):
    g, d = APEGAN(1, **SMALL_G), Critic(1, 28, width=8)
    calls = {"d": 0}
    d.register_forward_hook(lambda *_: calls.__setitem__("d", calls["d"] + 1))
    x_clean, x_adv, y = (t[:32] for t in pairs)
    h = apeganpp.train_apeganpp(g, d, mnist_model, x_clean, x_adv, y, epochs=1, batch_size=32, n_critic=3)
    assert (h["d_updates"], h["g_updates"]) == (3, 1)
    assert calls["d"] == 3 * 3 + 1  # real, fake and interpolates per critic update, then the generator's


def test_apegan_baseline_matches_apegan_and_records_norms(pairs):
    x_clean, x_adv, _ = (t[:64] for t in pairs)
    models = []
    for train_fn in (apegan.train_apegan, apeganpp.train_apegan_baseline):
        torch.manual_seed(0)
        g, d = APEGAN(1, **SMALL_G), apegan.Discriminator(1, 28)
        h = train_fn(g, d, x_clean, x_adv, epochs=1, batch_size=32, seed=0)
        models.append(g)
    # measuring the gradient norms leaves the training itself (weights and batch-norm statistics) untouched
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)
    assert len(h["steps"]["adv_grad_norm"]) == len(h["steps"]["g_grad_norm"]) == 2
    assert all(v > 0 for v in h["steps"]["adv_grad_norm"])


def test_craft_once_and_score(mnist_data, mnist_model):
    x, y = mnist_data["x_test"][:40], mnist_data["y_test"][:40]
    attacks = {"fgsm": (fgsm, {"eps": 0.3}, 40), "fgsm_small": (fgsm, {"eps": 0.05}, 20)}
    examples = analysis.craft(mnist_model, x, y, attacks)
    assert len(examples["fgsm_small"][1]) == 20
    assert torch.equal(examples["fgsm"][0], fgsm(mnist_model, x, y, eps=0.3))
    run = results.Results("test", get_profile("smoke"))
    systems = {"none": mnist_model, "identity": evaluate.Defended(nn.Identity(), mnist_model)}
    analysis.score(run, examples, systems, table={"none": "t2", "identity": "t3"}, dataset="mnist",
                   classifier="cnn", eps={"fgsm": 0.3})
    assert len(run.rows) == 4
    assert run.value(table="t2", attack="fgsm") == evaluate.accuracy(mnist_model, *examples["fgsm"])
    assert run.value(table="t3", attack="fgsm_small") == run.value(table="t2", attack="fgsm_small")
    assert run.value(table="t2", attack="fgsm_small") >= run.value(table="t2", attack="fgsm")
    assert run.value(table="t2", attack="fgsm", eps=0.3) == run.value(table="t2", attack="fgsm")


def test_cw_distortion_counts_flipped_images(mnist_data, mnist_model):
    x, y = mnist_data["x_test"][:8], mnist_data["y_test"][:8]
    found = analysis.cw_distortion(mnist_model, mnist_model, x, y, steps=300, binary_search_steps=1, c=10.0,
                                   lr=0.05)
    assert found["accuracy"] <= 0.25 and found["n_fooled"] >= 5  # measured: 0.0 and 7 (one was wrong already)
    assert 0 < found["median_l2"] < 5
    none = analysis.cw_distortion(mnist_model, mnist_model, x, y, steps=1, binary_search_steps=1, c=1e-3)
    assert none["n_fooled"] == 0 and "median_l2" not in none and none["accuracy"] >= 0.75


def test_bad_inputs_raise(pairs, mnist_model, val):
    x_clean, x_adv, y = (t[:16] for t in pairs)
    g, d = APEGAN(1, **SMALL_G), Critic(1, 28, width=8)
    with pytest.raises(ValueError, match="fake"):
        gradient_penalty(d, x_clean, x_adv[:8])
    with pytest.raises(ValueError, match="alpha"):
        gradient_penalty(d, x_clean, x_adv, alpha=torch.full((16,), 1.5))
    with pytest.raises(ValueError, match="shape of x_clean"):
        apeganpp.train_apeganpp(g, d, mnist_model, x_clean, x_adv[:8], y, epochs=1)
    with pytest.raises(ValueError, match="y"):
        apeganpp.train_apeganpp(g, d, mnist_model, x_clean, x_adv, y[:8], epochs=1)
    with pytest.raises(ValueError, match="weights"):
        apeganpp.train_apeganpp(g, d, mnist_model, x_clean, x_adv, y, epochs=1, weights=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="epochs"):
        apeganpp.train_apeganpp(g, d, mnist_model, x_clean, x_adv, y, epochs=0)
    with pytest.raises(ValueError, match="n_critic"):
        apeganpp.train_apeganpp(g, d, mnist_model, x_clean, x_adv, y, epochs=1, n_critic=0)
    with pytest.raises(ValueError, match="third_party"):
        apeganpp.train_apeganpp(g, d, "mnist_cnn", x_clean, x_adv, y, epochs=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        apeganpp.train_apeganpp(g, d, mnist_model, x_clean, x_adv * 2, y, epochs=1)
    with pytest.raises(ValueError, match="classifier"):
        apeganpp.train_apegan_baseline(g, apegan.Discriminator(1, 28), x_clean, x_adv, epochs=1, val=val)
    with pytest.raises(ValueError, match="val"):
        apeganpp.purification_validator(g, mnist_model, (val[0], val[1][:3], val[2], val[3]))
    with pytest.raises(ValueError, match="eps"):
        apeganpp.mixed_fgsm_pairs(mnist_model, x_clean, y, [], key={})
    with pytest.raises(ValueError, match="width"):
        Critic(1, 28, width=0)
    with pytest.raises(ValueError, match="widths"):
        APEGAN(1, widths=(16,))
    with pytest.raises(ValueError, match="kernel"):
        APEGAN(1, kernel=1)
    with pytest.raises(ValueError, match="activation"):
        APEGAN(1, activation="tanh")


def test_stability_summary_by_hand():
    steps = {"adv_grad_norm": [4.0, 3.0, 2.0, 1.0] * 5, "g_grad_norm": [1.0] * 20,
             "g_loss": [0.0, 1.0] * 10, "d_loss": [float(i) for i in range(20)]}
    found = analysis.stability_summary({"steps": steps}, fraction=0.1)  # first and last 2 steps
    assert found["adv_grad_first"] == 3.5 and found["adv_grad_last"] == 1.5 and found["adv_grad_min"] == 1.0
    assert found["g_grad_first"] == found["g_grad_last"] == 1.0
    assert found["g_loss_jitter"] == pytest.approx(1.0)  # jumps the whole spread every step
    assert found["d_loss_jitter"] == pytest.approx(1 / (0.9 * 19 - 0.1 * 19))  # a steady ramp
    with pytest.raises(ValueError, match="history"):
        analysis.stability_summary({"steps": {"g_loss": [1.0, 2.0]}})
