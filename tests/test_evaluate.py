"""Robust accuracy under the three threat models, the defended system, batched crafting, result grids."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from purify_lib import attacks, evaluate
from purify_lib.profiles import get_profile
from purify_lib.results import Results


def blur() -> nn.Module:
    """A 3×3 box blur: a differentiable purifier with no parameters."""
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


@pytest.fixture(scope="module")
def test_set(mnist_data) -> tuple[torch.Tensor, torch.Tensor]:
    return mnist_data["x_test"][:200], mnist_data["y_test"][:200]


def test_threat_none_is_clean_accuracy(mnist_model, test_set) -> None:
    x, y = test_set
    clean = evaluate.accuracy(mnist_model, x, y)
    assert clean >= 0.85  # a trained model (measured 0.95-0.97 across data sources, threads and seeds)
    assert evaluate.robust_accuracy(mnist_model, x, y, threat="none") == clean
    defended = evaluate.robust_accuracy(mnist_model, x, y, purifier=blur(), threat="none")
    assert defended == evaluate.accuracy(evaluate.Defended(blur(), mnist_model), x, y)


def test_oblivious_with_identity_purifier_equals_attacking_the_classifier(mnist_model, test_set) -> None:
    x, y = test_set
    direct = evaluate.accuracy(mnist_model, attacks.fgsm(mnist_model, x, y, eps=0.15), y)
    assert direct < 0.7  # the attack does something (measured 0.55 from 0.965 clean)
    for threat in ("oblivious", "whitebox"):
        value = evaluate.robust_accuracy(mnist_model, x, y, attacks.fgsm, purifier=nn.Identity(),
                                         threat=threat, batch_size=64, eps=0.15)
        assert value == pytest.approx(direct)


def test_whitebox_through_a_blur_is_no_better_than_oblivious(mnist_model, test_set) -> None:
    x, y = test_set
    params = dict(eps=0.15, alpha=0.03, steps=10)
    torch.manual_seed(0)  # PGD's random start
    oblivious = evaluate.robust_accuracy(mnist_model, x, y, attacks.pgd, purifier=blur(), **params)
    whitebox = evaluate.robust_accuracy(mnist_model, x, y, attacks.pgd, purifier=blur(), threat="whitebox",
                                        **params)
    undefended = evaluate.robust_accuracy(mnist_model, x, y, attacks.pgd, **params)
    assert whitebox < oblivious  # measured 0.37 vs 0.45: the blur only helps against an oblivious attacker
    assert whitebox <= undefended + 0.1  # the blur buys little once the attacker knows about it


def test_bad_threats_and_missing_attacks_raise(mnist_model, test_set) -> None:
    x, y = test_set
    with pytest.raises(ValueError, match="none, oblivious, whitebox, bpda, eot, bpda_eot"):
        evaluate.robust_accuracy(mnist_model, x, y, attacks.fgsm, threat="grey", eps=0.1)
    with pytest.raises(ValueError, match="expected an attack"):
        evaluate.robust_accuracy(mnist_model, x, y, threat="whitebox")
    with pytest.raises(ValueError, match="no attack"):
        evaluate.robust_accuracy(mnist_model, x, y, attacks.fgsm, threat="none", eps=0.1)
    with pytest.raises(ValueError, match="labels"):
        evaluate.robust_accuracy(mnist_model, x, y[:5], attacks.fgsm, eps=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate.robust_accuracy(mnist_model, x * 2, y, attacks.fgsm, eps=0.1)


def test_defended_is_differentiable_end_to_end(mnist_model, test_set) -> None:
    x, y = test_set[0][:8].clone().requires_grad_(True), test_set[1][:8]
    torch.manual_seed(0)
    purifier = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Sigmoid())
    system = evaluate.Defended(purifier, mnist_model)
    nn.functional.cross_entropy(system(x), y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert purifier[0].weight.grad is not None and purifier[0].weight.grad.abs().sum() > 0
    mnist_model.zero_grad(set_to_none=True)
    system.train()
    assert purifier.training and mnist_model.training
    system.eval()
    assert not mnist_model.training


def test_attack_dataset_batches_like_one_call_and_checks_shapes(mnist_model, test_set) -> None:
    x, y = test_set
    batched = evaluate.attack_dataset(attacks.fgsm, mnist_model, x, y, batch_size=37, eps=0.1)
    assert torch.equal(batched, attacks.fgsm(mnist_model, x, y, eps=0.1))
    with pytest.raises(ValueError, match="shape"):
        evaluate.attack_dataset(lambda model, xb, yb: xb[:, :, :-1], mnist_model, x, y)


def test_evaluate_grid_adds_one_row_per_cell(mnist_model, test_set) -> None:
    x, y = test_set[0][:64], test_set[1][:64]
    results = Results("test", get_profile("smoke"))
    evaluate.evaluate_grid(
        results, table="t", dataset="mnist", classifier_name="cnn", classifier=mnist_model, x=x, y=y,
        attacks={"FGSM": (attacks.fgsm, {"eps": 0.1}),
                 "PGD": (functools.partial(attacks.pgd, alpha=0.02, steps=3), {"eps": 0.1})},
        defenses={"none": None, "blur": blur()})
    frame = results.frame
    # per defense: a clean row, then per attack oblivious (+ whitebox when there is a purifier)
    assert len(frame) == (1 + 2) + (1 + 2 * 2)
    assert set(frame["threat"]) == {"none", "oblivious", "whitebox"}
    assert (frame["n"] == 64).all()
    row = frame[(frame.defense == "blur") & (frame.attack == "FGSM") & (frame.threat == "oblivious")]
    expected = evaluate.robust_accuracy(mnist_model, x, y, attacks.fgsm, purifier=blur(), eps=0.1)
    assert row["value"].item() == pytest.approx(expected)
    assert row["eps"].item() == 0.1
    with pytest.raises(ValueError, match="threats"):
        evaluate.evaluate_grid(results, table="t", dataset="mnist", classifier_name="cnn",
                               classifier=mnist_model, x=x, y=y, attacks={}, defenses={}, threats=("none",))


def test_evaluate_grid_crafts_the_classifiers_examples_once(mnist_model, test_set) -> None:
    # the undefended row and every purifier's oblivious row are the same attack on the same classifier
    x, y = test_set[0][:64], test_set[1][:64]
    calls = []

    def counted(model, xb, yb, eps):
        calls.append(model)
        return attacks.fgsm(model, xb, yb, eps=eps)

    results = Results("test", get_profile("smoke"))
    bare = evaluate.evaluate_grid(
        results, table="t", dataset="mnist", classifier_name="cnn", classifier=mnist_model, x=x, y=y,
        attacks={"FGSM": (counted, {"eps": 0.1})},
        defenses={"none": None, "blur": blur(), "id": nn.Identity()})
    assert len(calls) == 1 + 2  # once on the classifier, then white-box through each purifier
    assert sum(model is mnist_model for model in calls) == 1
    frame = results.frame.set_index(["defense", "threat"])["value"]
    assert frame["id", "oblivious"] == frame["none", "whitebox"]
    assert evaluate.accuracy(mnist_model, bare["FGSM"], y) == frame["none", "whitebox"]


def test_predict_and_attack_dataset_restore_each_submodules_mode(mnist_model, mnist_data):
    # a wrapper built in train mode around eval-mode parts must not switch those parts to train mode
    x, y = mnist_data["x_test"][:4], mnist_data["y_test"][:4]
    purifier = nn.Sequential(nn.Identity(), nn.Dropout(0.5)).eval()
    system = evaluate.Defended(purifier, mnist_model)
    assert system.training and not mnist_model.training
    evaluate.predict(system, x)
    evaluate.attack_dataset(attacks.fgsm, system, x, y, eps=0.1)
    assert system.training and not mnist_model.training and not purifier.training
    assert not any(m.training for m in [*mnist_model.modules(), *purifier.modules()])
