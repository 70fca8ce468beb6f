"""Chapter 5's adversarially trained LeNets: Pure PGD, Mix PGD, logit pairing and GanDef (V1 and V2).

Every method trains the same network on the same images with the same optimiser and schedule; the training
adversary is PGD (:class:`purify_lib.train.WarmupPGD`) crafted on the fly against the current model, its ε and
step ramped up over the first ``warmup_epochs`` epochs. The methods differ in their loss only:

| method | loss |
|---|---|
| Pure PGD | CE on the PGD examples (Madry et al.) |
| Mix PGD | ½ CE clean + ½ CE PGD |
| Logit Pairing | Mix PGD + λ‖z(x) − z(x_adv)‖² (Kannan et al.) |
| GanDef, GanDef V1 | Mix PGD − γ × the logit discriminator's loss (:mod:`purify_lib.defenses.gandef`) |

Chapter 5's "Vanilla" is chapter 1's :class:`~purify_lib.recipes.classifiers.LeNet`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from .. import attacks, classifiers, data, train
from ..defenses import gandef
from .classifiers import Classifier

METHODS = ("Pure PGD", "Mix PGD", "Logit Pairing", "GanDef V1", "GanDef")
LOSSES = {"Pure PGD": dict(clean_weight=0.0), "Mix PGD": dict(clean_weight=0.5),
          "Logit Pairing": dict(clean_weight=0.5)}


CONVERGED = {"smoke": dict(train_eps=0.1, train_alpha=0.067), "quick": dict(train_eps=0.1, train_alpha=0.067),
             "full": dict(train_eps=0.1, train_alpha=0.1 / 3), "paper": dict(train_eps=0.1)}
"""Chapter 5's converged regime: the same recipe trained at ε = 0.1 (the step scaled with ε)."""


@dataclasses.dataclass(frozen=True)
class Method(Classifier):
    """One of :data:`METHODS` on a LeNet (``classifier``) with a PGD training adversary."""

    batch_size: int = 64
    lr_schedule: str = "decay"
    method: str = "Pure PGD"
    train_eps: float = 0.3
    train_alpha: float = 0.2
    train_steps: int = 2
    warmup_epochs: float = 0.4  # ε and step ramp up over this many epochs' batches
    gamma: float = 0.5  # GanDef's trade-off
    discriminator_lr: float = 1e-3
    logit_pairing: float = 0.5  # Logit Pairing's λ

    NAME = "gandef-method"
    CODE = (classifiers.build, train.run, train.Loop, train.lr_factor, train.lr_scheduler, train.fit,
            train.supervised_step, train.WarmupPGD, attacks.pgd, attacks._random_start,
            gandef.LogitDiscriminator, gandef.GanDef, gandef.discriminator_loss, gandef.classifier_loss,
            gandef.gandef_step, gandef.train_gandef)
    PROFILES = {
        "smoke": dict(n_train=256, n_val=128, epochs=1),
        "quick": {},
        # PGD-7, step ε/3 from a random start, ε ramped over two epochs: a probe of this recipe on the
        # 2-core CPU kept 0.886 under APGD-CE + APGD-T at ε 0.3 after 11 epochs (25 min)
        "full": dict(n_train=None, n_val=5_000, epochs=12, batch_size=128, train_alpha=0.1, train_steps=7,
                     warmup_epochs=2.0),
        "paper": dict(n_train=None, n_val=5_000, epochs=20, batch_size=128, train_alpha=0.01, train_steps=40),
    }
    WHY = {
        "train_steps": "PGD-40 training costs about 15 ms an image on the 2-core CPU (20 epochs: 4.7 hours a "
                       "model); 7 steps are about 5× cheaper. The evaluation attacks keep their full "
                       "strength",
        "train_alpha": "with 7 steps the step is ε/3, so that the steps cross the ε-ball from a random "
                       "start",
        "epochs": "12 epochs of PGD-7 fit the 90 CPU-minutes a full-profile model gets",
        "warmup_epochs": "the paper gives no ramp (the `paper` profile keeps the book's 0.4 epochs); ε and "
                         "the step ramp up over the first 2 of 12 epochs, as in the CPU probe this recipe "
                         "was chosen from",
    }

    DATASETS = {
        "cifar10_jpeg": {
            p: dict(classifier="allcnn", train_eps=8 / 255, train_alpha=2 / 255, train_steps=steps,
                    logit_pairing=0.01, **({"n_train": 64, "n_val": 64} if p == "smoke" else {}))
            for p, steps in (("smoke", 1), ("quick", 7), ("full", 7), ("paper", 7))
        }
    }  # at smoke one batch of the allCNN per method: it proves the CIFAR-10 path runs (CI's time)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {self.method!r}")

    def network(self) -> nn.Module:
        model = super().network()
        if self.method.startswith("GanDef"):
            return gandef.GanDef(model, gandef.LogitDiscriminator(data.info(self.dataset).num_classes))
        return model

    def adversary(self, n: int) -> train.WarmupPGD:
        """A fresh training adversary for ``n`` training images."""
        warmup = round(self.warmup_epochs * -(-n // self.batch_size))
        return train.WarmupPGD(
            eps=self.train_eps, alpha=self.train_alpha, steps=self.train_steps, warmup=warmup
        )

    def fit(self, model: nn.Module) -> dict[str, Any]:
        x, y = self.training_data()
        common = dict(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                      lr_schedule=self.lr_schedule, seed=self.seed,
                      val=self.validation_data(), adversary=self.adversary(len(y)),
                      desc=self.method)
        if isinstance(model, gandef.GanDef):
            variant = "v1" if self.method == "GanDef V1" else "v2"
            return gandef.train_gandef(model.classifier, model.discriminator, x, y, variant=variant,
                                       gamma=self.gamma, discriminator_lr=self.discriminator_lr, **common)
        pairing = self.logit_pairing if self.method == "Logit Pairing" else 0.0
        return train.fit(model, x, y, logit_pairing=pairing, **LOSSES[self.method], **common)
