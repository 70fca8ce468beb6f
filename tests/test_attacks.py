"""Attacks: invariants on random models, strength on a trained MNIST CNN, and agreement with
torchattacks/ART."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from purify_lib import attacks

# name -> (attack, small keyword arguments, L∞ budget or None, L2 budget or None)
SMALL = {
    "fgsm": (attacks.fgsm, {"eps": 0.1}, 0.1, None),
    "bim": (attacks.bim, {"eps": 0.1, "alpha": 0.03, "steps": 4}, 0.1, None),
    "illc": (attacks.illc, {"eps": 0.1, "alpha": 0.03, "steps": 4}, 0.1, None),
    "pgd": (attacks.pgd, {"eps": 0.1, "alpha": 0.03, "steps": 4, "restarts": 2}, 0.1, None),
    "pgd_targeted": (attacks.pgd, {"eps": 0.1, "alpha": 0.03, "steps": 4, "targeted": True}, 0.1, None),
    "pgd_stages": (attacks.pgd, {"eps": 0.1, "alpha": 0.05, "steps": 4, "stages": 2}, 0.1, None),
    "pgd_l2": (attacks.pgd, {"eps": 0.5, "alpha": 0.2, "steps": 4, "norm": "l2", "restarts": 2}, None, 0.5),
    "mim": (attacks.mim, {"eps": 0.1, "alpha": 0.03, "steps": 4}, 0.1, None),
    "cw_l2": (attacks.cw_l2, {"steps": 5, "binary_search_steps": 2, "lr": 0.05}, None, None),
    "deepfool": (attacks.deepfool, {"steps": 5}, None, None),
    "deepfool_top3": (attacks.deepfool, {"steps": 5, "num_classes": 3}, None, None),
    "jsma": (attacks.jsma, {"gamma": 0.2}, None, None),
}


def random_model(seed: int, channels: int, size: int, classes: int) -> nn.Module:
    """A tiny CNN with batch norm and dropout, so that train/eval mode matters."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(4 * size * size, classes))


@pytest.mark.parametrize("name", SMALL)
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 4), channels=st.sampled_from([1, 3]),
       size=st.sampled_from([6, 8]), training=st.booleans(), freeze_first=st.booleans())
def test_invariants_on_random_models(name, seed, n, channels, size, training, freeze_first):
    attack, kwargs, linf, l2 = SMALL[name]
    model = random_model(seed, channels, size, classes=5).train(training)
    model[1].train(not training)  # a mixed-mode model: every module's own mode must come back
    model[0].weight.requires_grad_(not freeze_first)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=generator)
    y = torch.randint(0, 5, (n,), generator=generator)
    x_before = x.clone()

    x_adv = attack(model, x, y, **kwargs)

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x, x_before)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    if linf is not None:
        assert (x_adv - x).abs().max() <= linf + 1e-6
    if l2 is not None:
        assert (x_adv - x).flatten(1).norm(dim=1).max() <= l2 + 1e-5


def test_mode_and_flags_restored_when_the_model_raises():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).train()

    def boom(module, inputs):
        raise RuntimeError("boom")

    model[1].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        attacks.pgd(model, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), eps=0.1, alpha=0.01, steps=2)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------- bad inputs
BAD_INPUTS = {
    "wrong rank": lambda x, y: (x[0], y),
    "integer dtype": lambda x, y: ((x * 255).to(torch.uint8), y),
    "NaN": lambda x, y: (torch.where(torch.arange(x.numel()).view_as(x) == 3, float("nan"), x), y),
    "above 1": lambda x, y: (x + 1.5, y),
    "below 0": lambda x, y: (x - 1.5, y),
    "batch mismatch": lambda x, y: (x, y[:-1]),
}
NEGATIVE = {"fgsm": "eps", "bim": "eps", "illc": "eps", "pgd": "eps", "mim": "eps", "cw_l2": "c",
            "deepfool": "overshoot", "jsma": "theta"}


@pytest.mark.parametrize("case", BAD_INPUTS)
@pytest.mark.parametrize("name", NEGATIVE)
def test_bad_inputs_raise(name, case):
    attack, kwargs, _, _ = SMALL[name]
    model = random_model(0, 1, 6, classes=5)
    x, y = BAD_INPUTS[case](torch.rand(3, 1, 6, 6), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError):
        attack(model, x, y, **kwargs)


@pytest.mark.parametrize("name", NEGATIVE)
def test_negative_budget_raises(name):
    attack, kwargs, _, _ = SMALL[name]
    with pytest.raises(ValueError, match=NEGATIVE[name]):
        attack(random_model(0, 1, 6, 5), torch.rand(3, 1, 6, 6), torch.tensor([0, 1, 2]),
               **{**kwargs, NEGATIVE[name]: -0.1})


