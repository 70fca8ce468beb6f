"""GanDef (Liu, Khalil & Khreishah, 2019): adversarial training as a game between a classifier and a
discriminator that reads the classifier's logits.

The classifier ``C`` maps images to pre-softmax logits ``z``; the discriminator ``D`` sees only ``z`` and
guesses whether the input was clean (``s = 0``) or adversarial (``s = 1``). ``D`` minimises its binary
cross-entropy; ``C`` minimises cross-entropy on clean and PGD examples **minus** γ times ``D``'s loss, so it
is rewarded for logits that hide where the input came from (the paper's minimax game, section 3.1).

What the text says and this module does:

* ``D``: the paper gives no architecture. The authors' related ZK-GanDef code uses a small MLP on the logits,
  32 → 64 → 1; we use that, with ReLU, returning the logit of "adversarial" (its sigmoid is the probability).
* Classifier loss: ``(CE(z_clean) + CE(z_adv)) / 2 − γ·BCE_D`` (the ZK-GanDef form of the paper's
  ``E[−log q_C] − γ·E[−log q_D]``). **V1** (section 3.1) takes ``BCE_D`` over clean and adversarial logits;
  **V2** (section 3.3, the paper's standard) only over the adversarial ones, which the paper found far more
  stable. ``D`` itself is always trained on both.
* Algorithm 1 alternates discriminator and classifier updates; we do one of each per batch, on the same
  batch (the paper samples a fresh batch for each; sharing it halves the PGD cost). Both use Adam; ``D``'s
  rate is the authors' absolute 1e-3 (their code; the paper gives no rates). An earlier version of this book
  let ``D`` learn 10× faster than the classifier (1e-2), which cost GanDef several points of PGD accuracy.
* Training data: every batch's clean images plus PGD examples crafted on the fly against the current
  classifier (the paper's "PGD-1" examples).

**GanDef-Comb** (section 4.3) uses ``D`` as a rejector: an input whose ``D`` probability is at least a
threshold (0.5 in the paper) is rejected. The paper's metric counts a clean input as correct only if it is
classified correctly **and** not rejected, and an adversarial input if it is classified correctly **or**
rejected. It is not comparable with plain accuracy (a rejector that rejects everything scores 100% on
adversarial inputs), so it is always reported beside it (:func:`purify_lib.analysis.gandef.comb_summary`).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_images, check_labels, check_positive
from ..evaluate import accuracy
from ..runtime import model_device
from ..train import Adversary, Loop, Step, run

VARIANTS = ("v1", "v2")

__all__ = ["VARIANTS", "LogitDiscriminator", "GanDef", "classifier_loss", "gandef_step", "train_gandef",
           "METHODS"]


class LogitDiscriminator(nn.Module):
    """``D``: logits (N×K) → the logit of "this input was adversarial" (N); an MLP K → 32 → 64 → 1."""

    def __init__(self, num_classes: int = 10, hidden: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        self.num_classes = int(check_positive(num_classes, "num_classes"))
        self.net = nn.Sequential(nn.Linear(num_classes, hidden[0]), nn.ReLU(),
                                 nn.Linear(hidden[0], hidden[1]), nn.ReLU(), nn.Linear(hidden[1], 1))

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.num_classes:
            raise ValueError(f"z: expected N×{self.num_classes} logits, got shape {tuple(z.shape)}")
        return self.net(z).squeeze(1)


class GanDef(nn.Module):
    """Classifier and discriminator together; ``forward(x) -> (logits, discriminator logit)``.

    The tuple output is what a detector-aware attack needs (``attacks.pgd(..., loss_fn=...)``); the
    classifier alone is ``.classifier``.
    """

    def __init__(self, classifier: nn.Module, discriminator: LogitDiscriminator) -> None:
        super().__init__()
        self.classifier = classifier
        self.discriminator = discriminator

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.classifier(x)
        return logits, self.discriminator(logits)


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
    return variant


def discriminator_loss(d_clean: Tensor, d_adv: Tensor) -> Tensor:
    """``D``'s binary cross-entropy: clean logits are labelled 0, adversarial ones 1 (mean over both)."""
    scores_ = torch.cat([d_clean, d_adv])
    labels = torch.cat([torch.zeros_like(d_clean), torch.ones_like(d_adv)])
    return F.binary_cross_entropy_with_logits(scores_, labels)


def classifier_loss(z_clean: Tensor, z_adv: Tensor, y: Tensor, d_clean: Tensor, d_adv: Tensor, *,
                    gamma: float, variant: str = "v2") -> tuple[Tensor, Tensor]:
    """The classifier's loss ``(CE(z_clean) + CE(z_adv)) / 2 − γ·penalty`` and the penalty itself.

    The penalty is ``D``'s cross-entropy on both kinds of logits (``"v1"``) or on the adversarial logits
    only (``"v2"``: ``−log D(z_adv)``). Subtracting it rewards logits that fool ``D``.
    """
    _check_variant(variant)
    check_positive(gamma, "gamma", allow_zero=True)
    ce = (F.cross_entropy(z_clean, y) + F.cross_entropy(z_adv, y)) / 2
    if variant == "v1":
        penalty = discriminator_loss(d_clean, d_adv)
    else:
        penalty = F.binary_cross_entropy_with_logits(d_adv, torch.ones_like(d_adv))
    return ce - gamma * penalty, penalty


