"""IsoGAN: each loss term by hand, the ablation switches, training, selection, scoring, bad inputs."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from purify_lib.analysis import isogan as analysis
from purify_lib import norms, stats
from purify_lib.attacks import fgsm
from purify_lib.defenses import isogan
from purify_lib.defenses.apegan import APEGAN, Discriminator
from purify_lib.profiles import get_profile
from purify_lib.results import Results

N_PAIRS = 320


@pytest.fixture(scope="module")
def triples(mnist_data, mnist_model):
    """``N_PAIRS`` MNIST training images, their FGSM examples (ε = 0.3) against ``mnist_model``, labels."""
    x, y = mnist_data["x_train"][:N_PAIRS], mnist_data["y_train"][:N_PAIRS]
    return x, fgsm(mnist_model, x, y, eps=0.3), y


@pytest.fixture(scope="module")
def trained(triples, mnist_model):
    """A generator and its history after 3 epochs on ``triples`` with the full loss."""
    torch.manual_seed(0)
    g, d = APEGAN(1), Discriminator(1, 28)
    history = isogan.train_isogan(g, d, mnist_model, *triples, epochs=3, batch_size=32, lr=1e-3, seed=0,
                                  val=tuple(t[:64] for t in triples))
    return g, history


# ------------------------------------------------------------------------------------------- the losses
def test_each_term_by_hand():
    clean = torch.zeros(2, 1, 4, 4)
    fake, dec = torch.full_like(clean, 0.5), torch.full_like(clean, 0.25)
    logits, y = torch.zeros(2, 4), torch.tensor([1, 3])  # uniform over 4 classes: CE = log 4
    d_logits = torch.zeros(4)  # D(·) = 0.5 on every output of G: −log D = log 2
    weights = {"repair": 1.0, "recovery": 2.0, "isomorphic": 3.0, "label": 0.5, "gan": 0.1}
    terms = isogan.generator_losses(fake, clean, weights=weights, dec=dec, logits=logits, y=y,
                                    d_logits=d_logits)
    assert terms["repair"].item() == pytest.approx(0.25)       # (0.5 − 0)²
    assert terms["recovery"].item() == pytest.approx(0.0625)   # (0.25 − 0)²
    assert terms["isomorphic"].item() == pytest.approx(0.0625)  # (0.5 − 0.25)²
    assert terms["label"].item() == pytest.approx(math.log(4))
    assert terms["gan"].item() == pytest.approx(math.log(2))
    expected = 0.25 + 2 * 0.0625 + 3 * 0.0625 + 0.5 * math.log(4) + 0.1 * math.log(2)
    assert terms["total"].item() == pytest.approx(expected)


@pytest.mark.parametrize("variant,present", [
    ("repair", {"repair", "gan"}),
    ("+recovery", {"repair", "recovery", "gan"}),
    ("+isomorphic", {"repair", "recovery", "isomorphic", "gan"}),
    ("+label", {"repair", "recovery", "isomorphic", "label", "gan"}),
])
def test_ablation_switches_remove_terms(variant, present):
    weights = isogan.ABLATION[variant]
    torch.manual_seed(0)
    clean, fake = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4, requires_grad=True)
    dec = torch.rand(3, 1, 4, 4, requires_grad=True)
    logits = torch.randn(3, 10, requires_grad=True)
    terms = isogan.generator_losses(fake, clean, weights=weights, dec=dec, logits=logits,
                                    y=torch.tensor([0, 1, 2]), d_logits=torch.zeros(6))
    assert set(terms) - {"total"} == present
    terms["total"].backward()
    # a removed term leaves no gradient behind: G(x) and f(G(x_adv)) do not influence the loss
    assert (dec.grad is not None) == bool({"recovery", "isomorphic"} & present)
    assert (logits.grad is not None) == ("label" in present)


@pytest.mark.parametrize("variant,g_batch,f_calls", [("repair", 16, 0), ("+recovery", 32, 0),
                                                      ("+isomorphic", 32, 0), ("+label", 32, 1)])
def test_step_feeds_clean_images_only_with_a_clean_term(triples, mnist_model, variant, g_batch, f_calls):
    x, x_adv, y = (t[:16] for t in triples)
    g, d = APEGAN(1), Discriminator(1, 28)
    seen, calls = [], {"f": 0}
    g.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach().clone()))
    handle = mnist_model.register_forward_hook(lambda *_: calls.__setitem__("f", calls["f"] + 1))
    try:
        isogan.train_isogan(g, d, mnist_model, x, x_adv, y, epochs=1, batch_size=16,
                            weights=isogan.ABLATION[variant])
    finally:
        handle.remove()
    assert [len(b) for b in seen] == [g_batch, g_batch]  # one pass for D's step, one for G's
    assert calls["f"] == f_calls
    # the first 16 rows G sees are always the adversarial images; the clean ones follow only with a clean term
    shuffled = seen[1][:16]
    assert all(any(torch.equal(row, a) for a in x_adv) for row in shuffled)
    if g_batch == 32:
        assert all(any(torch.equal(row, c) for c in x) for row in seen[1][16:])


# -------------------------------------------------------------------------------------------- training
def test_short_training_lowers_the_repair_loss(trained):
    _, h = trained
    repair = h["steps"]["repair"]
    first, last = sum(repair[:3]) / 3, sum(repair[-3:]) / 3
    assert last < 0.6 * first, f"repair {first:.4f} → {last:.4f}"  # measured 0.133 → 0.042
    assert len(h["val_clean_acc"]) == len(h["val_adv_acc"]) == len(h["seconds"]) == 3
    assert h["weights"] == isogan.DEFAULT_WEIGHTS


def test_classifier_is_frozen_and_restored(triples, mnist_model):
    before = [p.detach().clone() for p in mnist_model.parameters()]
    flags = [p.requires_grad for p in mnist_model.parameters()]
    mnist_model.train()
    try:
        isogan.train_isogan(APEGAN(1), Discriminator(1, 28), mnist_model, *(t[:32] for t in triples),
                            epochs=1)
        assert mnist_model.training  # its mode is given back
    finally:
        mnist_model.eval()
    assert all(torch.equal(a, b) for a, b in zip(before, mnist_model.parameters(), strict=True))
    assert flags == [p.requires_grad for p in mnist_model.parameters()]


def test_weights_fingerprint_handles_batch_norm():
    torch.manual_seed(0)
    g = APEGAN(1)  # has 0-d num_batches_tracked buffers
    a = isogan.weights_fingerprint(g)
    assert a == isogan.weights_fingerprint(g)
    with torch.no_grad():
        next(g.parameters()).add_(1e-3)
    assert isogan.weights_fingerprint(g) != a


# ---------------------------------------------------------------------------------- choice and scoring
def test_choose_keeps_clean_accuracy_then_maximises_adversarial():
    scores = {"a": {"clean_acc": 0.97, "adv_acc": 0.60}, "b": {"clean_acc": 0.955, "adv_acc": 0.80},
              "c": {"clean_acc": 0.90, "adv_acc": 0.95}}
    assert isogan.choose(scores, reference=0.96, tolerance=0.01) == "b"  # c loses too much clean accuracy
    assert isogan.choose(scores, reference=0.96, tolerance=0.1) == "c"
    assert isogan.choose(scores, reference=0.99, tolerance=0.0) == "a"  # none qualifies: the best clean one


def test_add_scores_rows():
    x = torch.rand(4, 1, 16, 16)
    y = torch.tensor([0, 1, 2, 3])
    x_adv = x.clone()
    x_adv[:2] = (x_adv[:2] + 0.1).clamp(0, 1)   # the attack moved images 0 and 1 only
    x_adv[3] += 1e-7                             # rounding noise does not count as a change

    class Flat(nn.Module):  # a classifier for 16×16 images that always answers 1
        def forward(self, t):
            return torch.nn.functional.one_hot(torch.ones(len(t), dtype=torch.long), 10).float()

    R = Results("06_isogan_test", get_profile("smoke"))
    row = dict(table="t1", dataset="d", classifier="flat", model=Flat(), x=x, y=y,
               quality_tables=("t3", "t4"))
    analysis.add_scores(R, **row, x_adv=x_adv, purifiers={"none": None, "id": nn.Identity()}, attack="a",
                        threat="oblivious", eps=0.1)
    analysis.add_scores(R, **row, x_adv=x, purifiers={"none": None, "id": nn.Identity()}, attack="none",
                        threat="none", eps=0.0)
    f = R.frame.set_index(["table", "defense", "attack"])
    assert f.loc[("t1", "none", "a"), "value"] == 0.25 and f.loc[("t1", "id", "none"), "value"] == 0.25
    psnr, ssim = analysis.quality(x_adv[:2], x[:2])
    assert f.loc[("t3", "none", "a"), "value"] == pytest.approx(psnr.mean().item(), rel=1e-5)
    assert f.loc[("t4", "id", "a"), "value"] == pytest.approx(ssim.mean().item(), rel=1e-5)
    assert f.loc[("t3", "none", "a"), "n"] == 2
    assert ("t3", "none", "none") not in f.index  # clean inputs: only purifiers get a quality row (the floor)
    assert math.isinf(f.loc[("t3", "id", "none"), "value"])  # the identity's floor: identical images


def test_paired_difference():
    a = torch.linspace(10, 20, 50)
    d = stats.paired_bootstrap(a, a + 0.5)
    assert [d["mean"], d["low"], d["high"]] == pytest.approx([0.5, 0.5, 0.5])
    noise = torch.randn(400, generator=torch.Generator().manual_seed(0))
    d = stats.paired_bootstrap(a.repeat(8), a.repeat(8) + noise)
    assert d["low"] < 0 < d["high"] and d["high"] - d["low"] < 0.5


def test_flip_distances(mnist_model, mnist_data):
    x, y = mnist_data["x_test"][:20], mnist_data["y_test"][:20]
    x_adv = fgsm(mnist_model, x, y, eps=0.3)
    found = norms.flip_distances(mnist_model, x, y, x_adv)
    right = mnist_model(x).argmax(1) == y
    wrong = mnist_model(x_adv).argmax(1) != y
    assert len(found) == int((right & wrong).sum()) > 0
    assert torch.allclose(found, (x_adv - x).flatten(1).norm(dim=1)[right & wrong])


def test_explorer_frame_is_a_png(mnist_model, mnist_data):
    g = APEGAN(1).eval()
    x, y = mnist_data["x_test"][:1], mnist_data["y_test"][:1]
    for threat in ("oblivious", "whitebox"):
        png = analysis.explorer_frame(g, mnist_model, x, y, eps=0.2, threat=threat, steps=2,
                                      class_names=[str(i) for i in range(10)])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="threat"):
        analysis.explorer_frame(g, mnist_model, x, y, eps=0.2, threat="bpda", steps=2, class_names=["0"] * 10)


# ----------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("weights,match", [
    ({"repair": 1.0}, "one weight for each"),
    ({**isogan.DEFAULT_WEIGHTS, "label": -0.1}, "label"),
    ({**isogan.DEFAULT_WEIGHTS, "repair": 0.0}, "repair"),
    ({**isogan.DEFAULT_WEIGHTS, "gan": float("nan")}, "gan"),
    ((1.0, 1.0, 1.0, 0.5, 0.05), "one weight for each"),
])
def test_bad_weights_raise(weights, match):
    with pytest.raises(ValueError, match=match):
        isogan.check_weights(weights)


def test_bad_inputs_raise(triples, mnist_model):
    x, x_adv, y = (t[:10] for t in triples)
    g, d = APEGAN(1), Discriminator(1, 28)
    train = isogan.train_isogan
    with pytest.raises(ValueError, match="shape of x_clean"):
        train(g, d, mnist_model, x, x_adv[:9], y, epochs=1)
    with pytest.raises(ValueError, match="y"):
        train(g, d, mnist_model, x, x_adv, y[:9], epochs=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train(g, d, mnist_model, x, x_adv * 2, y, epochs=1)
    with pytest.raises(ValueError, match="channels"):
        train(g, d, mnist_model, x.repeat(1, 3, 1, 1), x_adv.repeat(1, 3, 1, 1), y, epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        train(g, d, mnist_model, x, x_adv, y, epochs=0)
    with pytest.raises(ValueError, match="val"):
        train(g, d, mnist_model, x, x_adv, y, epochs=1, val=(x, y))
    with pytest.raises(ValueError, match="at least one"):
        train(g, d, mnist_model, x[:0], x_adv[:0], y[:0], epochs=1)
    with pytest.raises(ValueError, match="nonzero weights but no inputs"):
        isogan.generator_losses(x, x, weights=isogan.DEFAULT_WEIGHTS)
    with pytest.raises(ValueError, match="scores"):
        isogan.choose({}, reference=0.9)
    with pytest.raises(ValueError, match="a, b"):
        stats.paired_bootstrap(torch.zeros(3), torch.zeros(4))
