"""The book's trained MNIST defenses, rebuilt with the settings their chapters train them with.

Each function repeats one chapter's MNIST training calls at a profile (the same data slices, options and
seed), so :mod:`purify_lib.cache` hands back the weights that chapter trained; whatever is missing is trained
now through the same keys, never skipped. The leaderboard (chapter 7) builds every defense from here.

Every function returns a :class:`Built`: the modules, the seconds their training took (from the training
histories, whether trained now or earlier) and the cache entries this call had to compute.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from . import attacks, cache, data, evaluate, train
from .defenses import aegan, apegan, apeganpp, defensegan, gandef, isogan, magnet, transforms
from .profiles import Profile

__all__ = ["Built", "gandef_models", "apegan_mnist", "apeganpp_mnist", "aegan_mnist", "isogan_mnist",
           "input_transforms"]

SEED = 0


@dataclass
class Built:
    """Trained modules by name, training seconds by name, and the cache entries computed to build them."""

    modules: dict[str, nn.Module]
    seconds: dict[str, float] = field(default_factory=dict)
    trained_now: list[str] = field(default_factory=list)


def _seconds(history: Any) -> float:
    return float(sum(history.get("seconds", []))) if isinstance(history, dict) else 0.0


def _track(build: Any) -> Any:
    """Run ``build()`` and attach to its :class:`Built` the cache entries it computed."""
    before = len(cache.computed())
    built = build()
    built.trained_now = cache.computed()[before:]
    return built


def gandef_models(P: Profile) -> Built:
    """Chapter 5's MNIST LeNets: ``vanilla`` (shared with chapter 1), ``pure_pgd`` (PGD adversarial
    training) and ``gandef`` (a :class:`purify_lib.defenses.gandef.GanDef` pair)."""
    def build() -> Built:
        x, y = data.load("mnist", "train", n=P.pick(smoke=256, quick=6_000, paper=None))
        val = data.load("mnist", "val", n=P.pick(smoke=128, quick=2_000, paper=5_000))
        vanilla = dict(epochs=P.pick(smoke=1, quick=3, paper=15),
                       batch_size=P.pick(smoke=64, quick=128, paper=128), lr=1e-3, seed=SEED)
        models, histories = gandef.train_methods(
            "lenet", "mnist", x, y, methods=("Vanilla", "Pure PGD", "GanDef"),
            train_pgd=P.pick(smoke=dict(eps=0.3, alpha=0.2, steps=2), quick=dict(eps=0.3, alpha=0.2, steps=2),
                             paper=dict(eps=0.3, alpha=0.01, steps=40)),
            gamma=0.5, logit_pairing=0.5, epochs=P.pick(smoke=1, quick=3, paper=20),
            batch_size=P.pick(smoke=64, quick=64, paper=128), lr=1e-3, lr_schedule="decay", val=val,
            seed=SEED, warmup_fraction=0.4, vanilla=vanilla)
        names = {"Vanilla": "vanilla", "Pure PGD": "pure_pgd", "GanDef": "gandef"}
        return Built({names[k]: m for k, m in models.items()},
                     {names[k]: _seconds(h) for k, h in histories.items()})
    return _track(build)


def apegan_mnist(P: Profile) -> Built:
    """Chapter 2's MNIST APE-GAN (``apegan``), trained on FGSM pairs (ε = 15/255) of its ``defgan_b``."""
    def build() -> Built:
        n_train = P.pick(smoke=256, quick=4_000, paper=None)
        x, y = data.load("mnist", "train", n=n_train)
        target, _ = train.load_or_fit("defgan_b", "mnist", x, y, epochs=P.pick(1, 5, 5),
                                      batch_size=P.pick(smoke=64, quick=128, paper=128), lr=1e-3, seed=SEED)
        xg, yg = data.load("mnist", "train", n=P.pick(smoke=256, quick=10_000, paper=None))
        eps = apegan.EPS_PAPER["mnist"]
        data_key = dict(dataset="mnist", classifier="defgan_b", n_train=n_train, profile=P.name, seed=SEED)
        x_adv = apegan.fgsm_pairs(target, xg, yg, eps, key=data_key)
        g, history = apegan.load_or_train_apegan(xg, x_adv, key=data_key | {"pair_eps": eps},
                                                 epochs=P.pick(1, 2, 2), seed=SEED)
        return Built({"apegan": g}, {"apegan": _seconds(history)})
    return _track(build)