def gandef_step(classifier: nn.Module, discriminator: LogitDiscriminator, opt_c: torch.optim.Optimizer,
                opt_d: torch.optim.Optimizer, *, adversary: Adversary, gamma: float,
                variant: str = "v2") -> Step:
    """GanDef's step on a batch ``(x, y)``: PGD examples against the current classifier, then one
    discriminator update and one classifier update (algorithm 1), on the same batch.

    1. ``D`` learns to tell the classifier's logits on clean inputs (label 0) from those on adversarial inputs
       (label 1); the logits are detached, so this step cannot change the classifier.
    2. ``C`` minimises ``(CE(z_clean) + CE(z_adv)) / 2 − γ·penalty`` (:func:`classifier_loss`) against the
       updated ``D``, whose weights it does not step: it is rewarded for logits that fool ``D``.
    """
    def step(loop: Loop, batch: tuple[Tensor, ...]) -> dict[str, float]:
        x, y = batch
        x_adv = adversary(classifier, x, y).detach()
        with loop.autocast():
            z = classifier(torch.cat([x, x_adv])).float()
            z_clean, z_adv = z[:len(x)], z[len(x):]
            d_loss = discriminator_loss(discriminator(z_clean.detach()), discriminator(z_adv.detach()))
        loop.update(opt_d, d_loss)
        with loop.autocast():
            d_clean, d_adv = discriminator(z_clean).float(), discriminator(z_adv).float()
            loss, penalty = classifier_loss(z_clean, z_adv, y, d_clean, d_adv, gamma=gamma, variant=variant)
        loop.update(opt_c, loss)
        with torch.no_grad():
            disc_acc = ((d_clean < 0).float().mean() + (d_adv >= 0).float().mean()).item() / 2
        return {"loss": loss.item(), "penalty": penalty.item(), "disc_loss": d_loss.item(),
                "disc_acc": disc_acc, "train_acc": (z_clean.argmax(1) == y).float().mean().item(),
                "adv_acc": (z_adv.argmax(1) == y).float().mean().item()}

    return step


def train_gandef(
    classifier: nn.Module,
    discriminator: LogitDiscriminator,
    x: Tensor,
    y: Tensor,
    *,
    variant: str = "v2",
    gamma: float,
    epochs: int,
    batch_size: int,
    lr: float,
    adversary: Adversary,
    lr_schedule: str = "constant",
    val: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
    discriminator_lr: float = 1e-3,
    desc: str = "GanDef",
) -> dict[str, list[float]]:
    """Train classifier and discriminator in place with the GanDef game (:func:`gandef_step` on the training
    engine :func:`purify_lib.train.run`); leave both in eval mode.

    Args:
        classifier: returns logits; trained on the device it sits on.
        discriminator: a :class:`LogitDiscriminator` (moved to the classifier's device).
        x, y: training images and labels.
        variant: ``"v1"`` (penalty on all logits) or ``"v2"`` (adversarial logits only; the paper's standard).
        gamma: the trade-off γ (0 gives plain 50/50 adversarial training).
        epochs, batch_size, lr: the classifier's.
        discriminator_lr: the discriminator's Adam rate, absolute (the authors' code: 1e-3).
        lr_schedule: ``"constant"`` or ``"decay"``, for both players (:func:`purify_lib.train.lr_factor`).
        adversary: ``adversary(classifier, xb, yb) -> xb_adv``, called on every batch against the current
            classifier (as in :func:`purify_lib.train.fit`), e.g. ``functools.partial(attacks.pgd, eps=0.3,
            alpha=0.01, steps=40)`` or a :class:`purify_lib.train.WarmupPGD`.
        val: ``(x_val, y_val)``: clean classifier accuracy on it after each epoch (the paper's fig. 2 plots
            test accuracy per epoch; we never look at test data during training).
        seed: seeds shuffling, initial random starts and everything else random.

    Returns:
        Per-epoch float lists: ``loss`` (classifier), ``penalty`` (``D``'s cross-entropy seen by the
        classifier), ``disc_loss``, ``disc_acc`` (``D``'s accuracy on the training batches), ``train_acc`` and
        ``adv_acc`` (classifier on the clean and PGD batches), ``val_acc`` (empty without ``val``),
        ``seconds``.
    """
    _check_variant(variant)
    check_images(x)
    check_labels(y, len(x))
    if len(x) == 0:
        raise ValueError("x: expected at least one training image, got 0")
    check_positive(gamma, "gamma", allow_zero=True)
    check_positive(lr, "lr")
    check_positive(discriminator_lr, "discriminator_lr")
    if not callable(adversary):
        raise ValueError(f"adversary: expected a callable (model, x, y) -> x_adv, got {adversary!r}")
    if val is not None:
        check_images(val[0], "val[0]")
        check_labels(val[1], len(val[0]), "val[1]")

    discriminator.to(model_device(classifier))
    opt_c = torch.optim.Adam(classifier.parameters(), lr=lr)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=discriminator_lr)
    step = gandef_step(classifier, discriminator, opt_c, opt_d, adversary=adversary, gamma=gamma,
                       variant=variant)
    validate = None if val is None else (lambda: {"val_acc": accuracy(classifier, *val)})
    history = run(step, (x, y), epochs=epochs, batch_size=batch_size, modules=[classifier, discriminator],
                  optimizers=[opt_c, opt_d], lr_schedule=lr_schedule, seed=seed, validate=validate,
                  stateful=[adversary] if hasattr(adversary, "state_dict") else [], desc=f"{desc} {variant}")
    history.setdefault("val_acc", [])
    return history


METHODS = ("Vanilla", "Pure PGD", "Mix PGD", "Logit Pairing", "GanDef V1", "GanDef")
"""The methods of Table 2 (and GanDef V1 of its Fig. 2); their recipes: :mod:`purify_lib.recipes.gandef`."""

