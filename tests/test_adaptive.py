"""Adaptive-attack building blocks: BPDA breaks bit-depth reduction, EOT beats test-time dropout, the latent
attack fools a classifier through a generator, and masked gradients are caught."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from purify_lib import attacks
from purify_lib.adaptive import (BPDA, EOT, bpda, check_differentiable, detector_aware_loss, eot,
                                 gradient_is_masked, joint_hinge_loss, latent_attack, worst_per_image)
from purify_lib.attacks import _margin
from purify_lib.classifiers import Dropout
from purify_lib.defenses.transforms import BitDepth, MedianSmoothing, TVMinimisation


def accuracy(model: nn.Module, x: Tensor, y: Tensor, passes: int = 1) -> float:
    """Accuracy averaged over ``passes`` forward passes (a random model's expected accuracy)."""
    with torch.no_grad():
        return sum((model(x).argmax(1) == y).float().mean().item() for _ in range(passes)) / passes


@pytest.fixture(scope="module")
def batch(mnist_data) -> tuple[Tensor, Tensor]:
    return mnist_data["x_test"][:200], mnist_data["y_test"][:200]


# ------------------------------------------------------------------------------------------------ BPDA
def test_bpda_breaks_bit_depth_reduction(mnist_model, batch):
    """Measured: plain autograd PGD leaves 0.955 accuracy (the rounding's gradient is zero), BPDA PGD 0.000.

    With 1 bit instead of 2, ε = 0.3 cannot flip a saturated pixel across 0.5, and BPDA only reaches 0.75.
    """
    x, y = batch
    defended = nn.Sequential(BitDepth(2), mnist_model)
    through_bpda = nn.Sequential(bpda(BitDepth(2)), mnist_model)
    torch.manual_seed(0)
    plain = attacks.pgd(defended, x, y, eps=0.3, alpha=0.03, steps=40)
    adaptive = attacks.pgd(through_bpda, x, y, eps=0.3, alpha=0.03, steps=40)
    assert accuracy(defended, plain, y) >= 0.85
    assert accuracy(defended, adaptive, y) <= 0.2
    assert (adaptive - x).abs().max() <= 0.3 + 1e-6


def test_bpda_forward_exact_and_gradient_straight_through(mnist_data):
    x = mnist_data["x_test"][:8].clone().requires_grad_(True)
    module = BitDepth(1)
    out = bpda(module)(x)
    assert torch.equal(out, module(x.detach()))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.ones_like(x))  # the identity surrogate's gradient
    (plain,) = torch.autograd.grad(module(x).sum(), x)
    assert not plain.any()

    conv = nn.Conv2d(1, 1, 3, padding=1)
    out = bpda(module, backward=conv)(x)
    assert torch.equal(out, module(x.detach()))
    (grad,) = torch.autograd.grad((out * 2).sum(), x)
    (expected,) = torch.autograd.grad((conv(x) * 2).sum(), x)
    torch.testing.assert_close(grad, expected)


def test_bpda_validation(mnist_data):
    x = mnist_data["x_test"][:2]
    with pytest.raises(ValueError):
        bpda(lambda t: t)
    with pytest.raises(ValueError):
        BPDA(BitDepth(1), backward="identity")
    with pytest.raises(ValueError, match="same shape"):
        bpda(BitDepth(1), backward=nn.Flatten())(x)
    with pytest.raises(ValueError):
        bpda(BitDepth(1))(x[0])  # the wrapped module still checks its input


# ------------------------------------------------------------------------------------------------- EOT
def test_eot_beats_test_time_dropout(mnist_model, batch):
    """Measured (3 seeds): PGD on one random pass leaves the random model 0.36-0.39 accuracy, PGD on the
    8-sample EOT average 0.12-0.14; accuracies are averaged over 8 random passes."""
    x, y = batch
    random_model = nn.Sequential(Dropout(0.7, at_test=True), mnist_model)
    torch.manual_seed(0)
    plain = attacks.pgd(random_model, x, y, eps=0.2, alpha=0.05, steps=10)
    averaged = attacks.pgd(eot(random_model, 8), x, y, eps=0.2, alpha=0.05, steps=10)
    plain_acc, eot_acc = accuracy(random_model, plain, y, 8), accuracy(random_model, averaged, y, 8)
    assert eot_acc <= plain_acc - 0.12
    assert eot_acc <= 0.3


