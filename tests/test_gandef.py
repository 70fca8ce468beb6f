"""GanDef: the game's losses, training, the GanDef-Comb metric, ρ crossings and the detector-aware attack."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from purify_lib.analysis import gandef as analysis
from purify_lib.defenses import gandef
from purify_lib.defenses.gandef import GanDef, LogitDiscriminator
from purify_lib.train import WarmupPGD


def _tiny_classifier() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 12 * 12, 10))


# ------------------------------------------------------------------------------------------- the metric
def test_comb_summary_on_hand_made_scores():
    y = torch.tensor([0, 1, 2, 3])
    # clean: correct, correct+rejected, wrong, wrong+rejected
    clean = (torch.tensor([0, 1, 0, 0]), torch.tensor([0.1, 0.9, 0.2, 0.5]))
    # adversarial: wrong+rejected, wrong, correct, wrong (D exactly at the threshold counts as rejected)
    adv = (torch.tensor([1, 0, 2, 0]), torch.tensor([0.7, 0.3, 0.1, 0.5]))
    s = analysis.comb_summary(y, clean, adv, threshold=0.5)
    assert s["clean_acc"] == 0.5 and s["adv_acc"] == 0.25
    assert s["clean_comb"] == 0.25          # only example 0 is correct and kept
    assert s["adv_comb"] == 0.75            # examples 0 and 3 rejected, example 2 correct
    assert s["clean_reject"] == 0.5 and s["adv_reject"] == 0.5
    high = analysis.comb_summary(y, clean, adv, threshold=0.95)  # nothing rejected: Comb = plain accuracy
    assert high["clean_comb"] == high["clean_acc"] and high["adv_comb"] == high["adv_acc"]
    low = analysis.comb_summary(y, clean, adv, threshold=0.0)  # everything rejected
    assert low["clean_comb"] == 0.0 and low["adv_comb"] == 1.0


def test_threshold_sweep_is_monotone_in_rejections():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (200,), generator=g)
    clean = (torch.randint(0, 10, (200,), generator=g), torch.rand(200, generator=g))
    adv = (torch.randint(0, 10, (200,), generator=g), torch.rand(200, generator=g))
    sweep = analysis.threshold_sweep(y, clean, adv, np.linspace(0, 1, 11))
    assert len(sweep) == 11
    assert (np.diff(sweep["clean_reject"]) <= 0).all() and (np.diff(sweep["adv_comb"]) <= 0).all()
    assert (np.diff(sweep["clean_comb"]) >= 0).all()


@pytest.mark.parametrize("bad", [
    dict(threshold=1.5),
    dict(adv=(torch.tensor([0, 1]), torch.tensor([0.1, 0.2]))),               # wrong length
    dict(adv=(torch.tensor([0, 1, 2]), torch.tensor([0.1, 1.2, 0.2]))),        # probability > 1
    dict(clean=(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.1, 0.2, 0.3]))),  # float predictions
])
def test_comb_summary_rejects_bad_inputs(bad):
    args = dict(y=torch.tensor([0, 1, 2]), clean=(torch.tensor([0, 1, 2]), torch.tensor([0.1, 0.2, 0.3])),
                adv=(torch.tensor([0, 1, 2]), torch.tensor([0.1, 0.2, 0.3])), threshold=0.5)
    with pytest.raises(ValueError):
        analysis.comb_summary(**{**args, **bad})


def _table2(values: dict[tuple[str, str, str, str], float], n: int = 1_000) -> pd.DataFrame:
    return pd.DataFrame([dict(table="table_2", dataset="mnist", defense=d, attack=a, threat=th, metric=m,
                              value=v, n=n) for (d, a, th, m), v in values.items()])


def test_table2_verdicts_judge_on_intervals_and_say_autoattack_only_where_apgd_t_ran():
    values = {**{(d, "pgd1", "whitebox", "accuracy"): v for d, v in (("vanilla", 0.0), ("pure_pgd", 0.92),
                                                                     ("gandef", 0.91))},
              **{(d, "apgd_ce", "whitebox", "accuracy"): 0.90 for d in ("pure_pgd", "gandef")},
              **{(d, "worst", "whitebox", "accuracy"): v for d, v in (("pure_pgd", 0.89), ("mix_pgd", 0.89),
                                                                      ("gandef", 0.80))},
              **{("gandef_comb", a, th, m): 0.1 for a, th in (("none", "none"), ("pgd1", "oblivious"),
                                                              ("pgd1_detector_aware", "adaptive"))
                 for m in ("rejection_rate", "comb_accuracy")}}
    text = analysis.table2_verdicts(_table2(values), "mnist", 0.3, where="at full scale")
    assert "Table 2's pattern" in text and "**holds** at full scale" in text  # 1 point apart on 1,000
    assert "**does not hold** at full scale" in text  # GanDef 9 points below Mix PGD under the worst case
    assert "APGD-T" not in text
    both = {(d, "apgd_ce_t", "whitebox", "accuracy"): v for d, v in (("pure_pgd", 0.86), ("mix_pgd", 0.87),
                                                                     ("gandef", 0.80))}
    text = analysis.table2_verdicts(_table2({**values, **both}), "mnist", 0.3)
    # 0.86 on 1,000 images: the Wilson interval (0.84, 0.88) straddles 0.85
    assert "APGD-T together: Pure PGD 86.0%" in text and "at least 85% **inconclusive** in this run" in text
    few = analysis.table2_verdicts(_table2({**values, **both}, n=20), "mnist", 0.3)
    assert "**holds**" not in few and "**inconclusive**" in few  # the same numbers on 20 images


# ---------------------------------------------------------------------------------------------- ρ curves
def test_overall_accuracy_is_the_mixture():
    np.testing.assert_allclose(analysis.overall_accuracy(0.9, 0.5, [0, 0.5, 1]), [0.9, 0.7, 0.5])
    with pytest.raises(ValueError):
        analysis.overall_accuracy(0.9, 0.5, [0, 1.2])
    with pytest.raises(ValueError):
        analysis.overall_accuracy(1.3, 0.5, [0, 1])


def test_crossover_on_hand_made_curves():
    rho = np.linspace(0, 1, 11)
    ours = analysis.overall_accuracy(0.64, 0.74, rho)            # GanDef-Comb-like: worse clean, better adv
    others = {k: analysis.overall_accuracy(clean, adv, rho) for k, clean, adv in (("a", 0.84, 0.46),
                                                                                   ("b", 0.82, 0.48))}
    # vs "a": 0.64 + 0.10ρ = 0.84 − 0.38ρ → ρ = 0.20/0.48; "b" is below "a" there
    assert analysis.crossover(rho, ours, others) == pytest.approx(0.20 / 0.48)
    assert analysis.crossover(rho, others["a"] + 0.5, others) == 0.0        # never behind
    assert analysis.crossover(rho, others["a"] - 0.01, others) is None      # always behind
    # behind again after catching up once: the answer is the last catch-up
    wiggly = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert analysis.crossover(rho, wiggly, {"flat": np.full(11, 0.5)}) == pytest.approx(0.45)


@pytest.mark.parametrize("rho, ours, others", [
    ([0.0, 0.0, 1.0], [1, 1, 1], {"a": [0, 0, 0]}),   # not increasing
    ([0.0, 1.0], [1, 1, 1], {"a": [0, 0]}),          # length mismatch
    ([0.0, 1.0], [1, 1], {}),                        # nothing to compare with
])
def test_crossover_rejects_bad_curves(rho, ours, others):
    with pytest.raises(ValueError):
        analysis.crossover(rho, ours, others)


# ------------------------------------------------------------------------------------ the game's losses
def test_discriminator_shape_and_range():
    d = LogitDiscriminator(10)
    assert [m.out_features for m in d.modules() if isinstance(m, nn.Linear)] == [32, 64, 1]
    model = GanDef(_tiny_classifier(), d)
    logits, score = model(torch.rand(7, 1, 28, 28))
    assert logits.shape == (7, 10) and score.shape == (7,)
    pred, prob = analysis.scores(model, torch.rand(7, 1, 28, 28), batch_size=3)
    assert pred.dtype == torch.int64 and pred.shape == (7,)
    assert prob.shape == (7,) and ((prob >= 0) & (prob <= 1)).all()
    with pytest.raises(ValueError):
        d(torch.rand(7, 9))


def test_v1_and_v2_penalties_differ_as_specified():
    z_clean, z_adv = torch.randn(4, 10), torch.randn(4, 10)
    y = torch.tensor([0, 1, 2, 3])
    d_clean = torch.tensor([-1.0, 0.5, 2.0, 0.0], requires_grad=True)
    d_adv = torch.tensor([1.0, -0.5, 0.0, 3.0], requires_grad=True)
    ce = (F.cross_entropy(z_clean, y) + F.cross_entropy(z_adv, y)) / 2
    on_adv = F.softplus(-d_adv).mean()          # −log σ(d_adv): D's loss on adversarial logits
    on_clean = F.softplus(d_clean).mean()       # −log(1 − σ(d_clean)): D's loss on clean logits
    loss2, pen2 = gandef.classifier_loss(z_clean, z_adv, y, d_clean, d_adv, gamma=2.0, variant="v2")
    loss1, pen1 = gandef.classifier_loss(z_clean, z_adv, y, d_clean, d_adv, gamma=2.0, variant="v1")
    assert pen2.item() == pytest.approx(on_adv.item(), rel=1e-6)
    assert pen1.item() == pytest.approx((on_adv + on_clean).item() / 2, rel=1e-6)
    assert loss2.item() == pytest.approx((ce - 2.0 * on_adv).item(), rel=1e-6)
    assert loss1.item() == pytest.approx((ce - (on_adv + on_clean)).item(), rel=1e-6)
    (g_clean,) = torch.autograd.grad(loss2, d_clean, allow_unused=True)
    assert g_clean is None or torch.all(g_clean == 0)   # V2 never looks at clean logits
    (g_clean1,) = torch.autograd.grad(loss1, d_clean)
    assert torch.all(g_clean1 != 0)
    with pytest.raises(ValueError):
        gandef.classifier_loss(z_clean, z_adv, y, d_clean, d_adv, gamma=1.0, variant="v3")


def test_warmup_pgd_ramps_eps(mnist_model, mnist_data):
    x, y = mnist_data["x_test"][:16], mnist_data["y_test"][:16]
    adversary = WarmupPGD(eps=0.3, alpha=0.1, steps=2, warmup=3)
    first = adversary(mnist_model, x, y)
    assert (first - x).abs().max() <= 0.1 + 1e-6
    adversary(mnist_model, x, y)
    third = adversary(mnist_model, x, y)
    assert 0.1 + 1e-3 < (third - x).abs().max() <= 0.3 + 1e-6


# -------------------------------------------------------------------------------------------- training
def test_training_moves_and_validates(mnist_data):
    x, y = mnist_data["x_train"][:384], mnist_data["y_train"][:384]
    val = (mnist_data["x_test"][:200], mnist_data["y_test"][:200])
    torch.manual_seed(0)
    classifier, disc = _tiny_classifier(), LogitDiscriminator(10)
    before = [p.detach().clone() for p in (*classifier.parameters(), *disc.parameters())]
    history = gandef.train_gandef(classifier, disc, x, y, variant="v2", gamma=0.5, epochs=3, batch_size=64,
                                  lr=2e-3, adversary=WarmupPGD(eps=0.1, alpha=0.05, steps=1), val=val, seed=0)
    assert set(history) >= {"loss", "penalty", "disc_loss", "disc_acc", "train_acc", "adv_acc", "val_acc"}
    assert all(len(v) == 3 for v in history.values())
    assert history["loss"][-1] < history["loss"][0] - 0.3
    assert history["val_acc"][-1] > 0.5
    after = [p.detach() for p in (*classifier.parameters(), *disc.parameters())]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert not classifier.training and not disc.training


def test_gamma_zero_is_mix_pgd(mnist_data):
    """γ = 0 removes the discriminator from the classifier's loss: GanDef is then Mix PGD training exactly."""
    from purify_lib import train

    x, y = mnist_data["x_train"][:256], mnist_data["y_train"][:256]
    common = dict(epochs=2, batch_size=64, lr=2e-3, seed=0)
    torch.manual_seed(0)
    gandef_clf = _tiny_classifier()
    gandef.train_gandef(gandef_clf, LogitDiscriminator(10), x, y, gamma=0.0,
                        adversary=WarmupPGD(eps=0.1, alpha=0.05, steps=1), **common)
    torch.manual_seed(0)
    mix_clf = _tiny_classifier()
    train.fit(mix_clf, x, y, adversary=WarmupPGD(eps=0.1, alpha=0.05, steps=1), clean_weight=0.5, **common)
    for a, b in zip(gandef_clf.parameters(), mix_clf.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_training_follows_the_lr_schedule(mnist_data):
    x, y = mnist_data["x_train"][:128], mnist_data["y_train"][:128]
    weights = {}
    for schedule in ("constant", "decay"):
        torch.manual_seed(0)
        classifier, disc = _tiny_classifier(), LogitDiscriminator(10)
        gandef.train_gandef(classifier, disc, x, y, gamma=0.5, epochs=1, batch_size=32, lr=2e-3,
                            adversary=WarmupPGD(eps=0.1, alpha=0.05, steps=1), lr_schedule=schedule)
        weights[schedule] = [p.detach() for p in (*classifier.parameters(), *disc.parameters())]
    assert not all(torch.equal(a, b) for a, b in zip(weights["constant"], weights["decay"]))


@pytest.mark.parametrize("bad", [dict(variant="v3"), dict(gamma=-1.0), dict(epochs=0),
                                 dict(lr_schedule="cyclic"), dict(adversary="pgd"),
                                 dict(x=torch.rand(4, 1, 28, 28) * 2)])
def test_training_rejects_bad_inputs(bad):
    args = dict(classifier=_tiny_classifier(), discriminator=LogitDiscriminator(10),
                x=torch.rand(4, 1, 28, 28), y=torch.tensor([0, 1, 2, 3]), variant="v2", gamma=1.0, epochs=1,
                batch_size=2, lr=1e-3, adversary=WarmupPGD(eps=0.1, alpha=0.05, steps=1))
    with pytest.raises(ValueError):
        gandef.train_gandef(**{**args, **bad})


# ------------------------------------------------------------------------------- detector-aware attack
@pytest.mark.parametrize("stages", [1, 2])
def test_adaptive_attack_evades_a_detector_the_plain_attack_trips(mnist_model, mnist_data, stages):
    """D flags large logit norms: plain PGD trips it, the detector-aware attack keeps under the threshold
    (with constant steps, and with the step halved halfway)."""
    x, y = mnist_data["x_test"][:32], mnist_data["y_test"][:32]

    class NormDetector(LogitDiscriminator):
        limit = 0.0

        def forward(self, z):
            return z.norm(dim=1) - self.limit

    detector = NormDetector(10)
    model = GanDef(mnist_model, detector)
    params = dict(eps=0.3, alpha=0.05, steps=10)
    from purify_lib.attacks import pgd
    plain_x = pgd(mnist_model, x, y, **params)
    with torch.no_grad():  # flag the 80% of plain PGD examples with the largest logits
        detector.limit = mnist_model(plain_x).norm(dim=1).quantile(0.2).item()
    plain = analysis.scores(model, plain_x)
    adaptive_x = analysis.adaptive_attack(model, x, y, lambdas=(1.0, 10.0), stages=stages, **params)
    assert (adaptive_x - x).abs().max() <= 0.3 + 1e-6
    adaptive = analysis.scores(model, adaptive_x)
    evaded = lambda s: ((s[0] != y) & (s[1] < 0.5)).float().mean().item()  # noqa: E731
    assert evaded(plain) <= 0.3  # at most the 20% below the quantile, by construction (measured 0.219)
    assert evaded(adaptive) > evaded(plain) + 0.4
    assert not math.isnan(evaded(adaptive))


def test_worst_case_prefers_evading_then_misclassified():
    """Two classes, logits 10·pixels; D rejects when the two pixels sum above 1."""

    class SumDetector(LogitDiscriminator):
        def forward(self, z):
            return z.sum(dim=1) - 10.0

    model = GanDef(nn.Sequential(nn.Flatten(), nn.Identity()), SumDetector(2))
    model.classifier[1] = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.classifier[1].weight.copy_(10 * torch.eye(2))
    image = lambda rows: torch.tensor(rows).view(-1, 1, 1, 2)  # noqa: E731
    y = torch.tensor([0, 0, 0])
    kept_right = image([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    wrong_rejected = image([[0.2, 0.9], [0.2, 0.9], [0.9, 0.1]])
    evading = image([[0.1, 0.5], [0.9, 0.1], [0.1, 0.5]])
    best = analysis.worst_case(model, y, [kept_right, wrong_rejected, evading])
    torch.testing.assert_close(best, torch.stack([evading[0], wrong_rejected[1], evading[2]]))
    with pytest.raises(ValueError):
        analysis.worst_case(model, y, [])
