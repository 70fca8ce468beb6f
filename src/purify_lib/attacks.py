"""Evasion attacks: ``attack(model, x, y, **params) -> x_adv``.

Every attack takes a model returning logits and a float N×C×H×W batch ``x`` in [0, 1] with its labels ``y``,
and returns a detached batch of the same shape, dtype and device that never leaves [0, 1]. The model runs in
eval mode with its parameters frozen (no weight gradients are computed) and gets its modes and
``requires_grad`` flags back afterwards, even when the attack raises. ``x`` is never modified. The threat
models:

* **FGSM** (Goodfellow et al., 2015), L∞: one step of size ``eps`` along the sign of the loss gradient.
  Cheap and weak; the "oblivious" baseline of most defense papers.
* **BIM** (Kurakin et al., 2017), L∞: FGSM repeated ``steps`` times with step ``alpha``, projected back onto
  the ``eps``-ball around ``x`` after each step; no random start.
* **ILLC** (iterative least-likely class, Kurakin et al., 2017), L∞: targeted BIM towards the class the
  model finds least likely on the clean input.
* **PGD** (Madry et al., 2018), L∞ or L2: BIM from a random point of the ``eps``-ball, optionally restarted,
  keeping per example the worst case found. ``loss_fn`` makes it adaptive: any differentiable per-example
  loss of the model's output (which may then be a tuple, e.g. logits and a detector score).
* **MIM** (Dong et al., 2018), L∞: BIM whose step follows a running sum (momentum) of L1-normalised
  gradients, which transfers better between models.
* **C&W-L2** (Carlini & Wagner, 2017), L2, unbounded: minimises ``‖δ‖² + c·f(x+δ)`` with Adam in tanh
  space (so [0, 1] holds by construction), binary-searching ``c`` per example; returns the smallest
  successful perturbation found, or ``x`` itself where it never succeeds. Its strength is measured by the
  L2 norm it needs, not by a budget.
* **DeepFool** (Moosavi-Dezfooli et al., 2016), L2, unbounded: linearises the classifier around the
  current point and steps to the nearest linearised decision boundary, until the label flips.
* **JSMA** (Papernot et al., 2016), L0, targeted: raises pairs of pixels chosen by a saliency map built from
  the Jacobian until the target class wins or a fraction ``gamma`` of the pixels has changed.
* **AutoAttack** (Croce & Hein, 2020), L∞ or L2: the reference implementation (``pyautoattack``), kept as
  the independent yardstick for the attacks above rather than rewritten here.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_images, check_int, check_labels, check_positive
from .runtime import model_device

LossFn = Callable[[object, Tensor], Tensor]
_TINY = 1e-12  # guards divisions by a zero gradient norm

__all__ = ["fgsm", "bim", "illc", "pgd", "mim", "cw_l2", "deepfool", "jsma", "autoattack", "apgd_ce",
           "apgd_t"]


# ----------------------------------------------------------------------------------------------- helpers
@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode with frozen parameters and gradients enabled; restore modes and flags
    after."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)  # gradients flow to the input only: no wasted weight gradients
    try:
        with torch.enable_grad():  # attacks need input gradients even when called under torch.no_grad()
            yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)


def _check_inputs(x: object, y: object) -> tuple[Tensor, Tensor]:
    check_images(x)
    check_labels(y, len(x))
    return x.detach(), y.detach().to(x.device)


def _check_norm(norm: str) -> str:
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm: expected 'linf' or 'l2', got {norm!r}")
    return norm


def _cross_entropy(output: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(output, y, reduction="none")


def _input_grad(model: nn.Module, x_adv: Tensor, y: Tensor, loss_fn: LossFn) -> Tensor:
    """Gradient of the summed per-example loss with respect to the input only."""
    x_adv = x_adv.detach().requires_grad_(True)
    loss = loss_fn(model(x_adv), y).sum()  # summing keeps each example's gradient its own
    return torch.autograd.grad(loss, x_adv)[0]


def _per_example_norm(t: Tensor, p: float) -> Tensor:
    """The L-p norm of each example, shaped N×1×1×1 to broadcast against the batch."""
    return t.flatten(1).norm(p=p, dim=1).clamp_min(_TINY).view(-1, *([1] * (t.ndim - 1)))


def _steepest_step(grad: Tensor, norm: str) -> Tensor:
    """The unit-norm direction of steepest ascent: sign for L∞, the normalised gradient for L2."""
    return grad.sign() if norm == "linf" else grad / _per_example_norm(grad, 2)


def _project_(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Project ``x_adv`` in place onto the ``eps``-ball around ``x``, then onto the [0, 1] box.

    Clamping to the box after the ball can only move each pixel towards ``x`` (which lies in the box), so the
    result stays in the ball as well.
    """
    if norm == "linf":
        x_adv.clamp_(min=x - eps, max=x + eps)
    else:
        delta = x_adv - x
        x_adv.copy_(x + delta * (eps / _per_example_norm(delta, 2)).clamp_max(1.0))
    return x_adv.clamp_(0.0, 1.0)