def test_eot_averages_logits(mnist_data):
    x = mnist_data["x_test"][:4]
    calls = []

    class Counter(nn.Module):
        def forward(self, t: Tensor) -> Tensor:
            calls.append(1)
            return torch.full((len(t), 3), float(len(calls)))

    out = eot(Counter(), 4)(x)
    torch.testing.assert_close(out, torch.full((4, 3), 2.5))  # mean of 1, 2, 3, 4
    assert isinstance(eot(Counter(), 1), EOT)
    for samples in (0, -1, 2.0, True):
        with pytest.raises(ValueError):
            eot(Counter(), samples)
    with pytest.raises(ValueError):
        EOT("model", 2)


# ------------------------------------------------------------------------------------- masked gradients
@pytest.mark.parametrize("module, masked", [
    (BitDepth(2), True), (TVMinimisation(steps=5), True), (nn.Sequential(nn.Identity(), BitDepth(3)), True),
    (nn.Identity(), False), (nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Sigmoid()), False),
    (MedianSmoothing(3), False), (bpda(BitDepth(2)), False), (bpda(TVMinimisation(steps=5)), False),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v))
def test_gradient_is_masked(module, masked, mnist_data):
    x = mnist_data["x_test"][:8]
    assert gradient_is_masked(module, x) is masked
    if masked:
        with pytest.raises(ValueError, match="bpda"):
            check_differentiable(module, x)
    else:
        check_differentiable(module, x)


def test_gradient_is_masked_without_declaration(mnist_data, mnist_model):
    """Undeclared masking is caught from the gradient itself: rounding, detaching, or a mostly flat one."""
    x = mnist_data["x_test"][:8]

    class Rounding(nn.Module):
        def forward(self, t: Tensor) -> Tensor:
            return torch.round(t)

    class Detaching(nn.Module):
        def forward(self, t: Tensor) -> Tensor:
            return t.detach() * 0.5

    class HalfFlat(nn.Module):
        def forward(self, t: Tensor) -> Tensor:
            return t * (torch.arange(len(t)) % 2 == 0).float().view(-1, 1, 1, 1)

    for module in (Rounding(), Detaching()):
        assert gradient_is_masked(module, x)
    assert gradient_is_masked(HalfFlat(), x)  # 4 of the 8 images have a zero gradient
    assert not gradient_is_masked(HalfFlat(), x[:3])  # 1 of 3
    assert not gradient_is_masked(nn.Sequential(MedianSmoothing(2), mnist_model), x)
    mnist_model.train()
    gradient_is_masked(mnist_model, x)
    assert mnist_model.training and all(p.requires_grad for p in mnist_model.parameters())
    mnist_model.eval()
    with pytest.raises(ValueError):
        gradient_is_masked(mnist_model, x * 2)
    with pytest.raises(ValueError):
        gradient_is_masked(lambda t: t, x)


# ------------------------------------------------------------------------------------ detector-aware loss
def test_detector_aware_loss_value():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 1])
    score = torch.tensor([1.5, -2.0])
    ce = F.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(detector_aware_loss(0.7)((logits, score), y), ce - 0.7 * F.softplus(score))
    torch.testing.assert_close(detector_aware_loss(0.7)((logits, score[:, None]), y),
                               ce - 0.7 * F.softplus(score))
    # softplus(d) = −log(1 − σ(d)): the detector's loss for calling the input clean
    torch.testing.assert_close(F.softplus(score), -torch.log(1 - torch.sigmoid(score)))
    identity = detector_aware_loss(2.0, penalty=lambda s: s)
    torch.testing.assert_close(identity((logits, score), y), ce - 2 * score)
    torch.testing.assert_close(detector_aware_loss(0)((logits, score), y), ce)
    for lam in (-1.0, float("nan"), "1"):
        with pytest.raises(ValueError):
            detector_aware_loss(lam)
    with pytest.raises(ValueError):
        detector_aware_loss(1.0, penalty="softplus")
    with pytest.raises(ValueError, match="pair"):
        detector_aware_loss(1.0)(logits, y)
    with pytest.raises(ValueError, match="one score per example"):
        detector_aware_loss(1.0)((logits, score[:1]), y)


