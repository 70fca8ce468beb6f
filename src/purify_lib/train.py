"""Training: one engine every method runs on, the supervised step, and the training adversaries.

:func:`run` is the loop (airbench is the model: the settings up front, one loop to read top to bottom). It
owns what every training run repeats: batching, shuffling from a seed, moving batches to the device, the
progress bar, the learning-rate schedule, mixed precision where the device supports it, per-epoch history and
timing, and an optional per-epoch validation hook. A method writes only its *step*: what happens to one batch
(the losses and the optimiser updates). :func:`fit` is the supervised step; APE-GAN's and GanDef's steps live
in their ``defenses/`` modules.

:func:`fit`'s options give the classifier baselines the papers compare against:

- plain training (the default);
- adversarial training (Goodfellow et al. 2015; Madry et al. 2018): ``adversary`` crafts examples on the fly
  against the current model, ``clean_weight`` is the share of the loss on clean inputs (0 → Madry's
  "pure PGD", 0.5 → "mix PGD" and Goodfellow's FGSM adversarial training); :class:`WarmupPGD` and
  :class:`RandomEpsFGSM` are two such adversaries;
- adversarial logit pairing (Kannan et al. 2018): ``logit_pairing`` > 0;
- distillation on soft labels: ``soft_targets`` and ``temperature``, used by :func:`defensive_distillation`.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from purify_lib.attacks import fgsm, pgd
from purify_lib.cache import atomic_save
from purify_lib.checks import check_images, check_labels, check_positive
from purify_lib.evaluate import accuracy, predict
from purify_lib.runtime import model_device, progress, seed_everything

Adversary = Callable[[nn.Module, Tensor, Tensor], Tensor]
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "decay")
DECAY_START = 0.4


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


class Loop:
    """What a step needs from the engine: the device, mixed precision and the optimiser update.

    A step computes its losses inside ``with loop.autocast():`` and applies each with
    ``loop.update(optimizer, loss)``. ``epoch`` and ``step`` count from 0; ``total_steps`` is the run's
    length.
    """

    def __init__(self, device: torch.device, total_steps: int) -> None:
        self.device, self.total_steps = device, total_steps
        self.epoch = self.step = 0
        self.amp_dtype, self.scaler = _mixed_precision(device)

    def autocast(self) -> torch.autocast:
        """Mixed precision on CUDA (bf16, else fp16), a no-op elsewhere."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def update(self, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
        """Zero the gradients, back-propagate ``loss`` (scaled under fp16) and step ``optimizer``."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


_CHECKPOINTS: list[dict[str, Any]] = []  # the open :func:`checkpoints` contexts, innermost last


@contextmanager
def checkpoints(prefix: str | Path) -> Iterator[None]:
    """Resumable training: every :func:`run` inside saves its state after each epoch to
    ``<prefix>.<k>.ckpt`` (``k`` counts the runs inside, so a method that trains twice, such as
    :func:`defensive_distillation`, has one file per run).

    Run the same code again after a kill and each run resumes after its last finished epoch (a finished run
    restores its end state at once), with the weights, optimiser and schedule states, the shuffling and global
    random streams and the adversary's counters it had: on the CPU the result is bit-identical to an
    uninterrupted run. The files are removed when the block ends without an error.
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    _CHECKPOINTS.append({"prefix": prefix, "count": 0})
    try:
        yield
    finally:
        state = _CHECKPOINTS.pop()
    for k in range(state["count"]):
        _checkpoint_path(prefix, k).unlink(missing_ok=True)


def _checkpoint_path(prefix: Path, k: int) -> Path:
    return prefix.with_name(f"{prefix.name}.{k}.ckpt")


def _next_checkpoint() -> Path | None:
    if not _CHECKPOINTS:
        return None
    state = _CHECKPOINTS[-1]
    state["count"] += 1
    return _checkpoint_path(state["prefix"], state["count"] - 1)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_save(state, path)


Step = Callable[[Loop, tuple[Tensor, ...]], Mapping[str, float]]
"""``step(loop, batch) -> metrics``: one batch of training; ``batch`` holds the rows of every tensor given to
:func:`run`, on the device. Returns per-batch means (floats), averaged over each epoch by the engine."""