def test_unknown_norm_raises():
    with pytest.raises(ValueError, match="norm"):
        attacks.pgd(random_model(0, 1, 6, 5), torch.rand(2, 1, 6, 6), torch.tensor([0, 1]), eps=0.1,
                    alpha=0.01, steps=1, norm="l1")


# ------------------------------------------------------------------------------------- trained MNIST CNN
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def batch(mnist_data):
    """128 MNIST test images and labels."""
    return mnist_data["x_test"][:128], mnist_data["y_test"][:128]


def test_pgd_breaks_an_undefended_cnn(mnist_model, batch):
    x, y = batch
    assert accuracy(mnist_model, x, y) >= 0.85  # measured 0.945
    torch.manual_seed(0)
    x_adv = attacks.pgd(mnist_model, x, y, eps=0.3, alpha=0.01, steps=40)
    assert accuracy(mnist_model, x_adv, y) < 0.05


def test_fgsm_and_bim_reduce_accuracy_bim_more(mnist_model, batch):
    x, y = batch
    clean = accuracy(mnist_model, x, y)
    fgsm = accuracy(mnist_model, attacks.fgsm(mnist_model, x, y, eps=0.2), y)
    bim = accuracy(mnist_model, attacks.bim(mnist_model, x, y, eps=0.2, alpha=0.02, steps=20), y)
    print(f"clean {clean:.3f} fgsm {fgsm:.3f} bim {bim:.3f}")
    assert fgsm < clean - 0.3
    assert bim < fgsm - 0.05 and bim < 0.25


def test_pgd_restarts_keep_the_worst_case(mnist_model, batch):
    x, y = batch
    torch.manual_seed(0)
    single = attacks.pgd(mnist_model, x, y, eps=0.1, alpha=0.02, steps=5)
    torch.manual_seed(0)
    multi = attacks.pgd(mnist_model, x, y, eps=0.1, alpha=0.02, steps=5, restarts=3)
    with torch.no_grad():
        fooled_single = mnist_model(single).argmax(1) != y
        fooled_multi = mnist_model(multi).argmax(1) != y
    # the first restart draws the same random start as the single run: restarts can only add successes
    assert (fooled_multi | ~fooled_single).all()
    assert fooled_multi.sum() >= fooled_single.sum()


def test_pgd_stages_halve_the_step():
    # a linear model whose loss gradient has a constant sign: every step moves each pixel by exactly alpha
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.ones(16), -torch.ones(16)]))
    x, y = torch.full((1, 1, 4, 4), 0.5), torch.tensor([0])
    x_adv = attacks.pgd(model, x, y, eps=0.4, alpha=0.08, steps=5, stages=3, random_start=False)
    # stages of 2, 2 and 1 steps at 0.08, 0.04, 0.02, all towards class 1 (down)
    assert torch.allclose(x - x_adv, torch.full_like(x, 2 * 0.08 + 2 * 0.04 + 0.02))
    with pytest.raises(ValueError, match="stages"):
        attacks.pgd(model, x, y, eps=0.1, alpha=0.01, steps=2, stages=3)


def test_pgd_custom_loss_on_tuple_outputs(mnist_model, batch):
    """An adaptive attack on a model returning (logits, score): the loss may combine both."""
    x, y = batch[0][:32], batch[1][:32]

    class WithDetector(nn.Module):
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, images):
            return self.classifier(images), images.flatten(1).mean(1)

    def ce_only(output, labels):
        return nn.functional.cross_entropy(output[0], labels, reduction="none")

    def darker(output, labels):
        return ce_only(output, labels) - 10 * output[1]

    kwargs = {"eps": 0.3, "alpha": 0.02, "steps": 10}
    torch.manual_seed(0)
    plain = attacks.pgd(mnist_model, x, y, **kwargs)
    torch.manual_seed(0)
    tuple_ce = attacks.pgd(WithDetector(mnist_model), x, y, loss_fn=ce_only, **kwargs)
    assert torch.equal(plain, tuple_ce)
    x_dark = attacks.pgd(WithDetector(mnist_model), x, y, loss_fn=darker, restarts=2, **kwargs)
    assert x_dark.mean() < plain.mean()  # the score term pushed the brightness down
    assert (x_dark - x).abs().max() <= 0.3 + 1e-6


