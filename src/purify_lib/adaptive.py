"""Building blocks of adaptive attacks: attacks that know the defense (Athalye, Carlini & Wagner, 2018).

A defense can look robust only because it hides the gradient a white-box attack follows: a purifier that
rounds (:class:`~purify_lib.defenses.transforms.BitDepth`) has a zero gradient almost everywhere, a random
one (dropout at test time, :class:`~purify_lib.defenses.transforms.TVMinimisation`) gives a different
gradient at every call, and a detector changes what "success" means. Athalye et al. ("Obfuscated gradients
give a false sense of security", ICML 2018) broke 7 of 9 such ICLR 2018 defenses with three tools, here made
to work with every attack of :mod:`purify_lib.attacks` unchanged:

* :func:`bpda` — Backward Pass Differentiable Approximation: run the real purifier forward, differentiate a
  smooth surrogate (the identity by default) backward.
* :func:`eot` — Expectation over Transformation: attack the average over the defense's randomness.
* :func:`detector_aware_loss` — a PGD loss that also keeps a detector's score low;
  :func:`joint_hinge_loss` — the same at the deployed threshold, without a weight to tune.
* :func:`latent_attack` — the attack on Defense-GAN-like purifiers that project onto a generator's range:
  search the latent space for a misclassified image close to the input.
* :func:`worst_per_image` — per image, the worst of several attacks' examples for the defense: an image
  counts as defended only if it survives all of them.

:func:`gradient_is_masked` and :func:`check_differentiable` catch the silent failure: a white-box attack on
a masked gradient returns its input unchanged and reports the defense as robust.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attacks import _check_norm, _margin, _project_, attack_mode
from .checks import check_images, check_int, check_labels, check_positive
from .runtime import eval_mode, progress

__all__ = ["BPDA", "bpda", "EOT", "eot", "gradient_is_masked", "check_differentiable", "detector_aware_loss",
           "joint_hinge_loss", "latent_attack", "worst_per_image"]


class BPDA(nn.Module):
    """``module``'s output forward, the gradient of ``backward`` (default: the identity) backward.

    The straight-through trick ``module(x) + (s − s.detach())`` with ``s = backward(x)`` (kept as
    ``.surrogate``): the added term is exactly zero, so the output equals ``module(x)`` bit for bit, and its
    gradient is that of ``s``. ``module`` runs without autograd.
    """

    def __init__(self, module: nn.Module, backward: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ValueError(f"module: expected an nn.Module, got {type(module).__name__}")
        if backward is not None and not isinstance(backward, nn.Module):
            raise ValueError(f"backward: expected an nn.Module or None, got {type(backward).__name__}")
        self.module = module
        self.surrogate = backward if backward is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            out = self.module(x)
        surrogate = self.surrogate(x)
        if not isinstance(out, Tensor) or out.shape != surrogate.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"bpda: the module's output {got} and the surrogate's "
                             f"{tuple(surrogate.shape)} must have the same shape")
        return out + (surrogate - surrogate.detach())


def bpda(module: nn.Module, backward: nn.Module | None = None) -> BPDA:
    """Wrap a non-differentiable purifier for white-box attacks: see :class:`BPDA`.

    ``attacks.pgd(nn.Sequential(bpda(BitDepth(1)), classifier), x, y, ...)`` attacks the real defended
    pipeline with the gradient of ``classifier`` at the purified point (the identity surrogate).
    """
    return BPDA(module, backward)


class EOT(nn.Module):
    """The mean of ``model``'s logits over ``samples`` forward passes.

    The randomness must live in the model itself and survive eval mode (attacks call ``model.eval()``):
    e.g. :class:`purify_lib.classifiers.Dropout` with ``at_test=True``, or
    :class:`~purify_lib.defenses.transforms.TVMinimisation` behind :func:`bpda`. Averaging logits (Athalye
    et al. average the loss gradients) keeps the wrapper a plain model, so every attack and
    :func:`purify_lib.evaluate.accuracy` work on it unchanged; an attack then follows the loss of the
    expected logits, a close proxy of the expected loss. The passes run one after another, so a module that
    draws its randomness per call (a whole-batch mask) gets a fresh draw each time.
    """

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
        self.model = model
        self.samples = check_int(samples, "samples", 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([self.model(x) for _ in range(self.samples)]).mean(0)

    def extra_repr(self) -> str:
        return f"samples={self.samples}"


def eot(model: nn.Module, samples: int) -> EOT:
    """Average a random model's logits over ``samples`` passes, to attack or evaluate it: :class:`EOT`."""
    return EOT(model, samples)


