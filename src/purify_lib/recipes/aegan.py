"""Chapter 4's models: AE-GAN+r with its search step (AE-GAN+rs), MagNet's reformer, Defense-GAN's WGAN-GP.

:class:`AEGANRS` trains the auto-encoder GAN (:func:`purify_lib.defenses.aegan.train_aegan`) and then chooses
the search's initial step η₀ on validation images corrupted by FGSM against classifier A
(:func:`purify_lib.defenses.aegan.choose_search_lr`); the chosen step is recorded in the history
(``search_lr``). :class:`MagNet` is the reformer of Meng & Chen, :class:`DefenseGAN` the generator Defense-GAN
searches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor, nn

from .. import attacks, classifiers, data, evaluate, train
from ..defenses import aegan, defensegan, magnet
from ..train import Loop, lr_factor, lr_scheduler, run
from .base import Recipe, build
from .classifiers import Supervised

SEARCH_STEPS = 15
"""AE-GAN+rs's search length L (the paper's tables 1–3)."""
DEFENSEGAN_PROFILES = ("smoke", "full", "paper")
"""The profiles that train Defense-GAN's own generator; at ``quick`` its search runs on AE-GAN's decoder, a
stand-in named ``defensegan_aegan_decoder``."""
DEFENSEGAN_STEPS = {"smoke": 20, "quick": 200, "full": 200, "paper": 200}
"""Defense-GAN's search length L (the authors' 200; R = 10 restarts)."""


@dataclasses.dataclass(frozen=True)
class ClassifierA(Supervised):
    """Defense-GAN's model A, the classifier under test in chapter 4."""

    classifier: str = "defgan_a"
    n_train: int | None = 12_000
    n_val: int = 0
    batch_size: int = 100

    PROFILES = {"smoke": dict(n_train=512, epochs=1), "quick": {}, "full": dict(n_train=None, epochs=10),
                "paper": dict(n_train=None, epochs=10)}


_GAN_PAPER = dict(n_train=None, n_val=5_000, width=64, epochs=60, lr=2e-4, n_search_val=1_000)
_GAN_FULL = {**_GAN_PAPER, "width": 32, "epochs": 30}
_WIDTH = ("one epoch of AE-GAN on 55,000 images took 8.9 min at width 64 and 2.3 min at width 32 on the "
          "2-core CPU: the paper's 60 epochs at width 64 would take about 9 hours, 30 at width 32 fit the "
          "90 minutes a full-profile model gets")


@dataclasses.dataclass(frozen=True)
class AEGANRS(Recipe):
    """AE-GAN (``variant`` of :data:`purify_lib.defenses.aegan.VARIANTS`) and its search step."""

    variant: str = "aegan_r"
    width: int = 16
    latent: int = aegan.LATENT
    n_train: int | None = 20_000
    n_val: int = 500
    epochs: int = 3
    batch_size: int = 100
    lr: float = 1e-3
    target: ClassifierA = ClassifierA()
    search_lr_grid: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    n_search_val: int = 200
    search_fgsm_eps: float = 0.3

    NAME = "aegan"
    CODE = (aegan.Encoder, aegan.Decoder, aegan.Discriminator, aegan.AEGAN, aegan.sample_prior,
            aegan.aegan_step, aegan.train_aegan, aegan.latent_search, aegan.AEGANPurifier,
            aegan.choose_search_lr, attacks.fgsm, run, Loop, lr_factor, lr_scheduler)
    PARTS = {"target": ClassifierA}
    PROFILES = {"smoke": dict(width=8, n_train=512, n_val=100, epochs=1, n_search_val=32), "quick": {},
                "full": _GAN_FULL, "paper": _GAN_PAPER}
    WHY = {"width": _WIDTH, "epochs": _WIDTH}

    def __post_init__(self) -> None:
        if self.variant not in aegan.VARIANTS:
            raise ValueError(f"variant: expected one of {', '.join(aegan.VARIANTS)}, got {self.variant!r}")

    def network(self) -> nn.Module:
        info = data.info(self.dataset)
        return aegan.AEGAN(info.channels, info.size, self.width, self.latent,
                           adversarial=aegan.VARIANTS[self.variant]["adversarial"])

    def training_data(self) -> tuple[Tensor, ...]:
        return data.load(self.dataset, "train", n=self.n_train)[:1]

    def fit(self, model: nn.Module) -> dict[str, Any]:
        (x,) = self.training_data()
        xv, yv = data.load(self.dataset, "val", n=self.n_val)
        settings = aegan.VARIANTS[self.variant]
        history = aegan.train_aegan(model, x, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                    noise_max=settings["noise_max"], clip=settings["clip"], val=xv,
                                    seed=self.seed, desc=self.variant)
        classifier, _ = build(self.target)
        k = self.n_search_val
        corrupted = evaluate.attack_dataset(
            attacks.fgsm, classifier, xv[:k], yv[:k], 500, eps=self.search_fgsm_eps
        )
        lr, errors = aegan.choose_search_lr(
            model.encoder, model.decoder, xv[:k], self.search_lr_grid, corrupted=corrupted, steps=SEARCH_STEPS
        )
        return {**history, "search_lr": lr, "search_lr_errors": {str(k): v for k, v in errors.items()}}


