"""Chapter 1's classifier, and the plain supervised recipe every chapter's classifiers follow.

:class:`Supervised` trains a registry classifier (:mod:`purify_lib.classifiers`) with
:func:`purify_lib.train.fit` on the first ``n_train`` training images (``None``: the whole training split),
recording the accuracy on ``n_val`` validation images after every epoch (0: no validation). :class:`LeNet` is
chapter 1's MNIST LeNet, the classifier behind every purifier of the leaderboard and chapter 5's "Vanilla".
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor, nn

from .. import classifiers, data, train
from .base import Recipe


@dataclasses.dataclass(frozen=True)
class Classifier(Recipe):
    """What every recipe that trains a registry classifier shares: the network, the training images
    (the first ``n_train``; ``None``: the whole training split), the validation images and the schedule."""

    classifier: str = "lenet"
    n_train: int | None = 6_000
    n_val: int = 2_000
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"

    def code(self) -> tuple[Any, ...]:
        return (*self.CODE, classifiers.REGISTRY[self.classifier])

    def network(self) -> nn.Module:
        return classifiers.build(self.classifier, self.dataset)

    def training_data(self) -> tuple[Tensor, ...]:
        return data.load(self.dataset, "train", n=self.n_train)

    def validation_data(self) -> tuple[Tensor, Tensor] | None:
        """The ``n_val`` validation images scored after every epoch (``None`` for 0)."""
        return data.load(self.dataset, "val", n=self.n_val) if self.n_val else None


@dataclasses.dataclass(frozen=True)
class Supervised(Classifier):
    """A registry classifier trained on clean images with :func:`purify_lib.train.fit`."""

    optimizer: str = "adam"
    weight_decay: float = 0.0
    options: tuple[tuple[str, Any], ...] = ()  # classifiers.build options, e.g. (("width", 4),)

    NAME = "classifier"
    CODE = (classifiers.build, train.run, train.Loop, train.lr_factor, train.lr_scheduler, train.fit,
            train.supervised_step)

    def network(self) -> nn.Module:
        return classifiers.build(self.classifier, self.dataset, **dict(self.options))

    def fit(self, model: nn.Module) -> dict[str, Any]:
        x, y = self.training_data()
        return train.fit(model, x, y, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                         optimizer=self.optimizer, weight_decay=self.weight_decay,
                         lr_schedule=self.lr_schedule, val=self.validation_data(), seed=self.seed,
                         desc=f"{self.classifier} ({self.dataset})")


@dataclasses.dataclass(frozen=True)
class LeNet(Supervised):
    """Chapter 1's LeNet (the paper-standard MNIST LeNet of GanDef's table 3), Adam 1e-3, batch 128."""

    PROFILES = {"smoke": dict(n_train=512, n_val=128, epochs=1, batch_size=64), "quick": {},
                "full": dict(n_train=None, n_val=5_000, epochs=15),
                "paper": dict(n_train=None, n_val=5_000, epochs=15)}
