"""Chapter 2's APE-GAN: the target classifier whose FGSM examples it learns to purify, and the GAN itself.

The pairs are FGSM examples (the paper's ε, read as 15/255 on MNIST) of the first ``n_train_gan`` training
images, crafted once on the target classifier (:class:`Target`, Defense-GAN's model B on MNIST, a small
ConvNet on CIFAR-10 and GTSRB); the purifier learns to map each back to its clean image
(:func:`purify_lib.defenses.apegan.train_apegan`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from .. import attacks, cache, data, train
from ..defenses import apegan
from ..profiles import PROFILE_NAMES
from ..train import Loop, lr_factor, lr_scheduler, run
from .base import Recipe, build, target_key
from .classifiers import Supervised


@dataclasses.dataclass(frozen=True)
class Target(Supervised):
    """The classifier APE-GAN's training pairs attack (and chapter 2's classifier under test)."""

    classifier: str = "defgan_b"
    n_train: int | None = 4_000
    n_val: int = 0
    epochs: int = 5

    PROFILES = {"smoke": dict(n_train=256, epochs=1, batch_size=64), "quick": {}, "full": dict(n_train=None),
                "paper": dict(n_train=None)}
    DATASETS = {
        ds: {p: dict(classifier="convnet", epochs=e)
             for p, e in (("smoke", 1), ("quick", 2), ("full", 20), ("paper", 20))}
        for ds in ("cifar10_jpeg", "gtsrb")
    }  # chapter 2's ConvNet


@dataclasses.dataclass(frozen=True)
class APEGANRecipe(Recipe):
    """APE-GAN (generator and discriminator) on FGSM pairs of :class:`Target`."""

    target: Target = Target()
    n_train_gan: int | None = 10_000
    pair_eps: float = apegan.EPS_PAPER["mnist"]
    epochs: int = 2
    batch_size: int = 64
    lr: float = 2e-4
    g_steps: int = 2
    loss_weights: tuple[float, float, float] = apegan.PAPER_WEIGHTS

    NAME = "apegan"
    CODE = (apegan.APEGAN, apegan.Discriminator, apegan.total_variation, apegan.generator_losses,
            apegan.apegan_step, apegan.train_apegan, attacks.fgsm, run, Loop, lr_factor, lr_scheduler)
    PARTS = {"target": Target}
    PROFILES = {"smoke": dict(n_train_gan=256, epochs=1), "quick": {},
                "full": dict(n_train_gan=None), "paper": dict(n_train_gan=None)}  # 2 epochs (paper's table 3)
    DATASETS = {
        ds: {p: dict(pair_eps=apegan.EPS_PAPER[eps], epochs=e)
             for p, e in (("smoke", 1), ("quick", 2), ("full", 10), ("paper", 10))}
        for ds, eps in (("cifar10_jpeg", "cifar10"), ("gtsrb", "gtsrb"))
    }  # the paper's ε of 5/255

    def network(self) -> nn.Module:
        info = data.info(self.dataset)
        return nn.ModuleDict(
            {"g": apegan.APEGAN(info.channels), "d": apegan.Discriminator(info.channels, info.size)}
        )

    def training_data(self) -> tuple[Tensor, ...]:
        return data.load(self.dataset, "train", n=self.n_train_gan)

    def pairs(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(x, x_adv, y)``: the training images, their FGSM examples against the target, the labels."""
        classifier, _ = build(self.target)
        x, y = self.training_data()
        return x, apegan.fgsm_pairs(classifier, x, y, self.pair_eps, key=target_key(self.target)), y

    def fit(self, model: nn.Module) -> dict[str, Any]:
        x, x_adv, _ = self.pairs()
        return apegan.train_apegan(model["g"], model["d"], x, x_adv, epochs=self.epochs,
                                   batch_size=self.batch_size, lr=self.lr, weights=self.loss_weights,
                                   g_steps=self.g_steps, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class _Retrained(Recipe):
    """A classifier of the target's architecture trained again with the target's knobs, differently.

    ``same_images`` (``quick``, for time): a retraining that shows the target's images ``copies`` times per
    epoch (as iterates, or as teacher and student) trains for the target's epochs divided by ``copies``
    (rounded up), so it sees about as many images as the target did."""

    target: Target = Target()
    same_images: bool = False

    PARTS = {"target": Target}
    PROFILES = {"quick": dict(same_images=True)}

    def code(self) -> tuple[Any, ...]:
        return self.target.code() + self.CODE

    def network(self) -> nn.Module:
        return self.target.network()

    def training_data(self) -> tuple[Tensor, ...]:
        return self.target.training_data()

    def _epochs(self, copies: int) -> int:
        """The target's epochs, or with ``same_images`` those divided by ``copies`` (rounded up)."""
        return math.ceil(self.target.epochs / copies) if self.same_images else self.target.epochs


@dataclasses.dataclass(frozen=True)
class AdvIterates(_Retrained):
    """The paper's adversarial-training baseline Model_i^adv: the target classifier retrained (same knobs) on
    its clean training images plus the first ``iterations`` BIM iterates of them (Eq. 2 at ``eps``, crafted
    once on the trained target). With ``same_images`` the set is ``iterations + 1`` copies of the images."""

    iterations: int = 1
    eps: float = apegan.EPS_PAPER["mnist"]
    bim_steps: int = 4

    NAME = "apegan-adv-iterates"
    CODE = (apegan.bim_iterates, attacks.bim)  # besides the target's training code
    DATASETS = {ds: {p: dict(eps=apegan.EPS_PAPER[eps]) for p in PROFILE_NAMES}
                for ds, eps in (("cifar10_jpeg", "cifar10"), ("gtsrb", "gtsrb"))}

    def train_epochs(self) -> int:
        """The epochs it trains for: the target's, or fewer with ``same_images``."""
        return self._epochs(self.iterations + 1)

    def fit(self, model: nn.Module) -> dict[str, Any]:
        classifier, _ = build(self.target)
        x, y = self.training_data()
        key = {**target_key(self.target), "eps": self.eps, "steps": self.bim_steps}
        steps = self.bim_steps
        iterates = cache.load_or_compute("apegan-train-iterates", key,
                                         lambda: apegan.bim_iterates(classifier, x, y, self.eps, steps=steps))
        t = self.target
        return train.fit(model, torch.cat([x, *iterates[: self.iterations]]), y.repeat(self.iterations + 1),
                         epochs=self.train_epochs(), batch_size=t.batch_size, lr=t.lr, optimizer=t.optimizer,
                         weight_decay=t.weight_decay, lr_schedule=t.lr_schedule, seed=self.seed,
                         desc=f"{t.classifier} + {self.iterations} BIM iterates")


@dataclasses.dataclass(frozen=True)
class Distilled(_Retrained):
    """Defensive distillation of the target classifier's architecture at ``temperature`` (the target's
    training knobs, for teacher and student: :func:`purify_lib.train.defensive_distillation`). With
    ``same_images`` teacher and student are two copies: each trains for half the target's epochs."""

    temperature: float = 100.0

    NAME = "apegan-distilled"
    CODE = (train.defensive_distillation,)

    def train_epochs(self) -> int:
        """The epochs teacher and student each train for: the target's, or half with ``same_images``."""
        return self._epochs(2)

    def fit(self, model: nn.Module) -> dict[str, Any]:
        x, y = self.training_data()
        t = self.target
        return train.defensive_distillation(model, t.network(), x, y, temperature=self.temperature,
                                            epochs=self.train_epochs(), batch_size=t.batch_size, lr=t.lr,
                                            seed=self.seed, desc=f"T={self.temperature:g}")