def apeganpp_mnist(P: Profile) -> Built:
    """Chapter 3's MNIST APE-GAN++ (``apeganpp``) with third-party classifier ``mnist_cnn``."""
    def build() -> Built:
        x, y = data.load("mnist", "train", n=P.pick(smoke=128, quick=4_000, paper=None))
        xv, yv = data.load("mnist", "val", n=P.pick(smoke=32, quick=300, paper=2_000))
        fit = P.pick(smoke=dict(optimizer="adam", lr=1e-3, batch_size=64),
                     quick=dict(optimizer="adam", lr=1e-3, batch_size=64),
                     paper=dict(optimizer="sgd", lr=0.01, weight_decay=1e-3, batch_size=128))
        source, _ = apeganpp.load_or_fit("mnist_cnn", "mnist", x, y, epochs=P.pick(1, 2, 10), seed=SEED,
                                         **fit)
        key = dict(dataset="mnist", source="mnist_cnn", weights=apeganpp.weights_fingerprint(source),
                   seed=SEED)
        n_pairs, eps = P.pick(smoke=64, quick=1_000, paper=10_000), apeganpp.EPS_MIX["mnist"]
        pairs = apeganpp.mixed_fgsm_pairs(source, x[:n_pairs], y[:n_pairs], eps, key=key | {"split": "train"})
        _, xv_adv, yv_adv = apeganpp.mixed_fgsm_pairs(source, xv, yv, eps, key=key | {"split": "val"})
        generator = P.pick(smoke=dict(widths=(8, 16), kernel=4, activation="leaky_relu"),
                           quick=dict(widths=(16, 32), kernel=4, activation="leaky_relu"),
                           paper=apeganpp.CODE_GENERATOR)
        g, history = apeganpp.load_or_train_apeganpp(
            source, *pairs, critic_width=P.pick(8, 16, 64), generator=generator, key=dict(dataset="mnist"),
            seed=SEED, val=(xv, yv, xv_adv, yv_adv), epochs=P.pick(1, 2, 10), batch_size=P.pick(32, 32, 128),
            lr=P.pick(1e-3, 1e-3, 2e-4))
        return Built({"apeganpp": g}, {"apeganpp": _seconds(history)})
    return _track(build)


def aegan_mnist(P: Profile) -> Built:
    """Chapter 4's MNIST defenses: ``aegan_rs`` (the searching purifier, its step chosen on validation as
    in the chapter), its auto-encoder ``aegan_ae`` (``G(F(x))``, BPDA's surrogate), ``magnet`` (the reformer,
    latent 20) and ``defensegan`` (at ``quick`` the chapter's stand-in: AE-GAN's decoder, uniform starts)."""
    def build() -> Built:
        x, y = data.load("mnist", "train", n=P.pick(smoke=512, quick=12_000, paper=None))
        x_gan = data.load("mnist", "train", n=P.pick(smoke=512, quick=20_000, paper=None))[0]
        xv, yv = data.load("mnist", "val", n=P.pick(smoke=100, quick=500, paper=5_000))
        target, _ = train.load_or_fit("defgan_a", "mnist", x, y, seed=SEED, epochs=P.pick(1, 3, 10),
                                      batch_size=100, lr=1e-3)
        gan = dict(epochs=P.pick(1, 3, 60), batch_size=100, lr=P.pick(1e-3, 1e-3, 2e-4))
        width = P.pick(8, 16, 64)
        m, h = aegan.load_or_train_aegan(x_gan, variant="aegan_r", width=width, latent=128, val=xv, seed=SEED,
                                         **gan)
        n_lr = P.pick(smoke=32, quick=200, paper=1_000)
        corrupted = evaluate.attack_dataset(attacks.fgsm, target, xv[:n_lr], yv[:n_lr], P.eval_batch_size,
                                            eps=0.3)
        lr, _ = aegan.choose_search_lr(m.encoder, m.decoder, xv[:n_lr], (0.1, 1.0, 10.0, 100.0),
                                       corrupted=corrupted, steps=15)
        reformer, h_magnet = magnet.load_or_train_magnet(x_gan, width=width, latent=20, seed=SEED, **gan)
        dg_epochs = P.pick(smoke=1, quick=None, paper=30)
        if dg_epochs is None:
            generator, init, dg_seconds = m.decoder, "uniform", 0.0
        else:
            generator, h_dg = defensegan.load_or_train_defensegan(x_gan, width=width, seed=SEED,
                                                                  batch_size=50, lr=1e-4, epochs=dg_epochs)
            init, dg_seconds = "normal", _seconds(h_dg)
        modules = {"aegan_rs": aegan.AEGANPurifier(m.encoder, m.decoder, steps=15, lr=lr), "aegan_ae": m,
                   "magnet": reformer,
                   "defensegan": defensegan.DefenseGANPurifier(generator, steps=P.pick(20, 200, 200),
                                                               restarts=10, init=init)}
        seconds = {"aegan_rs": _seconds(h), "magnet": _seconds(h_magnet), "defensegan": dg_seconds}
        return Built(modules, seconds)
    return _track(build)