def _random_start(x: Tensor, eps: float, norm: str) -> Tensor:
    """A uniformly random point of the ``eps``-ball around ``x`` (clamped to [0, 1])."""
    if norm == "linf":
        delta = torch.empty_like(x).uniform_(-eps, eps)
    else:
        direction = torch.randn_like(x)
        direction /= _per_example_norm(direction, 2)
        radius = torch.rand(len(x), *([1] * (x.ndim - 1)), device=x.device, dtype=x.dtype)
        delta = direction * eps * radius ** (1.0 / x[0].numel())  # uniform in volume
    return (x + delta).clamp_(0.0, 1.0)


def _iterate(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, eps: float, alpha: float, steps: int,
             targeted: bool, norm: str = "linf", loss_fn: LossFn = _cross_entropy,
             decay: float | None = None) -> Tensor:
    """The loop shared by BIM, ILLC, PGD and MIM: ``steps`` projected steepest-ascent steps from ``x_adv``.

    Targeted attacks descend the loss of the target class ``y`` instead. With ``decay`` (MIM) the step
    follows ``g ← decay·g + ∇/‖∇‖₁`` rather than the raw gradient.
    """
    momentum = torch.zeros_like(x) if decay is not None else None
    for _ in range(steps):
        grad = _input_grad(model, x_adv, y, loss_fn)
        if targeted:
            grad = -grad
        if momentum is not None:
            momentum = decay * momentum + grad / _per_example_norm(grad, 1)
            grad = momentum
        x_adv = x_adv + alpha * _steepest_step(grad, norm)  # a fresh tensor: safe to project in place
        _project_(x_adv, x, eps, norm)
    return x_adv.detach()


# ----------------------------------------------------------------------------------- L∞ gradient attacks
def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, targeted: bool = False) -> Tensor:
    """Fast gradient sign method: ``clip(x ± eps·sign ∇ₓ loss)``; targeted descends towards class ``y``."""
    x, y = _check_inputs(x, y)
    eps = check_positive(eps, "eps", allow_zero=True)
    with attack_mode(model):
        return _iterate(model, x, y, x, eps, eps, 1, targeted)


def bim(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int,
        targeted: bool = False) -> Tensor:
    """Basic iterative method: ``steps`` FGSM steps of size ``alpha``, each projected onto the L∞
    ``eps``-ball."""
    x, y = _check_inputs(x, y)
    eps = check_positive(eps, "eps", allow_zero=True)
    alpha = check_positive(alpha, "alpha")
    steps = check_int(steps, "steps", 1)
    with attack_mode(model):
        return _iterate(model, x, y, x, eps, alpha, steps, targeted)