@dataclasses.dataclass(frozen=True)
class MagNet(Recipe):
    """MagNet's reformer, an auto-encoder trained on noisy clean images."""

    width: int = 16
    latent: int = 20
    n_train: int | None = 20_000
    epochs: int = 3
    batch_size: int = 100
    lr: float = 1e-3
    noise: float = magnet.NOISE

    NAME = "magnet"
    CODE = (magnet.MagNet, magnet.magnet_step, magnet.train_magnet, aegan.Encoder, aegan.Decoder, run, Loop,
            lr_factor, lr_scheduler)
    PROFILES = {"smoke": dict(width=8, n_train=512, epochs=1), "quick": {},
                "full": dict(n_train=None, width=32, epochs=60, lr=2e-4),
                "paper": dict(n_train=None, width=64, epochs=60, lr=2e-4)}
    WHY = {"width": "AE-GAN's encoder and decoder at AE-GAN's full width, so that the two differ in training "
                    "only; at width 32 the paper's 60 epochs fit the budget (0.7 min an epoch, 2.4 at 64)"}

    def network(self) -> nn.Module:
        info = data.info(self.dataset)
        return magnet.MagNet(info.channels, info.size, self.width, self.latent)

    def training_data(self) -> tuple[Tensor, ...]:
        return data.load(self.dataset, "train", n=self.n_train)[:1]

    def fit(self, model: nn.Module) -> dict[str, Any]:
        (x,) = self.training_data()
        return magnet.train_magnet(model, x, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                   noise=self.noise, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class DefenseGAN(Recipe):
    """Defense-GAN's generator (and critic), a WGAN-GP on clean images."""

    width: int = 16
    latent: int = aegan.LATENT
    n_train: int | None = 20_000
    epochs: int = 3
    batch_size: int = 50
    lr: float = 1e-4
    n_critic: int = 5
    gp_weight: float = 10.0

    NAME = "defensegan"
    CODE = (defensegan.Critic, defensegan.gradient_penalty, defensegan.wgan_gp_step,
            defensegan.train_defensegan, aegan.Decoder, run, Loop, lr_factor, lr_scheduler)
    PROFILES = {"smoke": dict(width=8, n_train=512, epochs=1), "quick": {},
                "full": dict(n_train=None, width=32, epochs=30),
                "paper": dict(n_train=None, width=64, epochs=30)}
    WHY = {"width": "the generator is AE-GAN's decoder at AE-GAN's full width; an epoch of WGAN-GP with five "
                    "critic steps took 1.5 min at width 32 and 4.8 at width 64"}

    def network(self) -> nn.Module:
        info = data.info(self.dataset)
        return nn.ModuleDict(
            {"g": aegan.Decoder(info.channels, info.size, self.width, self.latent),
             "c": defensegan.Critic(info.channels, info.size, self.width)}
        )

    def training_data(self) -> tuple[Tensor, ...]:
        return data.load(self.dataset, "train", n=self.n_train)[:1]

    def fit(self, model: nn.Module) -> dict[str, Any]:
        (x,) = self.training_data()
        return defensegan.train_defensegan(model["g"], model["c"], x, epochs=self.epochs,
                                           batch_size=self.batch_size, lr=self.lr, n_critic=self.n_critic,
                                           gp_weight=self.gp_weight, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class Substitute(Recipe):
    """Papernot et al.'s black-box substitute of classifier A (``aegan.train_substitute``), trained on A's
    answers for ``n_holdout`` held-out test images (from ``holdout_start`` on, past the images the chapter
    evaluates on) and their Jacobian-augmented copies, ``rounds`` times."""

    oracle: ClassifierA = ClassifierA()
    classifier: str = "defgan_b"
    holdout_start: int = 200
    n_holdout: int = 150
    rounds: int = 4
    lam: float = 0.1
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3

    NAME = "substitute"
    CODE = (aegan.train_substitute, aegan._jacobian_augment, classifiers.build, train.fit,
            train.supervised_step, run, Loop, lr_factor, lr_scheduler)
    PARTS = {"oracle": ClassifierA}
    PROFILES = {"smoke": dict(holdout_start=48, n_holdout=40, rounds=2, epochs=1), "quick": {},
                "full": dict(holdout_start=9_850, rounds=6, epochs=10),
                "paper": dict(holdout_start=9_850, rounds=6, epochs=10)}

    def network(self) -> nn.Module:
        return classifiers.build(self.classifier, self.dataset)

    def training_data(self) -> tuple[Tensor, ...]:
        x, _ = data.load(self.dataset, "test", n=self.holdout_start + self.n_holdout)
        return (x[self.holdout_start :],)

    def fit(self, model: nn.Module) -> dict[str, Any]:
        oracle, _ = build(self.oracle)
        (x_seed,) = self.training_data()
        return aegan.train_substitute(model, oracle, x_seed, rounds=self.rounds, lam=self.lam,
                                      epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                      seed=self.seed)