def gradient_is_masked(module: nn.Module, x: Tensor, tol: float = 1e-12) -> bool:
    """Whether a white-box gradient attack on ``module`` would be blind at ``x``.

    True when ``module`` or one of its submodules declares ``differentiable = False`` (a :class:`BPDA`
    wrapper hides its wrapped module: it is differentiable), or when the input gradient of
    ``module(x).sum()`` (all outputs summed if it returns a tuple) is missing, non-finite, or at most
    ``tol`` in absolute value everywhere for at least half of the images. Runs ``module`` like an attack
    does: eval mode, frozen parameters, restored afterwards.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module: expected an nn.Module, got {type(module).__name__}")
    check_images(x)
    check_positive(tol, "tol", allow_zero=True)
    if _declares_non_differentiable(module):
        return True
    with attack_mode(module):
        x = x.detach().requires_grad_(True)
        out = module(x)
        outputs = [out] if isinstance(out, Tensor) else [o for o in out if isinstance(o, Tensor)]
        if not outputs or not any(o.requires_grad for o in outputs):
            return True
        total = sum(o.sum() for o in outputs if o.requires_grad)
        (grad,) = torch.autograd.grad(total, x, allow_unused=True)
    if grad is None or not torch.isfinite(grad).all():
        return True
    flat = grad.flatten(1).abs().amax(dim=1) <= tol
    return bool(flat.float().mean() >= 0.5)


def _declares_non_differentiable(module: nn.Module) -> bool:
    if isinstance(module, BPDA):
        return _declares_non_differentiable(module.surrogate)
    if getattr(module, "differentiable", True) is False:
        return True
    return any(_declares_non_differentiable(child) for child in module.children())


def check_differentiable(module: nn.Module, x: Tensor, what: str = "purifier") -> None:
    """Raise ``ValueError`` when :func:`gradient_is_masked`: a white-box attack would fail silently."""
    if gradient_is_masked(module, x):
        raise ValueError(
            f"{what}: its input gradient is masked (zero, missing or non-finite, or it declares "
            f"differentiable = False), so a white-box gradient attack would fail silently and overstate "
            f"robustness; attack it through purify_lib.adaptive.bpda(...) (BPDA, Athalye et al. 2018), "
            f"with eot(...) if it is random")


def _logits_and_score(output: object, what: str) -> tuple[Tensor, Tensor]:
    """A detector model's ``(logits, score)`` output, the score flattened to one per example."""
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        raise ValueError(f"{what}: the model must return a (logits, score) pair, got {type(output).__name__}")
    logits, score = output
    if score.shape not in ((len(logits),), (len(logits), 1)):
        raise ValueError(f"{what}: expected one score per example (shape N or N×1), "
                         f"got {tuple(score.shape)} for {len(logits)} examples")
    return logits, score.reshape(-1)


def detector_aware_loss(lam: float, penalty: Callable[[Tensor], Tensor] = F.softplus
                        ) -> Callable[[tuple[Tensor, Tensor], Tensor], Tensor]:
    """A loss for ``attacks.pgd(model, ..., loss_fn=...)`` on a model returning ``(logits, score)``.

    ``loss = CE(logits, y) − lam·penalty(score)`` per example, to maximise: misclassify while keeping the
    detector's score (higher = "adversarial") low. With the default softplus and ``score`` a discriminator
    logit ``d``, ``softplus(d) = −log(1 − σ(d))`` is the detector's loss for calling the input clean (the
    GanDef attack). For a score that is already a loss, such as a reconstruction error, pass
    ``penalty=lambda s: s``. ``lam=0`` is the detector-oblivious attack.
    """
    lam = check_positive(lam, "lam", allow_zero=True)
    if not callable(penalty):
        raise ValueError(f"penalty: expected a callable, got {type(penalty).__name__}")

    def loss_fn(output: tuple[Tensor, Tensor], y: Tensor) -> Tensor:
        logits, score = _logits_and_score(output, "detector_aware_loss")
        return F.cross_entropy(logits, y, reduction="none") - lam * penalty(score)

    return loss_fn


