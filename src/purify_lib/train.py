"""One supervised training loop, and the classifier-side baselines the papers compare against.

:func:`fit` trains any classifier in place. Its options give the baselines:

- plain training (the default);
- adversarial training (Goodfellow et al. 2015; Madry et al. 2018): ``adversary`` crafts examples on the fly
  against the current model, ``clean_weight`` is the share of the loss on clean inputs (0 → Madry's
  "pure PGD", 0.5 → "mix PGD" and Goodfellow's FGSM adversarial training);
- adversarial logit pairing (Kannan et al. 2018): ``logit_pairing`` > 0;
- distillation on soft labels: ``soft_targets`` and ``temperature``, used by :func:`defensive_distillation`.

:func:`predict` is the one place that runs a model over a dataset; :func:`accuracy` builds on it.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from purify_lib.checks import check_images, check_labels, check_positive
from purify_lib.profiles import seed_everything

Adversary = Callable[[nn.Module, Tensor, Tensor], Tensor]
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "decay")
DECAY_START = 0.4


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """The model's logits for every image in ``x``: batched, without gradients, in eval mode.

    Batches go to the model's device; the logits come back on ``x``'s device, in float32. The model's
    train/eval mode is restored afterwards.
    """
    check_images(x)
    check_positive(batch_size, "batch_size")
    device, was_training = model_device(model), model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [model(x[i:i + batch_size].to(device)).float().to(x.device) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0, device=x.device)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """The fraction of ``x`` that ``model`` classifies as ``y`` (in [0, 1])."""
    check_images(x)
    check_labels(y, len(x))
    if len(x) == 0:
        raise ValueError("x: expected at least one image, got 0")
    return (predict(model, x, batch_size).argmax(1).cpu() == y.cpu()).float().mean().item()


def lr_factor(schedule: str, progress: float) -> float:
    """The learning rate's multiplier after a fraction ``progress`` ∈ [0, 1] of all optimiser steps.

    ``"constant"``: 1 throughout. ``"decay"``: 1 for the first 40% of the steps, then linear down to 0 at the
    end. A short GAN game such as GanDef's, whose players otherwise keep oscillating, ends far better with
    the decay (chapter 5).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule: expected one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
    if schedule == "constant" or progress <= DECAY_START:
        return 1.0
    return max(0.0, (1.0 - progress) / (1.0 - DECAY_START))


def lr_scheduler(optimizers: list[torch.optim.Optimizer], schedule: str,
                 total_steps: int) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """One ``LambdaLR`` per optimiser following :func:`lr_factor` over ``total_steps`` steps (call ``.step()``
    after each optimiser step)."""
    lr_factor(schedule, 0.0)  # rejects an unknown schedule now, not at the first step
    return [torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(schedule, step / total_steps))
            for opt in optimizers]


def _mixed_precision(device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """Mixed precision on CUDA only: bf16 where supported (no scaler needed), else fp16 with a scaler."""
    if device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _check_soft_targets(t: Tensor, n: int) -> None:
    if not isinstance(t, Tensor) or t.ndim != 2 or t.shape[0] != n or not t.is_floating_point():
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"soft_targets: expected a float N×C tensor of probabilities with N = {n}, got {got}")
    if (t < 0).any() or not torch.allclose(t.sum(1), torch.ones(n, dtype=t.dtype, device=t.device), atol=1e-3):
        raise ValueError("soft_targets: expected non-negative rows that sum to 1")


