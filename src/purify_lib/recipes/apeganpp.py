"""Chapter 3's APE-GAN++: a WGAN-GP purifier trained with a third-party classifier's loss.

The training pairs are FGSM examples at four ε (:data:`purify_lib.defenses.apeganpp.EPS_MIX`) of the first
``n_pairs`` training images, crafted on the ``source`` classifier; the generator's loss adds the cross-entropy
of a frozen ``third_party`` classifier on its output (:func:`purify_lib.defenses.apeganpp.train_apeganpp`),
and the epoch with the best validation accuracy through the third party is kept.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor, nn

from .. import attacks, data
from ..attacks import attack_mode
from ..defenses import apegan, apeganpp
from ..train import Loop, lr_factor, lr_scheduler, run
from .apegan import target_key
from .base import Recipe, build
from .classifiers import Supervised

_SGD = dict(optimizer="sgd", lr=0.01, weight_decay=1e-3, batch_size=128)  # the authors' code
_GAN_PAPER = dict(
    n_pairs=10_000,
    n_val=2_000,
    generator_widths=apeganpp.CODE_GENERATOR["widths"],
    critic_width=64,
    epochs=10,
    batch_size=128,
    lr=2e-4,
)


@dataclasses.dataclass(frozen=True)
class ThirdParty(Supervised):
    """A classifier of chapter 3 (the pairs' source, the third party, or a classifier under test)."""

    classifier: str = "mnist_cnn"
    n_train: int | None = 4_000
    n_val: int = 0
    epochs: int = 2
    batch_size: int = 64

    PROFILES = {
        "smoke": dict(n_train=128, epochs=1),
        "quick": {},
        "full": dict(n_train=None, epochs=10, **_SGD),
        "paper": dict(n_train=None, epochs=10, **_SGD),
    }
    DATASETS = {
        "cifar10_jpeg": {
            "smoke": dict(classifier="cifar_cnn"),
            "quick": dict(classifier="cifar_cnn"),
            "full": dict(classifier="cifar_cnn", epochs=20),
            "paper": dict(classifier="cifar_cnn", epochs=20),
        }
    }


@dataclasses.dataclass(frozen=True)
class APEGANPP(Recipe):
    """APE-GAN++ (generator and critic) on mixed-ε FGSM pairs of ``source``, with ``third_party``'s loss."""

    source: ThirdParty = ThirdParty()
    third_party: ThirdParty = ThirdParty()
    n_pairs: int | None = 1_000
    n_val: int = 300
    pair_eps: tuple[float, ...] = apeganpp.EPS_MIX["mnist"]
    generator_widths: tuple[int, int] = (16, 32)
    generator_kernel: int = 4
    generator_activation: str = "leaky_relu"
    critic_width: int = 16
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    loss_weights: tuple[float, float] = apeganpp.PAPER_WEIGHTS
    gp_weight: float = apeganpp.GP_WEIGHT
    n_critic: int = 1

    NAME = "apeganpp"
    CODE = (
        apegan.APEGAN,
        apeganpp.Critic,
        apeganpp.gradient_penalty,
        apeganpp.critic_losses,
        apeganpp.generator_losses,
        apeganpp.apeganpp_step,
        apeganpp.purification_validator,
        apeganpp.train_apeganpp,
        apeganpp.mixed_fgsm_pairs,
        apegan.fgsm_pairs,
        attacks.fgsm,
        attack_mode,
        run,
        Loop,
        lr_factor,
        lr_scheduler,
    )
    PARTS = {"source": ThirdParty, "third_party": ThirdParty}
    PROFILES = {
        "smoke": dict(n_pairs=64, n_val=32, generator_widths=(8, 16), critic_width=8, epochs=1),
        "quick": {},
        "full": _GAN_PAPER,
        "paper": _GAN_PAPER,
    }
    DATASETS = {
        "cifar10_jpeg": {
            p: dict(pair_eps=apeganpp.EPS_MIX["cifar10"]) for p in ("smoke", "quick", "full", "paper")
        }
    }

    def network(self) -> nn.Module:
        info = data.info(self.dataset)
        g = apegan.APEGAN(
            info.channels,
            widths=self.generator_widths,
            kernel=self.generator_kernel,
            activation=self.generator_activation,
        )
        return nn.ModuleDict({"g": g, "d": apeganpp.Critic(info.channels, info.size, self.critic_width)})

    def training_data(self) -> tuple[Tensor, ...]:
        x, y = data.load(self.dataset, "train", n=self.source.n_train)
        return x[: self.n_pairs], y[: self.n_pairs]

    def pairs(self) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]:
        """The training triples ``(x, x_adv, y)`` (every ε, concatenated) and the validation quadruple
        ``(x, y, x_adv, y_adv)``, crafted on the source classifier."""
        source, _ = build(self.source)
        key = target_key(self.source)
        x, y = self.training_data()
        train_pairs = apeganpp.mixed_fgsm_pairs(source, x, y, self.pair_eps, key=key | {"split": "train"})
        xv, yv = data.load(self.dataset, "val", n=self.n_val)
        _, xv_adv, yv_adv = apeganpp.mixed_fgsm_pairs(
            source, xv, yv, self.pair_eps, key=key | {"split": "val"}
        )
        return train_pairs, (xv, yv, xv_adv, yv_adv)

    def fit(self, model: nn.Module) -> dict[str, Any]:
        (x, x_adv, y), val = self.pairs()
        third_party, _ = build(self.third_party)
        return apeganpp.train_apeganpp(
            model["g"],
            model["d"],
            third_party,
            x,
            x_adv,
            y,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weights=self.loss_weights,
            gp_weight=self.gp_weight,
            n_critic=self.n_critic,
            val=val,
            seed=self.seed,
        )