def joint_hinge_loss(threshold: float = 0.5, kappa: float = 0.0
                     ) -> Callable[[tuple[Tensor, Tensor], Tensor], Tensor]:
    """The detector-aware loss of a deployed detector: both conditions of a successful attack at once.

    For ``attacks.pgd(model, ..., loss_fn=...)`` on a model returning ``(logits, d)``, ``d`` a detector logit
    that rejects an input when ``σ(d) ≥ threshold``. Per example, to maximise,

        ``−max(kappa − m, 0) − max(d − logit(threshold) + kappa, 0)``,   ``m = max_{j≠y} f_j − f_y``:

    zero exactly when the input is misclassified and accepted, each with margin ``kappa``; otherwise the
    violations, so the steps go to whichever condition still fails. Unlike :func:`detector_aware_loss`
    there is no weight to tune, and the deployed threshold is part of the loss.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"threshold: expected a probability in (0, 1), got {threshold!r}")
    kappa = check_positive(kappa, "kappa", allow_zero=True)
    cut = math.log(threshold / (1 - threshold))

    def loss_fn(output: tuple[Tensor, Tensor], y: Tensor) -> Tensor:
        logits, score = _logits_and_score(output, "joint_hinge_loss")
        wrong = (kappa - _margin(logits, y)).clamp_min(0)
        seen = (score - cut + kappa).clamp_min(0)
        return -(wrong + seen)

    return loss_fn


def latent_attack(generator: nn.Module, classifier: nn.Module, x: Tensor, y: Tensor, *, eps: float,
                  z_init: Tensor, steps: int = 200, lr: float = 0.05, c: float = 1.0, kappa: float = 0.0,
                  norm: str = "linf", restarts: int = 0, spread: float = 1.0,
                  defense: nn.Module | None = None) -> Tensor:
    """The attack on Defense-GAN-like purifiers, which replace ``x`` by an image ``G(z)`` of a generator's
    range.

    After Athalye, Carlini & Wagner (2018): search the latent space for a code ``z`` whose image ``G(z)``
    lies inside the ``eps``-ball around ``x`` and is misclassified, so that it can be submitted: the
    purifier's projection of a point of its own range should return (close to) that point. The input
    submitted is always ``Π(G(z))``, where ``Π`` projects onto the ``eps``-ball (``norm``: ``"linf"`` or
    ``"l2"``) and [0, 1]. Per start, Adam minimises per example

        ``‖G(z) − Π(G(z))‖₂² + c·max(f_y − max_{j≠y} f_j, −kappa)``,   ``f = classifier(Π(G(z)))`` (logits):

    the first term, zero inside the ball, pulls ``G(z)`` towards the ball (a point of the range that the
    purifier should return); the second makes the submitted input adversarial. ``classifier`` may be the
    whole differentiable pipeline the defense runs (e.g. AE-GAN+rs's ``A ∘ G ∘ F``), so that the submitted
    input fools what the defense does with it, not only the bare classifier. Per example the best iterate is
    kept, not the last: any that ``classifier`` gets wrong first, else the lowest objective. Starts:
    ``z_init`` (e.g. an encoder's codes, or the purifier's own projection of ``x``), then ``restarts`` more
    at ``z_init + spread·N(0, 1)``. Across starts an example keeps the candidate that fools ``defense`` (the
    whole defended system, images → logits, run once per start on the images it searched) and, without
    ``defense`` or among equals, the better-ranked one. With ``defense``, an image the defense already gets
    wrong keeps its candidate: the later starts search only the images still standing (the defense may be a
    2,000-pass search per image). Gradients flow to ``z`` only; the networks run in eval mode with frozen
    parameters, restored afterwards.
    """
    for name, network in (("generator", generator), ("classifier", classifier)):
        if not isinstance(network, nn.Module):
            raise ValueError(f"{name}: expected an nn.Module, got {type(network).__name__}")
    if defense is not None and not isinstance(defense, nn.Module):
        raise ValueError(f"defense: expected an nn.Module or None, got {type(defense).__name__}")
    check_images(x)
    check_labels(y, len(x))
    eps = check_positive(eps, "eps")
    steps = check_int(steps, "steps", 1)
    lr = check_positive(lr, "lr")
    c = check_positive(c, "c")
    kappa = check_positive(kappa, "kappa", allow_zero=True)
    restarts = check_int(restarts, "restarts", 0)
    spread = check_positive(spread, "spread", allow_zero=True)
    norm = _check_norm(norm)
    if (not isinstance(z_init, Tensor) or not z_init.is_floating_point() or z_init.ndim == 0
            or len(z_init) != len(x)):
        got = f"shape {tuple(z_init.shape)}" if isinstance(z_init, Tensor) else type(z_init).__name__
        raise ValueError(f"z_init: expected a float tensor with one code per image ({len(x)}), got {got}")
    if not torch.isfinite(z_init).all():
        raise ValueError("z_init: contains NaN or inf")
    x, y = x.detach(), y.detach().to(x.device)
    z_init = z_init.detach().to(x.device)
    best = x.clone()
    best_loss = torch.full((len(x),), float("inf"), device=x.device)
    best_fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    with attack_mode(generator), attack_mode(classifier):
        with torch.no_grad():
            image = generator(z_init)
        if not isinstance(image, Tensor) or image.shape != x.shape:
            got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"generator: expected images shaped like x {tuple(x.shape)}, got {got}")
        for start in range(restarts + 1):
            todo = (~best_fooled).nonzero().squeeze(1)  # every image without a defense
            if len(todo) == 0:
                break
            z0 = z_init[todo] if start == 0 else z_init[todo] + spread * torch.randn_like(z_init[todo])
            cand, cand_loss = _latent_search(generator, classifier, x[todo], y[todo], z0, eps, steps, lr, c,
                                             kappa, norm, desc=f"latent attack {start + 1}/{restarts + 1}")
            better = cand_loss < best_loss[todo]
            if defense is not None:  # none of these images is fooled yet: a candidate that fools it wins
                with eval_mode(defense), torch.no_grad():
                    fooled = defense(cand).argmax(1) != y[todo]
                better |= fooled
                best_fooled[todo] = fooled
            best[todo[better]], best_loss[todo[better]] = cand[better], cand_loss[better]
    return best


_VALID = 1e6  # lifts a candidate that the classifier gets wrong above every other


def _latent_search(generator: nn.Module, classifier: nn.Module, x: Tensor, y: Tensor, z0: Tensor,
                   eps: float, steps: int, lr: float, c: float, kappa: float, norm: str,
                   desc: str) -> tuple[Tensor, Tensor]:
    """One start of :func:`latent_attack`: per example the best candidate ``Π(G(z))`` and its rank (lower is
    better: a candidate the classifier gets wrong first, then the objective)."""
    z = z0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    best = x.clone()
    best_loss = torch.full((len(x),), float("inf"), device=x.device)
    for step in progress(range(steps + 1), desc=desc, leave=False):
        image = generator(z)
        inside = _project_(image.clone(), x, eps, norm)  # differentiable: the input that is submitted
        outside = (image - inside).flatten(1).pow(2).sum(1)
        margin = _margin(classifier(inside), y)
        loss = outside + c * (-margin).clamp_min(-kappa)
        with torch.no_grad():  # a rank: fooling the classifier beats any objective
            rank = loss - _VALID * (margin > 0).float()
            better = rank < best_loss
            best[better], best_loss[better] = inside.detach()[better], rank[better]
        if step == steps:  # the last iterate is scored, not moved
            break
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
    return best, best_loss


def worst_per_image(candidates: Sequence[Tensor], ranks: Sequence[Tensor]) -> Tensor:
    """Per image, the candidate adversarial example that beats the defense worst.

    ``candidates`` are batches of adversarial images of the same inputs (one per attack); ``ranks[k]`` scores
    each image of ``candidates[k]`` (a higher rank beats the defense worse: e.g. 2 evades a detector and
    fools the classifier, 1 fools the classifier but is rejected, 0 fails). Per image the highest rank wins,
    ties going to the earliest candidate.
    """
    if not candidates or len(candidates) != len(ranks):
        raise ValueError("candidates, ranks: expected one rank tensor per batch of candidates, at least one")
    best, best_rank = candidates[0].clone(), ranks[0].clone().cpu()
    for x_adv, rank in zip(candidates[1:], ranks[1:]):
        if x_adv.shape != best.shape or len(rank) != len(best):
            raise ValueError(f"candidates: expected batches of shape {tuple(best.shape)} and a rank per "
                             f"image, got {tuple(x_adv.shape)} and {len(rank)} ranks")
        better = rank.cpu() > best_rank
        best[better.to(best.device)], best_rank[better] = x_adv[better.to(x_adv.device)], rank.cpu()[better]
    return best
