"""Chapter 6's analysis of IsoGAN: purification, image quality (PSNR/SSIM), the tables' row writer,
and the explorer's frames (paired differences: :func:`purify_lib.stats.paired_bootstrap`).

The paper's method itself (networks, losses, step, training) is :mod:`purify_lib.defenses.isogan`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .. import metrics, plots
from ..attacks import pgd
from ..defenses.isogan import CHANGED
from ..evaluate import Defended, accuracy, predict
from ..results import Results
from ..runtime import model_device

__all__ = ["purify", "quality", "add_scores", "explorer_frame"]


def purify(generator: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    """``G(x)`` for every image of ``x``, batched, without gradients, in eval mode, on ``x``'s device."""
    return predict(generator, x, batch_size)


def quality(x: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image PSNR (dB) and SSIM of ``x`` against ``ref`` (:mod:`purify_lib.metrics`), on the CPU."""
    x, ref = x.detach().float().cpu(), ref.detach().float().cpu()
    return metrics.psnr(x, ref), metrics.ssim(x, ref)


def add_scores(R: Results, *, table: str, dataset: str, classifier: str, model: nn.Module, x: Tensor,
               y: Tensor, x_adv: Tensor, purifiers: Mapping[str, nn.Module | None], attack: str, threat: str,
               eps: float, quality_tables: tuple[str, str] | None = None) -> None:
    """Score one set of examples for every defense and add the rows to ``R``.

    ``x_adv`` holds examples of the first ``len(x_adv)`` images of ``(x, y)`` (``x`` itself for clean rows,
    with ``attack="none"``, ``threat="none"``). Per defense (name → purifier, ``None`` = undefended): the
    ``accuracy`` of ``model(purifier(x_adv))`` in ``table``; with ``quality_tables = (psnr_table,
    ssim_table)`` also the mean PSNR and SSIM of what reaches the classifier against the clean image, over
    the images the attack changed (some pixel by at least :data:`CHANGED`: an attack that fails, or finds the
    image already misclassified, may return its input up to rounding), or over all images for clean inputs,
    where only purifiers are scored (``G(x)`` against ``x``: the floor).
    """
    n = len(x_adv)
    x, y = x[:n], y[:n]
    clean = torch.equal(x_adv, x)
    moved = (x_adv - x).abs().flatten(1).amax(1).cpu() >= CHANGED
    changed = torch.ones(n, dtype=torch.bool) if clean else moved
    row = dict(dataset=dataset, classifier=classifier, attack=attack, threat=threat, eps=float(eps))
    for name, purifier in purifiers.items():
        seen = x_adv if purifier is None else purify(purifier, x_adv)
        R.add(table=table, **row, defense=name, metric="accuracy", value=accuracy(model, seen, y), n=n)
        if quality_tables is None or (clean and purifier is None) or not changed.any():
            continue
        psnr, ssim = quality(seen[changed], x[changed])
        for metric, t, values in (("psnr", quality_tables[0], psnr), ("ssim", quality_tables[1], ssim)):
            R.add(
                table=t, **row, defense=name, metric=metric, value=values.mean().item(), n=int(changed.sum())
            )


def explorer_frame(generator: nn.Module, classifier: nn.Module, x: Tensor, y: Tensor, *, eps: float,
                   threat: str, steps: int, class_names: list[str] | tuple[str, ...]) -> bytes:
    """One frame of the chapter's ε explorer for a single image ``x`` (1×C×H×W) with label ``y`` (1).

    PGD with ``steps`` steps at ``eps`` (step 2.5·ε/steps) against the classifier alone (``"oblivious"``) or
    through ``G`` (``"whitebox"``); ε = 0 is the clean image. Shows the clean, adversarial and purified
    images, the classifier's top-3 on each input, and PSNR/SSIM of both against the clean image.
    """
    if threat not in ("oblivious", "whitebox"):
        raise ValueError(f"threat: expected 'oblivious' or 'whitebox', got {threat!r}")
    device = model_device(classifier)
    x, y = x.to(device), y.to(device)
    target = classifier if threat == "oblivious" else Defended(generator, classifier)
    x_adv = pgd(target, x, y, eps=eps, alpha=2.5 * eps / steps, steps=steps) if eps > 0 else x.clone()
    with torch.no_grad():
        x_pur = generator(x_adv)
        probs = [torch.softmax(classifier(v), 1)[0].cpu() for v in (x, x_adv, x_pur)]
    lines = []
    for name, image in (("adversarial", x_adv), ("purified", x_pur)):
        p, s = quality(image, x)
        lines.append(f"{name}: PSNR {p.item():.1f} dB, SSIM {s.item():.3f}" if p.isfinite().all()
                     else f"{name}: identical to clean")
    fig = plots.prediction_panel(
        [("clean", x[0].cpu()), ("adversarial", x_adv[0].cpu()), ("purified G(·)", x_pur[0].cpu())],
        [("f(clean)", probs[0]), ("f(adversarial)", probs[1]), ("f(G(adversarial))", probs[2])],
        class_names,
        true_label=int(y[0]),
        title=f"PGD ε = {eps:.3g} ({threat}); " + "; ".join(lines),
    )
    return plots.fig_to_png(fig)
