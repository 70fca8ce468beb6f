"""The training loop, adversarial training, logit pairing, distillation and batched prediction."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from purify_lib import attacks, classifiers, evaluate, train


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def mlp() -> nn.Module:
    """Defense-GAN's substitute C: small and quick to train on a CPU."""
    torch.manual_seed(0)
    return classifiers.build("defgan_c", "mnist", device="cpu")


def test_fit_learns_real_mnist(mnist_data) -> None:
    x, y = mnist_data["x_train"][:1000], mnist_data["y_train"][:1000]
    val = (mnist_data["x_test"][:300], mnist_data["y_test"][:300])
    model = mlp()
    history = train.fit(model, x, y, epochs=3, batch_size=50, lr=2e-3, val=val)
    assert set(history) == {"train_loss", "train_acc", "adv_acc", "val_acc", "seconds"}
    assert len(history["train_loss"]) == len(history["val_acc"]) == len(history["seconds"]) == 3
    assert history["adv_acc"] == []
    assert history["train_loss"][-1] < 0.6 * history["train_loss"][0]
    assert history["val_acc"][-1] >= 0.75
    assert not model.training
    assert history["val_acc"][-1] == pytest.approx(evaluate.accuracy(model, *val))


def test_seeded_runs_are_bit_identical(mnist_data) -> None:
    x, y = mnist_data["x_train"][:256], mnist_data["y_train"][:256]

    def run(seed: int) -> tuple[dict, dict]:
        model = mlp()  # dropout draws from the global RNG, which fit seeds
        history = train.fit(model, x, y, epochs=2, batch_size=64, lr=1e-3, seed=seed)
        return history, model.state_dict()

    (h1, w1), (h2, w2), (_, w3) = run(0), run(0), run(1)
    assert h1["train_loss"] == h2["train_loss"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)


def test_fgsm_adversarial_training_raises_fgsm_accuracy(mnist_data) -> None:
    x, y = mnist_data["x_train"][:1000], mnist_data["y_train"][:1000]
    x_test, y_test = mnist_data["x_test"][:300], mnist_data["y_test"][:300]
    fgsm = functools.partial(attacks.fgsm, eps=0.2)
    plain, robust = mlp(), mlp()
    train.fit(plain, x, y, epochs=3, batch_size=50, lr=2e-3)
    history = train.fit(robust, x, y, epochs=3, batch_size=50, lr=2e-3, adversary=fgsm, clean_weight=0.5)
    assert len(history["adv_acc"]) == 3
    plain_acc = evaluate.accuracy(plain, fgsm(plain, x_test, y_test), y_test)
    robust_acc = evaluate.accuracy(robust, fgsm(robust, x_test, y_test), y_test)
    assert evaluate.accuracy(robust, x_test, y_test) >= 0.7
    assert robust_acc >= plain_acc + 0.15, (plain_acc, robust_acc)


def test_logit_pairing_adds_the_squared_logit_distance(mnist_data) -> None:
    # One full batch and one epoch: the recorded loss is the loss at the initial weights.
    x, y = mnist_data["x_train"][:64], mnist_data["y_train"][:64]
    fgsm = functools.partial(attacks.fgsm, eps=0.1)
    common = dict(epochs=1, batch_size=64, lr=1e-3, adversary=fgsm, clean_weight=0.5)
    without = train.fit(linear_model(), x, y, **common)["train_loss"][0]
    with_pairing = train.fit(linear_model(), x, y, logit_pairing=2.0, **common)["train_loss"][0]
    model = linear_model()
    x_adv = fgsm(model, x, y)
    with torch.no_grad():
        gap = (model(x) - model(x_adv)).pow(2).sum(1).mean().item()
    assert gap > 0
    assert with_pairing - without == pytest.approx(2.0 * gap, rel=1e-4)


def test_soft_targets_at_temperature_match_the_formula(mnist_data) -> None:
    x, y = mnist_data["x_train"][:32], mnist_data["y_train"][:32]
    soft = torch.softmax(torch.randn(32, 10), 1)
    loss = train.fit(linear_model(), x, y, epochs=1, batch_size=32, lr=1e-3, soft_targets=soft,
                     temperature=5.0)["train_loss"][0]
    with torch.no_grad():
        expected = -(soft * torch.log_softmax(linear_model()(x) / 5.0, 1)).sum(1).mean().item()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_defensive_distillation_trains_a_student(mnist_data) -> None:
    x, y = mnist_data["x_train"][:1000], mnist_data["y_train"][:1000]
    val = (mnist_data["x_test"][:300], mnist_data["y_test"][:300])
    student = mlp()
    history = train.defensive_distillation(student, mlp(), x, y, temperature=10.0, epochs=3, batch_size=50,
                                           lr=1e-2, val=val)
    assert set(history) == {"teacher", "student"}
    assert history["student"]["val_acc"][-1] >= 0.7
    assert not student.training