def test_illc_and_targeted_pgd_reach_their_targets(mnist_model, batch):
    x, y = batch[0][:64], batch[1][:64]
    target = (y + 1) % 10
    torch.manual_seed(0)
    x_adv = attacks.pgd(mnist_model, x, target, eps=0.3, alpha=0.02, steps=30, targeted=True)
    with torch.no_grad():
        # measured 0.906 here and 0.891 on another CPU; more steps do not raise it (a few targets are out of
        # reach within ε), so the bound keeps a 9-point margin
        assert (mnist_model(x_adv).argmax(1) == target).float().mean() > 0.8
        least_likely = mnist_model(x).argmin(1)
        x_ll = attacks.illc(mnist_model, x, y, eps=0.3, alpha=0.02, steps=30)
        assert (mnist_model(x_ll).argmax(1) == least_likely).float().mean() > 0.7  # measured 0.797


def test_autoattack_reference_stays_in_budget_and_agrees_with_our_pgd(mnist_model, batch):
    x, y = batch[0][:64], batch[1][:64]
    x_aa = attacks.autoattack(mnist_model, x, y, eps=0.1, attacks_to_run=["apgd-ce"])
    assert (x_aa - x).abs().max() <= 0.1 + 1e-5 and x_aa.min() >= 0 and x_aa.max() <= 1
    torch.manual_seed(0)
    ours = accuracy(mnist_model, attacks.pgd(mnist_model, x, y, eps=0.1, alpha=0.01, steps=40), y)
    theirs = accuracy(mnist_model, x_aa, y)
    print(f"PGD-40 {ours:.3f}, APGD-CE {theirs:.3f}")
    assert abs(ours - theirs) <= 0.07  # measured 0.766 vs 0.750
    with pytest.raises(ValueError, match="norm"):
        attacks.autoattack(mnist_model, x, y, eps=0.1, norm="l1")


def test_apgd_t_stays_in_budget_and_is_as_strong_as_apgd_ce(mnist_model, batch):
    x, y = batch[0][:64], batch[1][:64]
    x_t = attacks.apgd_t(mnist_model, x, y, eps=0.1)
    assert (x_t - x).abs().max() <= 0.1 + 1e-5 and x_t.min() >= 0 and x_t.max() <= 1
    x_ce = attacks.apgd_ce(mnist_model, x, y, eps=0.1)
    targeted, untargeted = accuracy(mnist_model, x_t, y), accuracy(mnist_model, x_ce, y)
    print(f"APGD-T {targeted:.3f}, APGD-CE {untargeted:.3f}, clean {accuracy(mnist_model, x, y):.3f}")
    assert targeted <= untargeted + 0.05  # measured 0.672 and 0.672 (clean 0.969)


def test_cw_margin_handles_negative_logits():
    logits = torch.tensor([[-5.0, -1.0, -3.0], [-1.0, -2.0, -4.0]])
    assert torch.allclose(attacks._margin(logits, torch.tensor([0, 0])), torch.tensor([4.0, -1.0]))


# --------------------------------------------------------------------------- independent implementations
# the cross-checks skip when their package is missing; every test above runs regardless
@pytest.fixture
def torchattacks():
    return pytest.importorskip("torchattacks")


@pytest.fixture
def art():
    evasion = pytest.importorskip("art.attacks.evasion")
    classification = pytest.importorskip("art.estimators.classification")
    return evasion, classification


def test_fgsm_matches_torchattacks_exactly(mnist_model, batch, torchattacks):
    x, y = batch
    ours = attacks.fgsm(mnist_model, x, y, eps=0.2)
    theirs = torchattacks.FGSM(mnist_model, eps=0.2)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("name", ["bim", "pgd", "mim", "deepfool"])