def test_detector_aware_pgd_evades_a_detector(mnist_model, batch):
    """A toy detector scoring brightness (% of white): the aware attack keeps it low and still fools.

    Measured: clean score 13.5; oblivious PGD (λ = 0) raises it to 20.4 with accuracy 0.08; the aware attack
    (λ = 0.01) keeps it at 15.0 with accuracy 0.46 (clean 0.94).
    """
    x, y = batch[0][:100], batch[1][:100]

    class Detected(nn.Module):
        def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
            return mnist_model(t), 100 * t.flatten(1).mean(1)

    scores, accuracies = {}, {}
    for lam in (0.0, 0.01):
        torch.manual_seed(0)
        x_adv = attacks.pgd(Detected(), x, y, eps=0.2, alpha=0.05, steps=10,
                            loss_fn=detector_aware_loss(lam, penalty=lambda s: s))
        scores[lam] = 100 * x_adv.flatten(1).mean(1).mean().item()
        accuracies[lam] = accuracy(mnist_model, x_adv, y)
    assert scores[0.01] <= scores[0.0] - 2.5
    assert accuracies[0.0] <= 0.3 and accuracies[0.01] <= 0.75


# --------------------------------------------------------------------------------------- latent attack
class SigmoidDecoder(nn.Module):
    """A generator whose range is every image in (0, 1): ``G(z) = sigmoid(z)`` reshaped to 1×28×28."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(z).view(-1, 1, 28, 28)


def test_latent_attack_fools_classifier_within_budget(mnist_model, batch):
    """Measured: accuracy 0.94 on the clean images, 0.02 on ``x_adv`` (L∞ ε = 0.3)."""
    x, y = batch[0][:100], batch[1][:100]
    z_init = torch.logit(x.clamp(0.01, 0.99)).flatten(1)
    flags = [p.requires_grad for p in mnist_model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in mnist_model.parameters()]
    x_adv = latent_attack(SigmoidDecoder(), mnist_model, x, y, eps=0.3, z_init=z_init, steps=50, lr=0.1,
                          c=10.0, kappa=5.0)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert accuracy(mnist_model, x, y) >= 0.85  # measured 0.95
    assert accuracy(mnist_model, x_adv, y) <= 0.3
    assert [p.requires_grad for p in mnist_model.parameters()] == flags
    for p, before in zip(mnist_model.parameters(), grads, strict=True):  # gradients flow to z only
        assert (p.grad is None) if before is None else torch.equal(p.grad, before)

    small = latent_attack(SigmoidDecoder(), mnist_model, x[:8], y[:8], eps=0.5, z_init=z_init[:8], steps=5,
                          norm="l2")
    assert (small - x[:8]).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5


def test_latent_attack_keeps_the_best_iterate_not_the_clipped_last(mnist_model, batch):
    """With ``kappa = 0`` the objective's minimum lies on the decision boundary, so the last iterate hovers
    across it; the best iterate inside the ball is misclassified."""
    x, y = batch[0][:100], batch[1][:100]
    z_init = torch.logit(x.clamp(0.01, 0.99)).flatten(1)
    generator, common = SigmoidDecoder(), dict(eps=0.3, steps=40, lr=0.1, c=1.0, kappa=0.0)
    z = z_init.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=common["lr"])
    for _ in range(common["steps"]):  # the former attack: the last iterate, clipped into the ball
        image = generator(z)
        hinge = (-_margin(mnist_model(image), y)).clamp_min(0)
        optimizer.zero_grad()
        ((image - x).flatten(1).pow(2).sum(1) + hinge).sum().backward()
        optimizer.step()
    last = torch.min(torch.max(generator(z).detach(), x - 0.3), x + 0.3).clamp(0, 1)
    best = latent_attack(generator, mnist_model, x, y, z_init=z_init, **common)
    assert (best - x).abs().max() <= 0.3 + 1e-6 and best.min() >= 0 and best.max() <= 1
    assert accuracy(mnist_model, best, y) <= accuracy(mnist_model, last, y) - 0.3  # measured: 0.05 and 0.74


class Shift(nn.Module):
    """A toy purifier that is not the identity: it shifts the image two pixels to the right."""

    def forward(self, x: Tensor) -> Tensor:
        return x.roll(2, -1)


def test_latent_attack_aimed_at_the_pipeline_fools_the_pipeline(mnist_model, batch):
    """The submitted input is scored by what the defense does with it: aimed at ``model ∘ shift`` the attack
    fools that pipeline more than aimed at the bare model (L∞ 0.15; measured: 0.21 against 0.45; clean
    0.84)."""
    x, y = batch[0][:100], batch[1][:100]
    z_init = torch.logit(x.clamp(0.01, 0.99)).flatten(1)
    pipeline = nn.Sequential(Shift(), mnist_model)
    common = dict(eps=0.15, z_init=z_init, steps=30, lr=0.1, c=100.0, kappa=5.0)
    aimed = latent_attack(SigmoidDecoder(), pipeline, x, y, **common)
    bare = latent_attack(SigmoidDecoder(), mnist_model, x, y, **common)
    assert (aimed - x).abs().max() <= 0.15 + 1e-6 and aimed.min() >= 0 and aimed.max() <= 1
    assert accuracy(pipeline, aimed, y) <= 0.3
    assert accuracy(pipeline, bare, y) >= accuracy(pipeline, aimed, y) + 0.15


class SaysZero(nn.Module):
    """A "defense" that answers class 0 whatever it sees, and records how many images each call saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(len(x))
        return F.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()