def illc(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int) -> Tensor:
    """Iterative least-likely class: targeted BIM towards the lowest-logit class of the clean input.

    ``y`` is only validated: the target comes from the model's own clean prediction.
    """
    x, y = _check_inputs(x, y)
    eps = check_positive(eps, "eps", allow_zero=True)
    alpha = check_positive(alpha, "alpha")
    steps = check_int(steps, "steps", 1)
    with attack_mode(model):
        with torch.no_grad():
            least_likely = model(x).argmin(dim=1)
        return _iterate(model, x, least_likely, x, eps, alpha, steps, targeted=True)


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int, restarts: int = 1,
        random_start: bool = True, targeted: bool = False, norm: str = "linf",
        loss_fn: LossFn | None = None, stages: int = 1) -> Tensor:
    """Projected gradient descent (Madry et al.) in the L∞ or L2 ``eps``-ball, with random restarts.

    Args:
        norm: ``"linf"`` (signed steps) or ``"l2"`` (normalised-gradient steps); ``eps`` and ``alpha`` are
            measured in that norm.
        stages: a step-size schedule: the ``steps`` are split into ``stages`` equal runs and ``alpha`` halves
            after each (large steps explore, small ones settle). On chapter 7's 100 images at ε 0.3, 40 steps
            in 4 stages from ``eps / 2`` left 2–3 points fewer correct than 100 constant steps of ``eps / 8``
            through GanDef and IsoGAN, and as many on the PGD-trained LeNet.
        restarts: independent runs; per example the worst case is kept: misclassified (for a targeted
            attack: classified as ``y``) first, then the highest loss (targeted: the lowest).
        loss_fn: ``loss_fn(model(x), y) -> per-example loss`` to *maximise* (targeted: minimise); default
            cross-entropy on logits. The model output may be anything ``loss_fn`` accepts, e.g. a tuple
            (logits, detector score) for an adaptive attack; misclassification then only counts when the
            output is a logits tensor, and restarts are otherwise ranked by loss alone.
    """
    x, y = _check_inputs(x, y)
    eps = check_positive(eps, "eps", allow_zero=True)
    alpha = check_positive(alpha, "alpha")
    steps = check_int(steps, "steps", 1)
    restarts = check_int(restarts, "restarts", 1)
    stages = check_int(stages, "stages", 1)
    if stages > steps:
        raise ValueError(f"stages: expected at most steps ({steps}), got {stages}")
    norm = _check_norm(norm)
    loss_fn = loss_fn or _cross_entropy
    sign = -1.0 if targeted else 1.0  # the score below is "worse for the model" when larger
    per_stage = [steps // stages + (i < steps % stages) for i in range(stages)]
    best = best_fooled = best_score = None
    with attack_mode(model):
        for _ in range(restarts):
            x_adv = _random_start(x, eps, norm) if random_start else x
            for i, n in enumerate(per_stage):
                x_adv = _iterate(model, x, y, x_adv, eps, alpha / 2**i, n, targeted, norm, loss_fn)
            if restarts == 1:
                return x_adv
            with torch.no_grad():
                output = model(x_adv)
                score = sign * loss_fn(output, y)
            fooled = ((output.argmax(1) == y) == targeted if isinstance(output, Tensor)
                      else torch.zeros_like(y, dtype=torch.bool))
            if best is None:
                best, best_fooled, best_score = x_adv, fooled, score
                continue
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (score > best_score))
            best[better], best_fooled[better], best_score[better] = (x_adv[better], fooled[better],
                                                                     score[better])
    return best


def mim(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int, decay: float = 1.0,
        targeted: bool = False) -> Tensor:
    """Momentum iterative method: BIM stepping along the sign of accumulated L1-normalised gradients."""
    x, y = _check_inputs(x, y)
    eps = check_positive(eps, "eps", allow_zero=True)
    alpha = check_positive(alpha, "alpha")
    steps = check_int(steps, "steps", 1)
    decay = check_positive(decay, "decay", allow_zero=True)
    with attack_mode(model):
        return _iterate(model, x, y, x, eps, alpha, steps, targeted, decay=decay)


