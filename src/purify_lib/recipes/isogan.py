"""Chapter 6's IsoGAN: a GAN denoiser trained with repair, recovery, isomorphic and label losses.

:class:`IsoGAN` trains one generator with given loss weights on FGSM pairs (ε 0.3) of the classifier ``f1``;
:class:`Chosen` trains one per label weight of its grid and keeps the one chosen on validation pairs
(:func:`purify_lib.defenses.isogan.choose`: the most robust whose clean accuracy stays within ``tolerance`` of
the classifier's). The zoo's ``isogan`` is the chosen one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor, nn

from .. import attacks, data, evaluate
from ..attacks import attack_mode
from ..defenses import apegan, isogan
from ..profiles import PROFILE_NAMES
from ..train import Loop, lr_factor, lr_scheduler, run
from .base import Recipe, build, target_key
from .classifiers import Supervised


@dataclasses.dataclass(frozen=True)
class F1(Supervised):
    """The classifier IsoGAN's pairs attack and its label term reads (MNIST-CNN at ``quick``)."""

    classifier: str = "mnist_cnn"
    n_train: int | None = 5_000
    n_val: int = 0
    epochs: int = 2
    batch_size: int = 32

    PROFILES = {"smoke": dict(n_train=64, epochs=1), "quick": {},
                "full": dict(n_train=None, epochs=10, batch_size=128),
                "paper": dict(n_train=None, epochs=10, batch_size=128)}
    DATASETS = {"cifar10_jpeg": {p: dict(classifier="resnet18") for p in PROFILE_NAMES}}


@dataclasses.dataclass(frozen=True)
class IsoGAN(Recipe):
    """One IsoGAN generator (and discriminator) with the loss weights ``loss_weights``."""

    f1: F1 = F1()
    n_pairs: int | None = 3_000
    n_val: int = 1_000
    pair_eps: float = isogan.EPS_PAPER["grey"]
    loss_weights: tuple[tuple[str, float], ...] = tuple(isogan.DEFAULT_WEIGHTS.items())
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3

    NAME = "isogan"
    CODE = (apegan.APEGAN, apegan.Discriminator, isogan.check_weights, isogan.generator_losses,
            isogan.isogan_step, isogan.validation_scores, isogan.train_isogan, apegan.fgsm_pairs,
            attacks.fgsm, attack_mode, run, Loop, lr_factor, lr_scheduler)
    PARTS = {"f1": F1}
    PROFILES = {"smoke": dict(n_pairs=64, n_val=32), "quick": {},
                "full": dict(n_pairs=None, n_val=2_000, epochs=5, lr=2e-4),
                "paper": dict(n_pairs=None, n_val=2_000, epochs=5, lr=2e-4)}
    DATASETS = {"cifar10_jpeg": {p: dict(pair_eps=isogan.EPS_PAPER["rgb"]) for p in PROFILE_NAMES}}

    def with_label(self, weight: float) -> IsoGAN:
        """This recipe with the label term's weight set to ``weight``."""
        return dataclasses.replace(
            self, loss_weights=tuple({**dict(self.loss_weights), "label": weight}.items())
        )

    def network(self) -> nn.Module:
        info = data.info(self.dataset)
        return nn.ModuleDict(
            {"g": apegan.APEGAN(info.channels), "d": apegan.Discriminator(info.channels, info.size)}
        )

    def training_data(self) -> tuple[Tensor, ...]:
        x, y = data.load(self.dataset, "train", n=self.f1.n_train)
        return x[: self.n_pairs], y[: self.n_pairs]

    def pairs(self) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
        """Training and validation triples ``(x, x_adv, y)``, FGSM at ``pair_eps`` against ``f1``."""
        f1, _ = build(self.f1)
        key = target_key(self.f1)
        x, y = self.training_data()
        xv, yv = data.load(self.dataset, "val", n=self.n_val)
        return ((x, apegan.fgsm_pairs(f1, x, y, self.pair_eps, key=key | {"split": "train"}), y),
                (xv, apegan.fgsm_pairs(f1, xv, yv, self.pair_eps, key=key | {"split": "val"}), yv))

    def fit(self, model: nn.Module) -> dict[str, Any]:
        train_pairs, val = self.pairs()
        f1, _ = build(self.f1)
        return isogan.train_isogan(model["g"], model["d"], f1, *train_pairs, epochs=self.epochs,
                                   batch_size=self.batch_size, lr=self.lr, weights=dict(self.loss_weights),
                                   val=val, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class Chosen(Recipe):
    """The IsoGAN of ``base`` with the label weight of ``label_grid`` chosen on validation pairs."""

    base: IsoGAN = IsoGAN()
    label_grid: tuple[float, ...] = (0.0, 0.1, 0.5)
    tolerance: float = 0.01

    NAME = "isogan-chosen"
    CODE = (isogan.choose,)
    PARTS = {"base": IsoGAN}
    PROFILES = {"smoke": dict(label_grid=(0.0, 0.5)), "quick": {},
                "full": dict(label_grid=(0.0, 0.05, 0.1, 0.5)),
                "paper": dict(label_grid=(0.0, 0.05, 0.1, 0.5))}

    def network(self) -> nn.Module:
        return self.base.network()

    def training_data(self) -> tuple[Tensor, ...]:
        return self.base.training_data()

    def candidates(self) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
        """Every candidate of the grid, trained (``"label=w"`` → model and history)."""
        return {f"label={w:g}": build(self.base.with_label(w)) for w in self.label_grid}

    def fit(self, model: nn.Module) -> dict[str, Any]:
        found = self.candidates()
        scores = {k: {"clean_acc": h["val_clean_acc"][-1], "adv_acc": h["val_adv_acc"][-1]}
                  for k, (_, h) in found.items()}
        f1, _ = build(self.base.f1)
        chosen = isogan.choose(scores,
                               evaluate.accuracy(f1, *data.load(self.dataset, "val", n=self.base.n_val)),
                               tolerance=self.tolerance)
        model.load_state_dict(found[chosen][0].state_dict())
        return {**found[chosen][1], "chosen": chosen}


@dataclasses.dataclass(frozen=True)
class APEGANOnPairs(Recipe):
    """Chapter 6's baseline: APE-GAN (chapter 2's losses) trained on IsoGAN's pairs with IsoGAN's epochs,
    batch and learning rate."""

    pairs_of: IsoGAN = IsoGAN()
    loss_weights: tuple[float, float, float] = apegan.PAPER_WEIGHTS
    g_steps: int = 2

    NAME = "isogan-apegan"
    CODE = (apegan.APEGAN, apegan.Discriminator, apegan.total_variation, apegan.generator_losses,
            apegan.apegan_step, apegan.train_apegan, apegan.fgsm_pairs, attacks.fgsm, run, Loop, lr_factor,
            lr_scheduler)
    PARTS = {"pairs_of": IsoGAN}

    def network(self) -> nn.Module:
        return self.pairs_of.network()

    def training_data(self) -> tuple[Tensor, ...]:
        return self.pairs_of.training_data()

    def fit(self, model: nn.Module) -> dict[str, Any]:
        (x, x_adv, _), _ = self.pairs_of.pairs()
        base = self.pairs_of
        return apegan.train_apegan(model["g"], model["d"], x, x_adv, epochs=base.epochs,
                                   batch_size=base.batch_size, lr=base.lr, weights=self.loss_weights,
                                   g_steps=self.g_steps, seed=self.seed)
