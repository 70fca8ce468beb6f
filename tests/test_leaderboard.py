"""The leaderboard's glue: which attacks apply to which defense, how detectors are scored, the per-image worst
case, the self-checks, and that a defense missing its weights is trained through the cache, never skipped."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from purify_lib import attacks, leaderboard as lb
from purify_lib.analysis import gandef as analysis
from purify_lib import zoo
from purify_lib.defenses import gandef, transforms
from purify_lib.profiles import get_profile

from conftest import small_cnn


def defense(purifier=None, **kw) -> lb.Defense:
    torch.manual_seed(0)
    return lb.Defense("d", "d", "00_none", small_cnn().eval(), purifier, **kw)


class Decoder(nn.Module):
    latent = 4

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 28 * 28)

    def forward(self, z):
        return torch.sigmoid(self.fc(z)).view(-1, 1, 28, 28)


def test_plan_fits_each_kind_of_defense(mnist_data):
    probe = mnist_data["x_test"][:8]
    classifier = defense()
    assert not lb.is_masked(classifier, probe)
    assert lb.plan(classifier, False) == ["oblivious"]  # the oblivious attack already sees everything

    smooth = defense(transforms.MedianSmoothing(2))
    assert not lb.is_masked(smooth, probe)
    assert lb.plan(smooth, False) == ["oblivious", "pgd", "bpda"]

    bits = defense(transforms.BitDepth(1))
    assert lb.is_masked(bits, probe)  # rounding: no white-box gradient, BPDA only
    assert lb.plan(bits, True) == ["oblivious", "bpda"]

    tv = defense(transforms.TVMinimisation(keep=0.5, steps=3), random=True)
    assert lb.is_masked(tv, probe)
    assert lb.plan(tv, True) == ["oblivious", "bpda", "bpda_eot"]

    gen = Decoder()
    searched = defense(nn.Identity(), generator=(gen, None))
    assert lb.plan(searched, False)[-1] == "latent"

    pair = gandef.GanDef(small_cnn(), gandef.LogitDiscriminator(10))
    comb = defense(detector=pair)
    assert lb.plan(comb, False, "linf") == ["oblivious", "detector_aware"]
    assert lb.plan(comb, False, "l2") == ["oblivious"]  # chapter 5's detector-aware attack is L∞


def test_detector_scoring_credits_rejections_on_attacks_only(mnist_data):
    x, y = mnist_data["x_test"][:32], mnist_data["y_test"][:32]
    pair = gandef.GanDef(small_cnn(), gandef.LogitDiscriminator(10)).eval()
    last = [m for m in pair.discriminator.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(10.0)  # D's probability of "adversarial" ≈ 1 for every input: everything rejected
    comb = lb.Defense("c", "c", "05_gandef", pair.classifier, detector=pair)
    assert lb.handled(comb, x, y, adversarial=True).all()
    assert not lb.handled(comb, x, y, adversarial=False).any()
    with torch.no_grad():
        last.bias.fill_(-10.0)  # nothing rejected: plain accuracy
    correct = pair.classifier(x).argmax(1) == y
    assert torch.equal(lb.handled(comb, x, y), correct)
    with torch.no_grad():  # scores spread over inputs: the 5%-FPR threshold rejects 5% of the clean images
        last.weight.normal_()
        last.bias.zero_()
    thresholds = lb.metrics(comb, x)
    assert set(thresholds) == {"correct_or_rejected", "correct_or_rejected_at_5fpr"}
    rejected = (analysis.scores(pair, x)[1] > thresholds["correct_or_rejected_at_5fpr"]).float().mean()
    assert rejected <= lb.FPR + 1e-9 and lb.metrics(defense(), x) == {"accuracy": lb.THRESHOLD}


def test_adaptive_is_the_per_image_worst_case(mnist_model, mnist_data):
    x, y = mnist_data["x_test"][:24], mnist_data["y_test"][:24]
    d = lb.Defense("bits", "bits", "03_apeganpp", mnist_model, transforms.BitDepth(2))
    budgets = [lb.Budget(0.3, steps=5), lb.Budget(2.0, "l2", steps=5)]
    f = lb.evaluate_defense(d, x, y, budgets)
    assert set(f["metric"]) == {"accuracy", "seconds"}
    for (eps, norm), g in f[f["norm"] != "none"].groupby(["eps", "norm"]):
        v = g.set_index("attack")["value"]
        assert set(v.index) == {"oblivious", "bpda", "adaptive"}
        assert v["adaptive"] <= min(v["oblivious"], v["bpda"])
    clean = f[f["attack"] == "clean"]["value"].item()
    assert clean > 0.8  # 2-bit MNIST is still MNIST
    assert f[(f["attack"] == "adaptive") & (f["eps"] == 0.3)]["value"].item() < clean - 0.3


def test_checks_flag_a_stronger_autoattack_and_a_broken_order(mnist_data):
    rows = [dict(defense="d", attack=a, eps=0.3, norm="linf", metric="accuracy", value=v, n=10)
            for a, v in (("oblivious", 0.5), ("adaptive", 0.6), ("autoattack", 0.2))]
    defenses = {"d": defense(transforms.MedianSmoothing(2))}
    checked = lb.checks(pd.DataFrame(rows), defenses, mnist_data["x_test"][:8])
    assert not checked["adaptive_le_oblivious"].item()
    assert checked["autoattack_within"].item() is False
    lines = lb.check_lines(checked, (0.5, 100, (0.9, 100)))
    assert "fails for d" in lines[0] and "**no** on d" in lines[1] and "not consistent" in lines[2]
    assert "not comparable" in lb.check_lines(checked, (0.9, 100, (0.9, 500)))[2]
    for here, verdict in ((0.915, "consistent"), (0.925, "not consistent")):  # the 2-point line
        assert lb.check_lines(checked, (here, 100, (0.9, 100)))[2].split(": ")[-1].startswith(
            verdict if verdict == "consistent" else "**not consistent**")


def test_bad_attack_name_is_refused(mnist_data):
    with pytest.raises(ValueError, match="attack: expected"):
        lb.craft(defense(), "fgsm", mnist_data["x_test"][:2], mnist_data["y_test"][:2], lb.Budget(0.1))


def test_missing_weights_are_trained_through_the_cache_never_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("PURIFY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PURIFY_WEIGHTS", str(tmp_path / "weights"))  # nothing shipped
    first = zoo.load("gandef_comb", "smoke")
    assert first.detector is not None and first.classifier is first.detector.classifier
    assert any(name.startswith("gandef") for name in first.trained_now)  # trained now, not skipped
    assert first.train_seconds > 0
    again = zoo.load("gandef_comb", "smoke")
    assert again.trained_now == []  # the second time everything comes from the cache
    for a, b in zip(first.detector.parameters(), again.detector.parameters()):
        assert torch.equal(a, b)


def test_autoattack_runs_through_bpda_where_masked_and_is_recorded_so(mnist_model):
    d = lb.Defense("bits", "bits", "03_apeganpp", mnist_model, transforms.BitDepth(2))
    assert lb.autoattack_threat(d, masked=True) == "bpda"
    assert lb.autoattack_threat(defense(), masked=False) == "whitebox"
    system = lb.target(d, "bpda")
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    system(x).sum().backward()
    assert x.grad.abs().sum() > 0  # BPDA: the rounding's gradient is replaced by the identity's


def test_the_effort_rises_until_the_worst_case_stops_moving(mnist_model, mnist_data):
    x, y = mnist_data["x_test"][:16], mnist_data["y_test"][:16]
    budget = lb.Budget(0.1, steps=2, stages=1)

    def smoothed(slug: str, **kw) -> lb.Defense:
        return lb.Defense(slug, slug, "03_apeganpp", mnist_model, transforms.MedianSmoothing(2), **kw)

    defenses = {slug: smoothed(slug, costly=slug == "slow") for slug in ("smooth", "broken", "slow")}
    once = lb.evaluate_defense(defenses["smooth"], x, y, [budget])
    raised = lb.evaluate_defense(defenses["smooth"], x, y, [budget], converge=[budget],
                                 max_doublings=3)
    v, base = raised.set_index("attack")["value"], once.set_index("attack")["value"]
    assert v["adaptive"] <= v["adaptive_previous"] and v["adaptive"] <= base["adaptive"]  # over every effort
    assert v["effort"] in (2.0, 4.0, 8.0) and "adaptive_previous" not in base.index
    broken = lb.evaluate_defense(defenses["broken"], x, y, [budget])
    broken.loc[broken["attack"] == "adaptive", "value"] = 0.0
    slow = lb.evaluate_defense(defenses["slow"], x, y, [budget])
    frame = pd.concat([raised.assign(defense="smooth"), broken, slow], ignore_index=True)
    table = lb.convergence(frame, defenses, budget).set_index("defense")
    change = table.loc["smooth", "change_points"]
    assert change == pytest.approx(100 * (v["adaptive"] - v["adaptive_previous"]))
    assert table.loc["smooth", "converged"] == (abs(change) <= lb.CONVERGED_POINTS + 1e-9)
    assert table.loc["smooth", "converged"] or v["effort"] == 8.0  # stops early only once converged
    with_aa = lb.evaluate_defense(defenses["smooth"], x, y, [budget], converge=[budget],
                                  autoattack_budgets=[budget], autoattack_n=8, autoattack_attacks=["apgd-ce"])
    w = with_aa.set_index("attack")["value"]  # the board's number, AutoAttack included, is what must settle
    assert w["worst"] <= w["worst_previous"] and w["worst"] <= w["autoattack"]
    row = lb.convergence(with_aa, defenses, budget).set_index("defense").loc["smooth"]
    assert row["column"] == "worst"
    assert row["change_points"] == pytest.approx(100 * (w["worst"] - w["worst_previous"]))
    assert table.loc["broken", "note"] == "nothing left to break" and table.loc["broken", "converged"]
    assert table.loc["slow", "note"].startswith("not rerun: every forward pass") and pd.isna(table.loc["slow",
                                                                                                      "before"])


def test_a_rerun_attacks_only_the_images_still_standing_and_gives_the_same_worst_case(mnist_model, mnist_data,
                                                                                       monkeypatch):
    x, y = mnist_data["x_test"][:32], mnist_data["y_test"][:32]
    d = lb.Defense("smooth", "smooth", "03_apeganpp", mnist_model, transforms.MedianSmoothing(2))
    budget = lb.Budget(0.2, steps=3, stages=1)
    craft, sizes = lb.craft, []

    def deterministic(d, attack, x_in, y_in, budget):  # PGD from the clean image: each image on its own
        sizes.append(len(x_in))
        return attacks.pgd(lb.target(d, "whitebox"), x_in, y_in, eps=budget.eps, alpha=budget.eps / 4,
                           steps=budget.steps, random_start=False)

    monkeypatch.setattr(lb, "craft", deterministic)
    score = lambda x_in, y_in: {"accuracy": lb.handled(d, x_in, y_in)}  # noqa: E731
    worst = {"accuracy": torch.arange(32) % 3 != 0}  # a third of the images already broken
    everywhere = worst["accuracy"] & score(deterministic(d, "pgd", x, y, budget), y)["accuracy"]
    sizes.clear()
    rerun = lb._rerun(d, "pgd", x, y, budget, worst, score)
    assert sizes == [int(worst["accuracy"].sum())]  # the broken third was not attacked again
    assert torch.equal(rerun["accuracy"], everywhere)
    assert torch.equal(worst["accuracy"], torch.arange(32) % 3 != 0)  # the caller's mask is left alone
    sizes.clear()
    assert lb._rerun(d, "pgd", x, y, budget, {"accuracy": torch.zeros(32, dtype=torch.bool)}, score)[
        "accuracy"].sum() == 0 and sizes == []  # nothing standing: no attack at all
    monkeypatch.setattr(lb, "craft", craft)


def test_doubling_the_effort_doubles_every_knob_the_detector_aware_attack_reads(monkeypatch):
    budget = lb.Budget(0.3, steps=3, restarts=1, eot_samples=2, latent_steps=5, hinge_steps=7)
    twice = lb.doubled(budget)
    assert (twice.steps, twice.restarts, twice.eot_samples, twice.latent_steps, twice.hinge_steps) == (
        6, 2, 4, 10, 14)
    seen = {}
    monkeypatch.setattr(lb.evaluate, "attack_dataset", lambda attack, model, x, y, **kw: seen.update(kw) or x)
    comb = defense(detector=gandef.GanDef(small_cnn(), gandef.LogitDiscriminator(10)))
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    lb.craft(comb, "detector_aware", x, y, twice)
    assert (seen["steps"], seen["restarts"], seen["hinge_steps"]) == (6, 2, 14)


def test_the_board_holds_no_stand_in_and_names_what_is_absent():
    assert all("stand-in" not in zoo.entry(slug).name for slug in lb.BOARD)
    assert lb.absent(get_profile("quick")) == {"Defense-GAN": ("smoke", "full", "paper")}
    assert lb.absent(get_profile("full")) == {}


def test_a_stored_board_resumes_with_the_defenses_it_had_not_finished(mnist_model, mnist_data, tmp_path,
                                                                       monkeypatch):
    x, y = mnist_data["x_test"][:16], mnist_data["y_test"][:16]
    budget = lb.Budget(0.2, steps=2, stages=1)
    board = {slug: lb.Defense(slug, slug, "03_apeganpp", mnist_model, transforms.MedianSmoothing(2),
                              identity={"model": slug}) for slug in ("a", "b")}
    settings = dict(headline=budget, full=False, converge=False, store=tmp_path)
    first = lb.evaluate_all(board, x, y, [budget], **settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.json", "b.csv", "b.json"]
    evaluated, evaluate_defense = [], lb.evaluate_defense

    def counted(d, *args, **kwargs):
        evaluated.append(d.slug)
        return evaluate_defense(d, *args, **kwargs)

    monkeypatch.setattr(lb, "evaluate_defense", counted)

    (tmp_path / "b.csv").unlink()  # the run stopped while it attacked b
    again = lb.evaluate_all(board, x, y, [budget], **settings)
    assert evaluated == ["b"]
    pd.testing.assert_frame_equal(again[again["defense"] == "a"], first[first["defense"] == "a"])
    assert set(again["defense"]) == {"a", "b"} and (tmp_path / "b.csv").is_file()

    for changed in (dict(settings, seed=1), dict(settings, headline=lb.Budget(0.3, steps=2, stages=1))):
        evaluated.clear()
        lb.evaluate_all(board, x, y, [budget], **changed)
        assert evaluated == ["a", "b"]  # other settings: nothing read back
    evaluated.clear()
    lb.evaluate_all(board, x[:8], y[:8], [budget], **settings)
    assert evaluated == ["a", "b"]  # other images
    lb.evaluate_all(board, x, y, [budget], **settings)  # each slug keeps its last run only: back to these
    evaluated.clear()
    board["a"].identity = {"model": "retrained"}
    lb.evaluate_all(board, x, y, [budget], **settings)
    assert evaluated == ["a"]  # a's weights changed, b's did not

    evaluated.clear()
    by_hand = {"c": lb.Defense("c", "c", "03_apeganpp", mnist_model, transforms.MedianSmoothing(2))}
    lb.evaluate_all(by_hand, x, y, [budget], **settings)
    lb.evaluate_all(by_hand, x, y, [budget], **settings)
    assert evaluated == ["c", "c"] and not (tmp_path / "c.csv").exists()  # no identity: never kept
