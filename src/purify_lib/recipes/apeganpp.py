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

from .. import attacks, data, train
from ..attacks import attack_mode
from ..defenses import apegan, apeganpp
from ..profiles import PROFILE_NAMES
from ..train import Loop, lr_factor, lr_scheduler, run
from .base import Recipe, build, target_key
from .classifiers import Supervised

_SGD = dict(optimizer="sgd", lr=0.01, weight_decay=1e-3, batch_size=128)  # the authors' code
_GAN_PAPER = dict(n_pairs=10_000, n_val=2_000, generator_widths=apeganpp.CODE_GENERATOR["widths"],
                  critic_width=64, epochs=10, batch_size=128, lr=2e-4)


@dataclasses.dataclass(frozen=True)
class ThirdParty(Supervised):
    """A classifier of chapter 3 (the pairs' source, the third party, or a classifier under test)."""

    classifier: str = "mnist_cnn"
    n_train: int | None = 4_000
    n_val: int = 0
    epochs: int = 2
    batch_size: int = 64

    PROFILES = {"smoke": dict(n_train=128, epochs=1), "quick": {},
                "full": dict(n_train=None, epochs=10, **_SGD), "paper": dict(n_train=None, epochs=10, **_SGD)}
    DATASETS = {
        "cifar10_jpeg": {"smoke": dict(classifier="cifar_cnn"), "quick": dict(classifier="cifar_cnn"),
                         "full": dict(classifier="cifar_cnn", epochs=20),
                         "paper": dict(classifier="cifar_cnn", epochs=20)}
    }


NARROW = {"resnet18": (("width", 4),), "vgg16": (("width", 4),), "densenet": (("depth", 10), ("growth", 4))}
"""At ``smoke`` the big classifiers are narrowed (``classifiers.build`` options): CI runs them in seconds."""


def classifier(profile: str, dataset: str, name: str) -> ThirdParty:
    """Chapter 3's recipe for classifier ``name`` (narrowed at ``smoke``, see :data:`NARROW`)."""
    options = NARROW.get(name, ()) if profile == "smoke" else ()
    return ThirdParty.at(profile, dataset, classifier=name, options=options)


@dataclasses.dataclass(frozen=True)
class _Pairs(Recipe):
    """What APE-GAN++ and its APE-GAN baseline share: mixed-ε FGSM pairs of ``source``, the generator."""

    source: ThirdParty = ThirdParty()
    n_pairs: int | None = 1_000
    n_val: int = 300
    pair_eps: tuple[float, ...] = apeganpp.EPS_MIX["mnist"]
    generator_widths: tuple[int, int] = (16, 32)
    generator_kernel: int = 4
    generator_activation: str = "leaky_relu"
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3

    PARTS = {"source": ThirdParty}
    PROFILES = {"smoke": dict(n_pairs=64, n_val=32, generator_widths=(8, 16), epochs=1), "quick": {},
                "full": _GAN_PAPER, "paper": _GAN_PAPER}
    DATASETS = {"cifar10_jpeg": {p: dict(pair_eps=apeganpp.EPS_MIX["cifar10"]) for p in PROFILE_NAMES}}

    def generator(self) -> nn.Module:
        """The purifier's architecture (the authors' code's APE-GAN variant at ``paper``)."""
        return apegan.APEGAN(data.info(self.dataset).channels, widths=self.generator_widths,
                             kernel=self.generator_kernel, activation=self.generator_activation)

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