def autoattack(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf",
               version: str = "standard", attacks_to_run: Sequence[str] | None = None, seed: int = 0,
               batch_size: int = 500, n_iter: int | None = None) -> Tensor:
    """AutoAttack (Croce & Hein, 2020) through its reference code (``pyautoattack``), not ours: the yardstick
    our own attacks are checked against.

    ``version`` ``"standard"`` runs APGD-CE, APGD-T, FAB-T and Square; ``attacks_to_run`` picks a subset
    (e.g. ``["apgd-ce"]``: 100 iterations with an adaptive step size, keeping the best point found; run this
    way, the reference code gives it 5 restarts). ``n_iter`` overrides the APGD attacks' 100 iterations:
    fewer only to prove that code runs (the ``smoke`` profile), never for a number anyone reads.
    """
    from pyautoattack import AutoAttack

    x, y = _check_inputs(x, y)
    eps = check_positive(eps, "eps")
    norm = _check_norm(norm)
    device = model_device(model)
    runner = AutoAttack(model, eps=eps, norm="Linf" if norm == "linf" else "L2", seed=seed, device=device,
                        version="custom" if attacks_to_run else version,
                        attacks=list(attacks_to_run) if attacks_to_run else None)
    runner.verbose = False
    if n_iter is not None:
        runner.apgd.n_iter = runner.apgd_targeted.n_iter = check_int(n_iter, "n_iter", 1)
    with attack_mode(model):
        x_adv, _ = runner.run_standard_evaluation(x.to(device), y.to(device), batch_size=batch_size)
    return x_adv.detach().to(x.device)


def apgd_ce(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf", n_iter: int = 100,
            seed: int = 0) -> Tensor:
    """AutoAttack's APGD-CE alone (:func:`autoattack` with ``attacks_to_run=["apgd-ce"]``): the yardstick the
    chapters set beside their own PGD."""
    return autoattack(model, x, y, eps=eps, norm=norm, attacks_to_run=["apgd-ce"], seed=seed, n_iter=n_iter)


def apgd_t(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf", n_iter: int = 100,
           seed: int = 0) -> Tensor:
    """AutoAttack's APGD-T alone (:func:`autoattack` with ``attacks_to_run=["apgd-t"]``): the targeted DLR
    loss towards each of the 9 most likely other classes in turn, 100 iterations each, on the images still
    classified correctly. With APGD-CE, the first two attacks of standard AutoAttack."""
    return autoattack(model, x, y, eps=eps, norm=norm, attacks_to_run=["apgd-t"], seed=seed, n_iter=n_iter)


# ------------------------------------------------------------------------------ minimum-norm attacks
def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """Best other logit minus the logit of class ``y`` (positive iff ``y`` is not the prediction).

    The other classes are masked with −∞, not multiplied by zero: with negative logits a zeroed entry would
    wrongly win the max (a known torchattacks bug).
    """
    is_y = F.one_hot(y, logits.shape[1]).bool()
    other = logits.masked_fill(is_y, float("-inf")).amax(dim=1)
    return other - logits.gather(1, y[:, None]).squeeze(1)