def isogan_mnist(P: Profile) -> Built:
    """Chapter 6's MNIST IsoGAN (``isogan``): the label weight its chapter chooses on validation."""
    def build() -> Built:
        x, y = data.load("mnist", "train", n=P.pick(smoke=64, quick=5_000, paper=None))
        xv, yv = data.load("mnist", "val", n=P.pick(smoke=32, quick=1_000, paper=2_000))
        f1, _ = train.load_or_fit("mnist_cnn", "mnist", x, y, epochs=P.pick(1, 2, 10),
                                  batch_size=P.pick(32, 32, 128), lr=1e-3, seed=SEED)
        eps, n_pairs = isogan.EPS_PAPER["grey"], P.pick(smoke=64, quick=3_000, paper=None)
        key = dict(dataset="mnist", classifier="mnist_cnn", weights=isogan.weights_fingerprint(f1))
        xp, yp = x[:n_pairs], y[:n_pairs]
        pairs = (xp, apegan.fgsm_pairs(f1, xp, yp, eps, key=key | {"split": "train"}), yp)
        val = (xv, apegan.fgsm_pairs(f1, xv, yv, eps, key=key | {"split": "val"}), yv)
        gan = dict(epochs=P.pick(1, 1, 5), batch_size=32, lr=P.pick(1e-3, 1e-3, 2e-4))
        found = {}
        for w in P.pick(smoke=[0.0, 0.5], quick=[0.0, 0.1, 0.5], paper=[0.0, 0.05, 0.1, 0.5]):
            found[f"label={w:g}"] = isogan.load_or_train_isogan(
                *pairs, f1, key=key | {"pair_eps": eps}, seed=SEED,
                weights={**isogan.DEFAULT_WEIGHTS, "label": w}, val=val, **gan)
        scores = {k: {"clean_acc": h["val_clean_acc"][-1], "adv_acc": h["val_adv_acc"][-1]}
                  for k, (_, h) in found.items()}
        chosen = isogan.choose(scores, evaluate.accuracy(f1, xv, yv), tolerance=0.01)
        return Built({"isogan": found[chosen][0]}, {"isogan": _seconds(found[chosen][1])})
    return _track(build)


def input_transforms(P: Profile) -> Built:
    """Chapter 3's input transformations: ``bit_depth`` (1 bit), ``median`` (2×2) and ``tv_min``."""
    return Built({"bit_depth": transforms.BitDepth(1), "median": transforms.MedianSmoothing(2),
                  "tv_min": transforms.TVMinimisation(keep=0.3, lam=0.05, norm=2, steps=P.pick(50, 100, 300),
                                                      seed=SEED)})
