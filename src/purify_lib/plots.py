"""Small plotting helpers shared by the chapters (matplotlib only; every function returns its figure).

Images are float C×H×W (or N×C×H×W) tensors in [0, 1], as everywhere in the library.
"""
from __future__ import annotations

import inspect
import io
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .checks import check_images

__all__ = ["to_numpy_image", "amplify", "image_grid", "accuracy_curves", "prediction_panel", "fig_to_png",
           "show_code", "oblivious_vs_adaptive"]


def to_numpy_image(image: Tensor) -> np.ndarray:
    """A C×H×W tensor in [0, 1] as an H×W (grey) or H×W×3 (colour) NumPy array for ``imshow``."""
    if image.ndim != 3:
        raise ValueError(f"image: expected a C×H×W tensor, got shape {tuple(image.shape)}")
    array = image.detach().float().cpu().numpy()
    return array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))


def amplify(delta: Tensor, scale: float | None = None) -> Tensor:
    """Map a perturbation to [0, 1] for display: grey 0.5 is zero, full black/white is ±``scale``.

    Args:
        delta: ``x_adv - x``, any shape, values in [-1, 1].
        scale: the magnitude shown as full contrast (default: the largest absolute value, so the
            perturbation's pattern is visible whatever its size; 0 stays flat grey).

    Returns:
        A tensor of ``delta``'s shape in [0, 1].
    """
    if not isinstance(delta, Tensor):
        raise ValueError(f"delta: expected a torch.Tensor, got {type(delta).__name__}")
    peak = float(delta.abs().max()) if scale is None else float(scale)
    if peak <= 0:
        return torch.full_like(delta, 0.5)
    return (0.5 + 0.5 * delta / peak).clamp(0, 1)


def _show(ax, image: Tensor) -> None:
    array = to_numpy_image(image)
    ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(
    images: Tensor | Sequence[Sequence[Tensor]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell_size: float = 1.4,
) -> Figure:
    """A grid of images with optional row and column labels.

    Args:
        images: an R×C×channels×H×W tensor, or rows of C×H×W tensors (all rows the same length).
        row_labels: one label per row (shown on the left).
        col_labels: one label per column (shown on top).
        title: a figure title.
        cell_size: inches per image.
    """
    rows = [list(r) for r in images]
    if not rows or not rows[0]:
        raise ValueError("images: expected at least one row with at least one image")
    n_rows, n_cols = len(rows), len(rows[0])
    if any(len(r) != n_cols for r in rows):
        raise ValueError(f"images: every row must hold {n_cols} images, got lengths {[len(r) for r in rows]}")
    for i, row in enumerate(rows):
        check_images(torch.stack([im.detach().float() for im in row]), name=f"images row {i}")
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"row_labels: expected {n_rows} labels, got {len(row_labels)}")
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f"col_labels: expected {n_cols} labels, got {len(col_labels)}")
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_size * n_cols + 0.8, cell_size * n_rows + 0.4),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            _show(axes[i][j], image)
            if i == 0 and col_labels is not None:
                axes[i][j].set_title(col_labels[j], fontsize=9)
            if j == 0 and row_labels is not None:
                axes[i][j].set_ylabel(row_labels[i], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def accuracy_curves(
    frame: pd.DataFrame,
    x: str = "eps",
    y: str = "value",
    hue: str = "attack",
    panel: str | None = None,
    ylabel: str = "accuracy",
    xlabel: str = "ε (on the [0, 1] scale)",
    title: str | None = None,
) -> Figure:
    """Lines of ``y`` against ``x``, one line per value of ``hue``, one panel per value of ``panel``.

    Typically a slice of a results table: accuracy against ε for each attack (and, with ``panel``, one
    subplot per dataset).
    """
    missing = [c for c in (x, y, hue, panel) if c is not None and c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing columns {missing}; it has {list(frame.columns)}")
    if frame.empty:
        raise ValueError("frame: no rows to plot")
    panels = list(dict.fromkeys(frame[panel])) if panel else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], panels):
        part = frame if key is None else frame[frame[panel] == key]
        for label, group in part.groupby(hue, sort=False):
            group = group.sort_values(x)
            ax.plot(group[x], group[y], marker="o", markersize=3, label=str(label))
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if key is not None:
            ax.set_title(str(key))
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def prediction_panel(
    columns: Sequence[tuple[str, Tensor]],
    probs: Sequence[tuple[str, Tensor]],
    class_names: Sequence[str],
    true_label: int | None = None,
    k: int = 3,
    title: str | None = None,
) -> Figure:
    """Images side by side, then the classifier's top-``k`` predictions for some of them.

    Args:
        columns: ``(title, C×H×W image)`` pairs, e.g. clean, adversarial, amplified perturbation.
        probs: ``(title, class-probability vector)`` pairs, one bar chart each.
        class_names: names of the classes, indexed by label.
        true_label: highlights the true class in the bar charts.
        k: how many classes each bar chart shows.
        title: a figure title.
    """
    n = len(columns) + len(probs)
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.1), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * len(columns) + [1.25] * len(probs)})
    for ax, (name, image) in zip(axes[0], columns):
        _show(ax, image)
        ax.set_title(name, fontsize=9)
    for ax, (name, p) in zip(axes[0][len(columns):], probs):
        values, labels = p.detach().cpu().float().topk(k)
        colours = ["tab:green" if int(c) == true_label else "tab:red" for c in labels]
        ax.barh(range(k)[::-1], values.numpy(), color=colours)
        ax.set_yticks(range(k)[::-1], [str(class_names[int(c)])[:10] for c in labels], fontsize=8)
        ax.set_xlim(0, 1)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig_to_png(fig: Figure, dpi: int = 72) -> bytes:
    """Render ``fig`` to PNG bytes and close it (for widgets and precomputed frames)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def show_code(obj: object) -> None:
    """Display the source of a library function or class in a notebook (the book shows a method's core step
    where it teaches it, d2l style, rather than only calling it)."""
    from IPython.display import Code, display

    display(Code(inspect.getsource(obj), language="python"))


def oblivious_vs_adaptive(table: pd.DataFrame, title: str = "") -> Figure:
    """One line per defense from its worst-case accuracy (dot) to its oblivious accuracy (ring): the part
    of the papers' number that an adaptive attacker takes away. ``table`` has columns ``defense``,
    ``oblivious`` and ``worst`` (as :func:`purify_lib.leaderboard.leaderboard_table` returns)."""
    t = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(t) + 1.0))
    ys = np.arange(len(t))
    ax.hlines(ys, t["worst"], t["oblivious"], color="0.7", lw=2)
    ax.scatter(t["oblivious"], ys, facecolors="none", edgecolors="C0", label="oblivious (papers' setting)",
               zorder=3)
    ax.scatter(t["worst"], ys, color="C3", label="adaptive (worst case)", zorder=3)
    ax.set_yticks(ys, t["defense"])
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("accuracy")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title(title)
    fig.tight_layout()
    plt.close(fig)
    return fig