def test_fit_rejects_bad_arguments(mnist_data) -> None:
    x, y = mnist_data["x_train"][:8], mnist_data["y_train"][:8]
    model = linear_model()
    fgsm = functools.partial(attacks.fgsm, eps=0.1)
    bad = [
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(clean_weight=0.5), "adversary"),
        (dict(logit_pairing=1.0), "adversary"),
        (dict(adversary=fgsm, clean_weight=1.5), "clean_weight"),
        (dict(soft_targets=torch.rand(8, 10)), "sum to 1"),
        (dict(soft_targets=torch.full((7, 10), 0.1)), "soft_targets"),
        (dict(temperature=0.0), "temperature"),
        (dict(val=(x, y[:3])), "val"),
        (dict(lr_schedule="cosine"), "lr_schedule"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=message):
            train.fit(model, x, y, epochs=1, batch_size=4, lr=1e-3, **options)
    with pytest.raises(ValueError, match="labels"):
        train.fit(model, x, y[:5], epochs=1, batch_size=4, lr=1e-3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train.fit(model, x * 2, y, epochs=1, batch_size=4, lr=1e-3)


def test_lr_factor_holds_then_decays_linearly_to_zero() -> None:
    assert [train.lr_factor("constant", p) for p in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]
    assert [train.lr_factor("decay", p) for p in (0.0, 0.4, 0.7, 1.0)] == pytest.approx([1.0, 1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="lr_schedule"):
        train.lr_factor("cosine", 0.5)


def test_lr_scheduler_drives_every_optimiser_over_the_whole_run() -> None:
    params = [nn.Parameter(torch.zeros(1))]
    opts = [torch.optim.SGD(params, lr=1.0), torch.optim.Adam(params, lr=0.1)]
    schedulers = train.lr_scheduler(opts, "decay", total_steps=10)
    seen = []
    for _ in range(10):
        seen.append([opt.param_groups[0]["lr"] for opt in opts])
        for opt, scheduler in zip(opts, schedulers):
            opt.step()
            scheduler.step()
    assert seen[0] == seen[4] == pytest.approx([1.0, 0.1])
    assert seen[7] == pytest.approx([0.5, 0.05])
    assert [opt.param_groups[0]["lr"] for opt in opts] == pytest.approx([0.0, 0.0])


def test_fit_applies_the_lr_schedule(mnist_data) -> None:
    x, y = mnist_data["x_train"][:256], mnist_data["y_train"][:256]
    start = linear_model()[1].weight.detach()
    moved = {}
    for schedule in ("constant", "decay"):
        model = linear_model()
        train.fit(model, x, y, epochs=2, batch_size=64, lr=1e-2, lr_schedule=schedule)
        moved[schedule] = model[1].weight.detach() - start
    assert not torch.allclose(moved["constant"], moved["decay"])
    assert moved["decay"].abs().sum() < moved["constant"].abs().sum()


def test_predict_batches_without_gradients_and_restores_the_mode(mnist_data) -> None:
    x = mnist_data["x_test"][:50]
    model = mlp().train()
    logits = evaluate.predict(model, x, batch_size=7)
    assert model.training
    assert not logits.requires_grad
    with torch.no_grad():
        assert torch.allclose(logits, model.eval()(x), atol=1e-6)  # eval mode: dropout off
    assert torch.allclose(evaluate.predict(model, x, batch_size=512), logits, atol=1e-6)


# ------------------------------------------------------------------------------------------ the engine
def test_run_records_step_metrics_validation_and_keeps_the_best_epoch() -> None:
    """A step that walks a parameter up then down: keep_best restores the epoch validation liked best."""
    param = nn.Parameter(torch.zeros(1))
    holder = nn.Module()
    holder.p = param
    moves = iter([1.0, 1.0, -5.0])  # one step per epoch (4 examples, batch 4)

    def step(loop, batch):
        with torch.no_grad():
            param.add_(next(moves))
        return {"value": param.item(), "batch": float(len(batch[0]))}

    history = train.run(step, (torch.arange(4.0),), epochs=3, batch_size=4, modules=[holder],
                        validate=lambda: {"score": param.item()}, keep_best="score", step_history=True)
    assert history["value"] == [1.0, 2.0, -3.0] and history["score"] == [1.0, 2.0, -3.0]
    assert history["best_epoch"] == 2 and param.item() == 2.0
    assert history["steps"]["batch"] == [4.0, 4.0, 4.0] and len(history["seconds"]) == 3
    assert not holder.training


def test_run_weights_epoch_means_by_batch_size_and_rejects_bad_input() -> None:
    holder = nn.Linear(1, 1)
    history = train.run(lambda loop, batch: {"n": float(len(batch[0]))}, (torch.zeros(5),), epochs=1,
                        batch_size=2, modules=[holder])
    assert history["n"] == [pytest.approx((2 * 2 + 2 * 2 + 1 * 1) / 5)]
    with pytest.raises(ValueError, match="equal length"):
        train.run(lambda loop, batch: {}, (torch.zeros(5), torch.zeros(4)), epochs=1, batch_size=2,
                  modules=[holder])
    with pytest.raises(ValueError, match="keep_best"):
        train.run(lambda loop, batch: {}, (torch.zeros(5),), epochs=1, batch_size=2, modules=[holder],
                  keep_best="val_acc")


def test_random_eps_fgsm_draws_from_its_choices_and_is_seeded(mnist_model, mnist_data) -> None:
    x, y = mnist_data["x_test"][:32], mnist_data["y_test"][:32]
    draws = []
    for seed in (0, 0, 1):
        adversary = train.RandomEpsFGSM([0.1, 0.3, 0.5, 0.7], seed=seed)
        draws.append([round((adversary(mnist_model, x, y) - x).abs().max().item(), 4) for _ in range(12)])
    assert set(draws[0]) <= {0.1, 0.3, 0.5, 0.7} and len(set(draws[0])) >= 3
    assert draws[0] == draws[1] and draws[0] != draws[2]
    assert repr(train.RandomEpsFGSM([0.1], seed=3)) == "RandomEpsFGSM(eps_choices=[0.1], seed=3)"