@dataclasses.dataclass(frozen=True)
class APEGANPP(_Pairs):
    """APE-GAN++ (generator and critic) on the pairs, with ``third_party``'s loss; the best validation epoch
    through the third party is kept."""

    third_party: ThirdParty = ThirdParty()
    critic_width: int = 16
    loss_weights: tuple[float, ...] = apeganpp.PAPER_WEIGHTS
    gp_weight: float = apeganpp.GP_WEIGHT
    n_critic: int = 1

    NAME = "apeganpp"
    CODE = (apegan.APEGAN, apeganpp.Critic, apeganpp.gradient_penalty, apeganpp.critic_losses,
            apeganpp.generator_losses, apeganpp.apeganpp_step, apeganpp.purification_validator,
            apeganpp.train_apeganpp, apeganpp.mixed_fgsm_pairs, apegan.fgsm_pairs, attacks.fgsm, attack_mode,
            run, Loop, lr_factor, lr_scheduler)
    PARTS = {"source": ThirdParty, "third_party": ThirdParty}
    PROFILES = {p: {**knobs, "critic_width": {"smoke": 8, "quick": 16}.get(p, 64)}
                for p, knobs in _Pairs.PROFILES.items()}

    def network(self) -> nn.Module:
        info = data.info(self.dataset)
        return nn.ModuleDict(
            {"g": self.generator(), "d": apeganpp.Critic(info.channels, info.size, self.critic_width)}
        )

    def fit(self, model: nn.Module) -> dict[str, Any]:
        (x, x_adv, y), val = self.pairs()
        third_party, _ = build(self.third_party)
        return apeganpp.train_apeganpp(model["g"], model["d"], third_party, x, x_adv, y, epochs=self.epochs,
                                       batch_size=self.batch_size, lr=self.lr, weights=self.loss_weights,
                                       gp_weight=self.gp_weight, n_critic=self.n_critic, val=val,
                                       seed=self.seed)


@dataclasses.dataclass(frozen=True)
class APEGANBaseline(_Pairs):
    """APE-GAN (chapter 2's losses and discriminator) with APE-GAN++'s generator on the same pairs, validated
    through the source classifier: the baseline that differs from :class:`APEGANPP` in its losses only."""

    loss_weights: tuple[float, ...] = apegan.PAPER_WEIGHTS
    g_steps: int = 2

    NAME = "apegan-baseline"
    CODE = (apegan.APEGAN, apegan.Discriminator, apegan.generator_losses, apeganpp.apegan_step_with_norms,
            apeganpp.purification_validator, apeganpp.train_apegan_baseline, apeganpp.mixed_fgsm_pairs,
            apegan.fgsm_pairs, attacks.fgsm, run, Loop, lr_factor, lr_scheduler)

    def network(self) -> nn.Module:
        info = data.info(self.dataset)
        return nn.ModuleDict({"g": self.generator(), "d": apegan.Discriminator(info.channels, info.size)})

    def fit(self, model: nn.Module) -> dict[str, Any]:
        (x, x_adv, _), val = self.pairs()
        source, _ = build(self.source)
        return apeganpp.train_apegan_baseline(model["g"], model["d"], x, x_adv, epochs=self.epochs,
                                              batch_size=self.batch_size, lr=self.lr,
                                              weights=self.loss_weights, g_steps=self.g_steps, val=val,
                                              classifier=source, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class Finetuned(Recipe):
    """The paper's adversarial-training baseline (ART's ``AdversarialTrainer``): the trained ``start``
    classifier trained further on half clean, half FGSM loss, ε drawn per batch from ``eps_choices``."""

    start: ThirdParty = ThirdParty()
    n_train: int | None = 1_000
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    eps_choices: tuple[float, ...] = apeganpp.EPS_MIX["mnist"]

    NAME = "apeganpp-finetuned"
    CODE = (train.RandomEpsFGSM, attacks.fgsm)
    PARTS = {"start": ThirdParty}
    PROFILES = {"smoke": dict(n_train=128), "quick": {}, "full": dict(n_train=None, epochs=5),
                "paper": dict(n_train=None, epochs=5)}
    DATASETS = {"cifar10_jpeg": {p: dict(eps_choices=apeganpp.EPS_MIX["cifar10"]) for p in PROFILE_NAMES}}

    def code(self) -> tuple[Any, ...]:
        return self.start.code() + self.CODE

    def network(self) -> nn.Module:
        return self.start.network()

    def training_data(self) -> tuple[Tensor, ...]:
        x, y = self.start.training_data()
        return x[: self.n_train], y[: self.n_train]

    def fit(self, model: nn.Module) -> dict[str, Any]:
        start, _ = build(self.start)
        model.load_state_dict(start.state_dict())
        x, y = self.training_data()
        return train.fit(model, x, y, adversary=train.RandomEpsFGSM(self.eps_choices, seed=self.seed),
                         clean_weight=0.5, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                         seed=self.seed, desc=f"adversarial training {self.start.classifier}")