def test_latent_attack_searches_again_only_the_images_the_defense_still_gets_right(mnist_model, batch):
    x, y = batch[0][:40], batch[1][:40]
    z_init = torch.logit(x.clamp(0.01, 0.99)).flatten(1)
    common = dict(eps=0.1, z_init=z_init, steps=3, lr=0.1, c=100.0)
    defense = SaysZero()
    torch.manual_seed(0)
    found = latent_attack(SigmoidDecoder(), mnist_model, x, y, restarts=2, defense=defense, **common)
    zeros = int((y == 0).sum())
    assert 0 < zeros < len(y) and defense.seen == [len(y), zeros, zeros]
    first = latent_attack(SigmoidDecoder(), mnist_model, x, y, restarts=0, **common)
    assert torch.equal(found[y != 0], first[y != 0])  # fooled at the first start: kept
    assert (found - x).abs().max() <= 0.1 + 1e-6


def test_latent_attack_validation(mnist_model, mnist_data):
    x, y = mnist_data["x_test"][:4], mnist_data["y_test"][:4]
    z = torch.zeros(4, 784)
    generator = SigmoidDecoder()
    good = {"eps": 0.1, "z_init": z, "steps": 1}
    for change in ({"eps": 0.0}, {"eps": -1.0}, {"steps": 0}, {"lr": 0.0}, {"c": -1.0}, {"kappa": -1.0},
                   {"restarts": -1}, {"spread": -1.0}, {"defense": torch.sigmoid},
                   {"norm": "l1"}, {"z_init": torch.zeros(3, 784)}, {"z_init": z.long()},
                   {"z_init": z.clone().fill_(float("nan"))}, {"z_init": torch.zeros(4, 2 * 784)},
                   {"z_init": torch.tensor(0.0)}):
        with pytest.raises(ValueError):
            latent_attack(generator, mnist_model, x, y, **{**good, **change})
    with pytest.raises(ValueError):
        latent_attack(generator, mnist_model, x * 2, y, **good)
    with pytest.raises(ValueError):
        latent_attack(generator, mnist_model, x, y[:3], **good)
    with pytest.raises(ValueError):
        latent_attack(torch.sigmoid, mnist_model, x, y, **good)


def test_worst_per_image_takes_the_highest_rank_then_the_earliest():
    a, b, c = torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2), torch.full((3, 1, 2, 2), 2.0)
    ranks = [torch.tensor([0, 1, 2]), torch.tensor([1, 1, 0]), torch.tensor([2, 0, 2])]
    best = worst_per_image([a, b, c], ranks)
    assert best[:, 0, 0, 0].tolist() == [2.0, 0.0, 0.0]  # image 0: c (rank 2); 1: a (tie, earliest); 2: a
    with pytest.raises(ValueError, match="one rank tensor per batch"):
        worst_per_image([a, b], ranks)
    with pytest.raises(ValueError, match="a rank per image"):
        worst_per_image([a, b[:2]], ranks[:2])


def test_joint_hinge_loss_is_zero_exactly_when_misclassified_and_accepted():
    loss = joint_hinge_loss(threshold=0.5)  # accepted when the detector logit is below 0
    logits = torch.tensor([[0.0, 2.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    score = torch.tensor([-1.0, 3.0, -1.0, 3.0])
    y = torch.zeros(4, dtype=torch.long)
    assert loss((logits, score), y).tolist() == [0.0, -3.0, -2.0, -5.0]  # fooled+hidden, seen, right, both
    assert joint_hinge_loss(0.9, kappa=1.0)((logits[:1], score[:1]), y[:1]).item() == 0.0  # logit(0.9) > 0
    with pytest.raises(ValueError):
        joint_hinge_loss(threshold=1.0)
    with pytest.raises(ValueError, match="pair"):
        loss(logits, y)