def run(
    step: Step,
    tensors: Sequence[Tensor],
    *,
    epochs: int,
    batch_size: int,
    modules: Sequence[nn.Module],
    optimizers: Sequence[torch.optim.Optimizer] = (),
    lr_schedule: str = "constant",
    seed: int = 0,
    validate: Callable[[], Mapping[str, float]] | None = None,
    keep_best: str | None = None,
    step_history: bool = False,
    stateful: Sequence[Any] = (),
    desc: str = "train",
) -> dict[str, Any]:
    """The training engine: ``epochs`` passes over ``tensors`` in seeded random batches, ``step`` on each.

    Args:
        step: the method's step (see :data:`Step`).
        tensors: equally long tensors (images, labels, pairs ...) batched together; they stay where they are
            and each batch is moved to the device of ``modules[0]``.
        epochs, batch_size: the usual.
        modules: the trained networks: in train mode during an epoch, eval mode for validation and at the end.
        optimizers: stepped by ``step``; the engine drives their learning-rate schedule.
        lr_schedule: ``"constant"`` or ``"decay"`` (see :func:`lr_factor`), applied after every step.
        seed: seeds shuffling (a ``torch.Generator``) and the global RNGs (initial random starts, dropout), so
            two runs with the same seed, data and initial weights are bit-identical on the CPU.
        validate: called after every epoch in eval mode; returns named numbers to record (e.g. ``val_acc``).
            Select models on a validation split, never on the test split.
        keep_best: the name of a number ``validate`` returns: at the end the modules are restored to the epoch
            where it was highest (checkpoint selection on validation).
        step_history: also record every step's metrics, under ``history["steps"]``.
        stateful: objects the step uses that carry state across batches (an adversary that counts its calls):
            saved and restored with their ``state_dict``/``load_state_dict`` inside :func:`checkpoints`.
        desc: the progress bar's label.

    Returns:
        ``history``: one list entry per epoch for each metric ``step`` returns and each number ``validate``
        returns, ``seconds`` per epoch, ``best_epoch`` (1-based, with ``keep_best``) and ``steps`` (with
        ``step_history``: one list entry per step).
    """
    if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
        raise ValueError("tensors: expected one or more tensors of equal length")
    if len(tensors[0]) == 0:
        raise ValueError("tensors: expected at least one training example, got 0")
    epochs, batch_size = int(check_positive(epochs, "epochs")), int(check_positive(batch_size, "batch_size"))
    if not modules:
        raise ValueError("modules: expected the networks being trained")
    if keep_best is not None and validate is None:
        raise ValueError("keep_best needs a validate hook")
    n = len(tensors[0])
    loop = Loop(model_device(modules[0]), epochs * -(-n // batch_size))
    schedulers = lr_scheduler(list(optimizers), lr_schedule, loop.total_steps)
    generator = seed_everything(seed)
    history: dict[str, Any] = {"seconds": []}
    steps: dict[str, list[float]] = {}
    best, best_state = -math.inf, None
    checkpoint, first = _next_checkpoint(), 0
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        for module, state in zip(modules, saved["modules"]):
            module.load_state_dict(state)
        for obj, state in zip([*optimizers, *schedulers, *stateful], saved["objects"]):
            obj.load_state_dict(state)
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["rng"])
        history, steps = saved["history"], saved["steps"]
        best, best_state = saved["best"], saved["best_state"]
        first = saved["epoch"]
        loop.step = first * -(-n // batch_size)

    for epoch in range(first, epochs):
        loop.epoch, start = epoch, time.perf_counter()
        for module in modules:
            module.train()
        sums: dict[str, float] = {}
        seen = 0
        bar = progress(torch.randperm(n, generator=generator).split(batch_size),
                   desc=f"{desc} {epoch + 1}/{epochs}", leave=False)
        for idx in bar:
            batch = tuple(t[idx].to(loop.device, non_blocking=True) for t in tensors)
            metrics = step(loop, batch)
            for scheduler in schedulers:
                scheduler.step()
            loop.step += 1
            seen += len(idx)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
                if step_history:
                    steps.setdefault(k, []).append(float(v))
            bar.set_postfix({k: f"{v / seen:.3f}" for k, v in list(sums.items())[:2]})
        for module in modules:
            module.eval()
        for k, v in sums.items():
            history.setdefault(k, []).append(v / seen)
        if validate is not None:
            for k, v in validate().items():
                history.setdefault(k, []).append(float(v))
            if keep_best is not None and history[keep_best][-1] > best:
                best, history["best_epoch"] = history[keep_best][-1], epoch + 1
                best_state = [copy.deepcopy(m.state_dict()) for m in modules]
        history["seconds"].append(time.perf_counter() - start)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {
                "epoch": epoch + 1, "modules": [m.state_dict() for m in modules],
                "objects": [o.state_dict() for o in [*optimizers, *schedulers, *stateful]],
                "generator": generator.get_state(), "rng": torch.get_rng_state(), "history": history,
                "steps": steps, "best": best, "best_state": best_state})
    if best_state is not None:
        for module, state in zip(modules, best_state):
            module.load_state_dict(state)
    if step_history:
        history["steps"] = steps
    return history


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
        raise ValueError(f"soft_targets: expected a float N×C tensor of probabilities with N = {n}, "
                         f"got {got}")
    if (t < 0).any() or not torch.allclose(t.sum(1), torch.ones(n, dtype=t.dtype, device=t.device),
                                           atol=1e-3):
        raise ValueError("soft_targets: expected non-negative rows that sum to 1")


def supervised_step(model: nn.Module, optimizer: torch.optim.Optimizer, *, adversary: Adversary | None = None,
                    clean_weight: float = 0.0, logit_pairing: float = 0.0, temperature: float = 1.0) -> Step:
    """:func:`fit`'s step on a batch ``(x, y, targets)``: cross-entropy on clean and/or adversarial inputs.

    loss = w·CE(x) + (1 − w)·CE(x_adv) [+ λ·‖logits(x) − logits(x_adv)‖²], with ``w = clean_weight``
    (1 without an adversary) and every CE taken on ``logits / temperature`` against ``targets`` (labels or
    soft labels).
    """
    need_clean = adversary is None or clean_weight > 0 or logit_pairing > 0

    def step(loop: Loop, batch: tuple[Tensor, ...]) -> dict[str, float]:
        x, y, targets = batch
        x_adv = None
        if adversary is not None:
            model.eval()  # craft against the current model with dropout off and batch-norm statistics frozen
            x_adv = adversary(model, x, y).detach()
            model.train()
        with loop.autocast():
            loss = torch.zeros((), device=loop.device)
            logits = logits_adv = None
            if need_clean:
                logits = model(x).float()
                weight = 1.0 if adversary is None else clean_weight
                loss = loss + weight * F.cross_entropy(logits / temperature, targets)
            if x_adv is not None:
                logits_adv = model(x_adv).float()
                loss = loss + (1.0 - clean_weight) * F.cross_entropy(logits_adv / temperature, targets)
                if logit_pairing > 0:
                    loss = loss + logit_pairing * (logits - logits_adv).pow(2).sum(1).mean()
        loop.update(optimizer, loss)
        shown = logits if logits is not None else logits_adv
        metrics = {"train_loss": loss.item(), "train_acc": (shown.argmax(1) == y).float().mean().item()}
        if logits_adv is not None:
            metrics["adv_acc"] = (logits_adv.argmax(1) == y).float().mean().item()
        return metrics

    return step


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
    """Train ``model`` in place with cross-entropy on ``(x, y)`` (:func:`supervised_step` on :func:`run`).

    Training runs on the model's device (move it first, e.g. ``build`` puts it on ``get_device()``); data
    batches are moved there. On CUDA the forward passes use mixed precision (bf16, else fp16 with loss
    scaling); adversarial examples are always crafted in full precision. The model ends in eval mode.

    Args:
        model: the classifier (returns logits).
        x, y: training images (N×C×H×W in [0, 1]) and labels.
        epochs, batch_size, lr: the usual.
        lr_schedule: ``"constant"`` or ``"decay"`` (see :func:`lr_factor`).
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: L2 penalty handed to the optimizer.
        val: ``(x_val, y_val)``: accuracy on it is recorded after every epoch (select models on this, never on
            the test split).
        seed: seeds shuffling and the global RNGs (see :func:`run`).
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
    lr_factor(lr_schedule, 0.0)

    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    step = supervised_step(model, opt, adversary=adversary, clean_weight=clean_weight,
                           logit_pairing=logit_pairing, temperature=temperature)
    validate = None if val is None else (lambda: {"val_acc": accuracy(model, *val)})
    history = run(step, (x, y, soft_targets if soft_targets is not None else y), epochs=epochs,
                  batch_size=batch_size, modules=[model], optimizers=[opt], lr_schedule=lr_schedule,
                  seed=seed, validate=validate, desc=desc,
                  stateful=[adversary] if hasattr(adversary, "state_dict") else [])
    return {k: history.get(k, []) for k in ("train_loss", "train_acc", "adv_acc", "val_acc", "seconds")}


class WarmupPGD:
    """A training adversary: :func:`purify_lib.attacks.pgd` whose ``eps`` and ``alpha`` grow linearly from
    ``1/warmup`` of their values to the full values over the first ``warmup`` calls (batches).

    Starting adversarial training at the full ε = 0.3 on MNIST can leave a freshly initialised network stuck
    at chance for a long time (the loss on PGD examples carries no usable signal at first); a short ramp
    avoids that. Use a fresh instance per training run (it counts its calls).
    """

    def __init__(self, eps: float, alpha: float, steps: int, warmup: int = 0,
                 random_start: bool = True) -> None:
        self.eps, self.alpha = check_positive(eps, "eps"), check_positive(alpha, "alpha")
        self.steps, self.warmup, self.random_start = int(steps), int(warmup), random_start
        if self.steps < 1 or self.warmup < 0:
            raise ValueError(f"steps ≥ 1 and warmup ≥ 0 expected, got steps={steps!r}, warmup={warmup!r}")
        self.calls = 0

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        self.calls += 1
        scale = min(1.0, self.calls / self.warmup) if self.warmup else 1.0
        return pgd(model, x, y, eps=self.eps * scale, alpha=self.alpha * scale, steps=self.steps,
                   random_start=self.random_start)

    def state_dict(self) -> dict[str, int]:
        """The call counter (the ramp's position), for resumable training."""
        return {"calls": self.calls}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.calls = int(state["calls"])

    def __repr__(self) -> str:
        return (f"WarmupPGD(eps={self.eps}, alpha={self.alpha}, steps={self.steps}, warmup={self.warmup}, "
                f"random_start={self.random_start})")


class RandomEpsFGSM:
    """A training adversary: FGSM with an ε drawn per batch from ``eps_choices`` (seeded).

    The APE-GAN++ authors' adversarial-training baseline (ART's ``AdversarialTrainer`` with FGSM at
    ε ∈ {0.1, 0.3, 0.5, 0.7}) picks one of its attacks at random for every batch; this does the same.
    """

    def __init__(self, eps_choices: Sequence[float], seed: int = 0) -> None:
        if not eps_choices:
            raise ValueError("eps_choices: expected at least one ε")
        self.eps_choices = tuple(check_positive(e, "eps_choices[]") for e in eps_choices)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        i = int(torch.randint(len(self.eps_choices), (1,), generator=self._generator))
        return fgsm(model, x, y, eps=self.eps_choices[i])

    def state_dict(self) -> dict[str, Tensor]:
        """The ε generator's state, for resumable training."""
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self._generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"RandomEpsFGSM(eps_choices={list(self.eps_choices)}, seed={self.seed})"


def defensive_distillation(student: nn.Module, teacher: nn.Module, x: Tensor, y: Tensor, *,
                           temperature: float, seed: int = 0, desc: str = "distillation",
                           **options: Any) -> dict[str, dict[str, list[float]]]:
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

    ``options`` (``epochs``, ``batch_size``, ``lr``, ``val`` ...) go to both :func:`fit` calls.

    Returns:
        ``{"teacher": history, "student": history}`` (see :func:`fit`). Both models are left in eval mode.
    """
    check_positive(temperature, "temperature")
    common = dict(options, temperature=temperature)
    teacher_history = fit(teacher, x, y, seed=seed, desc=f"{desc}: teacher", **common)
    soft = torch.softmax(predict(teacher, x) / temperature, dim=1)
    student_history = fit(student, x, y, seed=seed + 1, soft_targets=soft, desc=f"{desc}: student", **common)
    return {"teacher": teacher_history, "student": student_history}