def test_accuracy_matches_torchattacks(name, mnist_model, batch, torchattacks):
    x, y = batch
    if name == "deepfool":
        # torchattacks clamps to [0, 1] after every DeepFool step, which stalls it on MNIST's saturated
        # pixels (about half the digits survive 50 steps); ours clamps only the accumulated step. Compare
        # the algorithms where the box does not bind: contrast-reduced digits in [0.25, 0.75].
        x, y = x[:64] * 0.5 + 0.25, y[:64]
    ours, theirs = {
        "bim": (lambda: attacks.bim(mnist_model, x, y, eps=0.15, alpha=0.01, steps=20),
                lambda: torchattacks.BIM(mnist_model, eps=0.15, alpha=0.01, steps=20)(x, y)),
        # from x itself on both sides: two random starts would differ by a few images for no fault of either
        "pgd": (lambda: attacks.pgd(mnist_model, x, y, eps=0.15, alpha=0.01, steps=20, random_start=False),
                lambda: torchattacks.PGD(mnist_model, eps=0.15, alpha=0.01, steps=20,
                                         random_start=False)(x, y)),
        "mim": (lambda: attacks.mim(mnist_model, x, y, eps=0.15, alpha=0.01, steps=20),
                lambda: torchattacks.MIFGSM(mnist_model, eps=0.15, alpha=0.01, steps=20)(x, y)),
        "deepfool": (lambda: attacks.deepfool(mnist_model, x, y, steps=50, overshoot=0.02),
                     lambda: torchattacks.DeepFool(mnist_model, steps=50, overshoot=0.02)(x, y)),
    }[name]
    torch.manual_seed(0)
    x_ours = ours()
    torch.manual_seed(1)
    x_theirs = theirs()
    acc_ours, acc_theirs = accuracy(mnist_model, x_ours, y), accuracy(mnist_model, x_theirs, y)
    print(f"{name}: ours {acc_ours:.3f} torchattacks {acc_theirs:.3f}")
    # measured: identical (1 and 2 threads, two seeds of the model); the bound leaves room for float
    # rounding on another CPU, a wrong step or projection misses it by far
    assert abs(acc_ours - acc_theirs) <= 0.05
    if name == "deepfool":
        l2_ours = (x_ours - x).flatten(1).norm(dim=1).median()
        l2_theirs = (x_theirs - x).flatten(1).norm(dim=1).median()
        print(f"deepfool median L2: ours {l2_ours:.3f} torchattacks {l2_theirs:.3f}")
        assert abs(l2_ours - l2_theirs) <= 0.1 * l2_theirs


def art_classifier(art_classification, model: nn.Module):
    return art_classification.PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                                nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")


def test_jsma_success_rate_matches_art(mnist_model, batch, art):
    art_evasion, art_classification = art
    x, y = batch[0][:64], batch[1][:64]
    target = (y + 1) % 10
    ours = attacks.jsma(mnist_model, x, y, target=target, theta=1.0, gamma=0.1)
    jsma = art_evasion.SaliencyMapMethod(art_classifier(art_classification, mnist_model), theta=1.0,
                                         gamma=0.1, batch_size=64, verbose=False)
    theirs = torch.from_numpy(jsma.generate(x.numpy(), y=np.eye(10, dtype=np.float32)[target.numpy()]))
    with torch.no_grad():
        rate_ours = (mnist_model(ours).argmax(1) == target).float().mean().item()
        rate_theirs = (mnist_model(theirs).argmax(1) == target).float().mean().item()
    l0_ours = (ours != x).flatten(1).sum(1).float().mean().item()
    l0_theirs = (theirs != x).flatten(1).sum(1).float().mean().item()
    print(f"jsma success: ours {rate_ours:.3f} ART {rate_theirs:.3f}; "
          f"L0 ours {l0_ours:.1f} ART {l0_theirs:.1f}")
    # ART picks the two pixels with the largest target-class gradient, not Papernot's pairwise map, so the
    # rates differ by design (measured: ours 0.59, ART 0.75 on this model); 0.25 still catches a broken map.
    assert abs(rate_ours - rate_theirs) <= 0.25
    assert (ours != x).flatten(1).sum(1).max() <= int(0.1 * 784)


def test_cw_l2_matches_art(mnist_model, batch, art):
    art_evasion, art_classification = art
    x, y = batch[0][:16], batch[1][:16]  # ART's C&W runs a per-example line search: slow
    # Adam moves tanh-space w by about lr per step, and saturated MNIST pixels sit at w ≈ ±7: with 50 steps
    # lr=0.01 leaves them frozen (measured: 6% success), so ours gets lr=0.1 for the same 50 × 3 iterations
    ours = attacks.cw_l2(mnist_model, x, y, c=1.0, kappa=0.0, steps=50, lr=0.1, binary_search_steps=3)
    cw = art_evasion.CarliniL2Method(art_classifier(art_classification, mnist_model), confidence=0.0,
                                     learning_rate=0.01, binary_search_steps=3, max_iter=50,
                                     initial_const=1.0, batch_size=16, verbose=False)
    theirs = torch.from_numpy(cw.generate(x.numpy()))
    results = {}
    for who, x_adv in (("ours", ours), ("ART", theirs)):
        with torch.no_grad():
            fooled = mnist_model(x_adv).argmax(1) != y
        l2 = (x_adv - x).flatten(1).norm(dim=1)
        results[who] = (fooled.float().mean().item(), l2[fooled].mean().item())
    print(f"cw_l2 (success rate, mean L2 of successes): {results}")
    # both should fool nearly everything; Adam in tanh space should need no more L2 than ART's line search
    assert results["ours"][0] >= results["ART"][0] - 0.1
    assert results["ours"][1] <= 1.25 * results["ART"][1]