def cw_l2(model: nn.Module, x: Tensor, y: Tensor, c: float = 1.0, kappa: float = 0.0, steps: int = 1000,
          lr: float = 0.01, binary_search_steps: int = 9, targeted: bool = False) -> Tensor:
    """Carlini–Wagner L2: smallest ``δ`` with ``‖δ‖² + c·max(−margin, −kappa)`` minimised in tanh space.

    ``c`` is the initial constant; per example it is bisected down after a success and raised (×10 until
    a success brackets it) after a failure. Targeted: ``y`` is the target class. Returns the successful
    example of smallest L2 norm, or ``x`` itself where no search step succeeded.
    """
    x, y = _check_inputs(x, y)
    c = check_positive(c, "c")
    kappa = check_positive(kappa, "kappa", allow_zero=True)
    steps = check_int(steps, "steps", 1)
    lr = check_positive(lr, "lr")
    binary_search_steps = check_int(binary_search_steps, "binary_search_steps", 1)
    n = len(x)
    w_clean = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))  # x = (tanh w + 1) / 2
    const = torch.full((n,), c, device=x.device, dtype=x.dtype)
    lower, upper = torch.zeros_like(const), torch.full_like(const, float("inf"))
    best_l2 = torch.full_like(const, float("inf"))
    best = x.clone()
    with attack_mode(model):
        for _ in range(binary_search_steps):
            w = w_clean.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(steps):
                x_new = (torch.tanh(w) + 1) / 2
                l2 = (x_new - x).flatten(1).pow(2).sum(1)
                margin = _margin(model(x_new), y)
                gain = -margin if targeted else margin  # > kappa once the attack succeeds with confidence
                loss = (l2 + const * (kappa - gain).clamp_min(0)).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():  # bookkeeping on the point just evaluated
                    success = gain > kappa
                    succeeded |= success
                    improved = success & (l2 < best_l2)
                    best_l2[improved] = l2[improved]
                    best[improved] = x_new[improved].detach()
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(upper.isinf(), const * 10, (lower + upper) / 2)
    return best.detach()


def deepfool(model: nn.Module, x: Tensor, y: Tensor, steps: int = 50, overshoot: float = 0.02,
             num_classes: int | None = None) -> Tensor:
    """DeepFool (L2): repeatedly step to the nearest boundary of the locally linearised classifier.

    Args:
        steps: the maximum number of linearisations; an example stops as soon as it is misclassified.
        overshoot: the accumulated step is scaled by ``1 + overshoot`` to cross the boundary.
        num_classes: consider only the true class and the ``num_classes − 1`` classes with the highest
            clean logits (faster on many classes); ``None`` considers all classes.

    Examples still classified as ``y`` after ``steps`` linearisations are returned at their last iterate.
    """
    x, y = _check_inputs(x, y)
    steps = check_int(steps, "steps", 1)
    overshoot = check_positive(overshoot, "overshoot", allow_zero=True)
    with attack_mode(model):
        with torch.no_grad():
            logits = model(x)
        k = logits.shape[1] if num_classes is None else min(check_int(num_classes, "num_classes", 2),
                                                             logits.shape[1])
        # candidate classes per example: y first, then the k−1 most likely others on the clean input
        others = logits.scatter(1, y[:, None], float("-inf")).topk(k - 1, dim=1).indices
        classes = torch.cat([y[:, None], others], dim=1)
        r_total = torch.zeros_like(x)
        x_adv = x.clone()
        active = torch.arange(len(x), device=x.device)
        for _ in range(steps):
            xa = x_adv[active].requires_grad_(True)
            logits = model(xa)
            still = logits.argmax(1) == y[active]
            if not still.any():
                break
            # gradients of the candidate logits, one backward pass per candidate: N×k×C×H×W
            picked = logits.gather(1, classes[active])
            grads = torch.stack([torch.autograd.grad(picked[:, j].sum(), xa, retain_graph=j < k - 1)[0]
                                 for j in range(k)], dim=1)
            active, picked, grads = active[still], picked[still].detach(), grads[still]
            f = picked[:, 1:] - picked[:, :1]  # < 0 while y still wins
            w = (grads[:, 1:] - grads[:, :1]).flatten(2)
            w_norm = w.norm(dim=2).clamp_min(_TINY)
            nearest = (f.abs() / w_norm).argmin(dim=1)  # the closest linearised boundary
            rows = torch.arange(len(active), device=x.device)
            f_l, w_l, n_l = f[rows, nearest], w[rows, nearest], w_norm[rows, nearest]
            r_step = ((f_l.abs() + 1e-4) / n_l**2)[:, None] * w_l
            r_total[active] += r_step.view_as(x[active])
            x_adv[active] = (x[active] + (1 + overshoot) * r_total[active]).clamp(0.0, 1.0)
    return x_adv.detach()