def fit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    lr_schedule: str = "constant",
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    val: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
    adversary: Adversary | None = None,
    clean_weight: float = 0.0,
    logit_pairing: float = 0.0,
    soft_targets: Tensor | None = None,
    temperature: float = 1.0,
    desc: str = "train",
) -> dict[str, list[float]]:
    """Train ``model`` in place with cross-entropy on ``(x, y)``; leave it in eval mode.

    Training runs on the model's device (move it first, e.g. ``build`` puts it on ``get_device()``); data
    batches are moved there. On CUDA the forward passes use mixed precision (bf16, else fp16 with loss
    scaling); adversarial examples are always crafted in full precision.

    Args:
        model: the classifier (returns logits).
        x, y: training images (N×C×H×W in [0, 1]) and labels.
        epochs, batch_size, lr: the usual.
        lr_schedule: ``"constant"`` or ``"decay"`` (see :func:`lr_factor`).
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: L2 penalty handed to the optimizer.
        val: ``(x_val, y_val)``: accuracy on it is recorded after every epoch (select models on this, never on
            the test split).
        seed: seeds shuffling (a ``torch.Generator``) and the global RNGs (dropout, attack random starts), so
            two runs with the same seed, data and initial weights are identical on the CPU.
        adversary: ``adversary(model, xb, yb) -> xb_adv``, e.g.
            ``functools.partial(attacks.pgd, eps=0.3, alpha=0.01, steps=40)``: crafted each batch against the
            current model, in eval mode (dropout off, batch-norm statistics frozen).
        clean_weight: with an adversary, the share of the loss on clean inputs: loss =
            clean_weight·CE(x) + (1 − clean_weight)·CE(x_adv).
        logit_pairing: adversarial logit pairing weight λ: adds λ·mean over the batch of
            ‖logits(x) − logits(x_adv)‖². Needs an adversary; Kannan et al. used ``clean_weight=0.5``.
        soft_targets: N×C probabilities to train on instead of ``y`` (distillation); ``y`` is still used for
            the reported accuracy and by the adversary.
        temperature: T: the loss is CE(softmax(logits / T), targets). At test time the logits are used as they
            are (T = 1).
        desc: the progress bar's label.

    Returns:
        History of float lists, one entry per epoch: ``train_loss``, ``train_acc`` (on the clean batches
        when the loss sees them, else on the adversarial ones), ``adv_acc`` (adversarial batches; empty
        without an adversary), ``val_acc`` (empty without ``val``), ``seconds``.
    """
    check_images(x)
    check_labels(y, len(x))
    if len(x) == 0:
        raise ValueError("x: expected at least one training image, got 0")
    epochs, batch_size = int(check_positive(epochs, "epochs")), int(check_positive(batch_size, "batch_size"))
    check_positive(lr, "lr")
    check_positive(weight_decay, "weight_decay", allow_zero=True)
    check_positive(temperature, "temperature")
    check_positive(logit_pairing, "logit_pairing", allow_zero=True)
    if not 0.0 <= clean_weight <= 1.0:
        raise ValueError(f"clean_weight: expected a fraction in [0, 1], got {clean_weight!r}")
    if adversary is None and (clean_weight or logit_pairing):
        raise ValueError("clean_weight and logit_pairing need an adversary")
    if soft_targets is not None:
        _check_soft_targets(soft_targets, len(x))
    if val is not None:
        check_images(val[0], "val[0]")
        check_labels(val[1], len(val[0]), "val[1]")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")

    device = model_device(model)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    (scheduler,) = lr_scheduler([opt], lr_schedule, epochs * -(-len(x) // batch_size))
    amp_dtype, scaler = _mixed_precision(device)
    generator = seed_everything(seed)
    targets = soft_targets if soft_targets is not None else y
    need_clean = adversary is None or clean_weight > 0 or logit_pairing > 0
    history: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "adv_acc": [], "val_acc": [],
                                       "seconds": []}

    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(x), generator=generator)
        total_loss = total_correct = total_adv_correct = 0.0
        seen = 0
        bar = tqdm(range(0, len(x), batch_size), desc=f"{desc} {epoch + 1}/{epochs}", leave=False)
        for i in bar:
            idx = order[i:i + batch_size]
            xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
            tb = targets[idx].to(device, non_blocking=True)
            xb_adv = None
            if adversary is not None:
                model.eval()
                xb_adv = adversary(model, xb, yb).detach()
            model.train()
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = torch.zeros((), device=device)
                logits = logits_adv = None
                if need_clean:
                    logits = model(xb).float()
                    loss = loss + (1.0 if adversary is None else clean_weight) * F.cross_entropy(logits / temperature, tb)
                if xb_adv is not None:
                    logits_adv = model(xb_adv).float()
                    loss = loss + (1.0 - clean_weight) * F.cross_entropy(logits_adv / temperature, tb)
                    if logit_pairing > 0:
                        loss = loss + logit_pairing * (logits - logits_adv).pow(2).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            scheduler.step()
            n = len(idx)
            seen += n
            total_loss += loss.item() * n
            shown = logits if logits is not None else logits_adv
            total_correct += (shown.argmax(1) == yb).sum().item()
            if logits_adv is not None:
                total_adv_correct += (logits_adv.argmax(1) == yb).sum().item()
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{total_correct / seen:.3f}")
        model.eval()
        history["train_loss"].append(total_loss / seen)
        history["train_acc"].append(total_correct / seen)
        if adversary is not None:
            history["adv_acc"].append(total_adv_correct / seen)
        if val is not None:
            history["val_acc"].append(accuracy(model, *val))
        history["seconds"].append(time.perf_counter() - start)
    model.eval()
    return history


def defensive_distillation(
    student: nn.Module,
    teacher: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    temperature: float,
    epochs: int,
    batch_size: int,
    lr: float,
    val: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
    desc: str = "distillation",
) -> dict[str, dict[str, list[float]]]:
    """Defensive distillation (Papernot et al. 2016), in place on ``student``.

    1. Train ``teacher`` on the hard labels at temperature T (softmax(logits / T)).
    2. Label the training set with the teacher's softmax(logits / T).
    3. Train ``student`` on those soft labels, again at temperature T.

    At test time the student's logits are used as they are, i.e. at temperature 1. Its logits were trained
    to be T times larger than needed, so its softmax saturates: on most inputs the loss gradient underflows
    to zero and gradient-based attacks (FGSM, PGD on cross-entropy) find nothing to follow. That is gradient
    masking, not robustness: C&W's logit-based loss (Carlini & Wagner 2017) or dividing the logits by T
    again breaks it.

    The design is ``fit``-like (train in place, return a history) so that it drops into
    :func:`purify_lib.cache.load_or_train`; the teacher is a throw-away::

        student, history = cache.load_or_train(
            build("lenet", "mnist"),
            lambda s: defensive_distillation(s, build("lenet", "mnist"), x, y, temperature=100, ...),
            key=dict(...))

    Returns:
        ``{"teacher": history, "student": history}`` (see :func:`fit`). Both models are left in eval mode.
    """
    check_positive(temperature, "temperature")
    common = dict(epochs=epochs, batch_size=batch_size, lr=lr, val=val, temperature=temperature)
    teacher_history = fit(teacher, x, y, seed=seed, desc=f"{desc}: teacher", **common)
    soft = torch.softmax(predict(teacher, x) / temperature, dim=1)
    student_history = fit(student, x, y, seed=seed + 1, soft_targets=soft, desc=f"{desc}: student", **common)
    return {"teacher": teacher_history, "student": student_history}