def _best_pairs(alpha: Tensor, beta: Tensor, domain: Tensor, chunk: int = 16) -> tuple[Tensor, Tensor]:
    """Papernot's pairwise saliency map: the pair ``(p, q)`` maximising ``(α_p+α_q)·|β_p+β_q|``.

    Only pairs with ``α_p+α_q > 0`` (raises the target logit) and ``β_p+β_q < 0`` (lowers the others) and
    both pixels in the search domain count. Returns the flat indices and whether a valid pair existed.
    Examples are processed ``chunk`` at a time to bound the N×d×d memory.
    """
    d = alpha.shape[1]
    off_diagonal = ~torch.eye(d, dtype=torch.bool, device=alpha.device)
    best, found = [], []
    for a, b, m in zip(alpha.split(chunk), beta.split(chunk), domain.split(chunk)):
        pair_a = a[:, :, None] + a[:, None, :]
        pair_b = b[:, :, None] + b[:, None, :]
        valid = (pair_a > 0) & (pair_b < 0) & m[:, :, None] & m[:, None, :] & off_diagonal
        score = torch.where(valid, pair_a * -pair_b, torch.zeros_like(pair_a)).flatten(1)
        best.append(score.argmax(dim=1))
        found.append(valid.flatten(1).any(dim=1))
    return torch.cat(best), torch.cat(found)


def jsma(model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None = None, theta: float = 1.0,
         gamma: float = 0.1) -> Tensor:
    """Jacobian-based saliency map attack (Papernot et al., 2016): targeted, L0, increasing pixels.

    Each iteration raises by ``theta`` (clipped at 1) the pair of pixels with the highest pairwise saliency
    for the target class; a pixel that reaches 1 leaves the search domain. An example stops when it is
    classified as its target, when no valid pair is left, or after ``⌊gamma·d/2⌋`` iterations, so at most a
    fraction ``gamma`` of its ``d`` features change.

    Args:
        target: the target classes; ``None`` means ``(y + 1) mod C`` (deterministic, never ``y``).
        theta: the increase applied to each chosen pixel, in (0, 1].
        gamma: the maximum fraction of features changed, in (0, 1].
    """
    x, y = _check_inputs(x, y)
    theta = check_positive(theta, "theta")
    gamma = check_positive(gamma, "gamma")
    if theta > 1 or gamma > 1:
        raise ValueError(f"theta and gamma must lie in (0, 1], got theta={theta}, gamma={gamma}")
    n, d = len(x), x[0].numel()
    with attack_mode(model):
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        if target is None:
            target = (y + 1) % num_classes
        target = check_labels(target, n, name="target", num_classes=num_classes).to(x.device)
        x_adv = x.clone().flatten(1)
        domain = x_adv < 1
        active = torch.arange(n, device=x.device)
        for _ in range(int(gamma * d / 2)):
            xa = x_adv[active].requires_grad_(True)
            logits = model(xa.view(-1, *x.shape[1:]))
            keep = logits.argmax(1) != target[active]
            # α: gradient of the target logit; β: gradient of the sum of all other logits
            alpha = torch.autograd.grad(logits.gather(1, target[active, None]).sum(), xa,
                                        retain_graph=True)[0]
            beta = torch.autograd.grad(logits.sum(), xa)[0] - alpha
            pair, found = _best_pairs(alpha[keep], beta[keep], domain[active[keep]])
            active = active[keep][found]
            if len(active) == 0:
                break
            pair = pair[found]
            for pixel in (pair // d, pair % d):
                x_adv[active, pixel] = (x_adv[active, pixel] + theta).clamp_max(1.0)
                domain[active, pixel] = x_adv[active, pixel] < 1
    return x_adv.view_as(x).detach()
