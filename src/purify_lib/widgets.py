"""Interactive explorers that also work in the built book, where no kernel runs.

:func:`frame_explorer` is the generic piece: give it a ``render`` callback and a grid of control values.

- **Static mode** (the built book, nbval, papermill): every frame of the grid is rendered once, up front, into
  nested :class:`ipywidgets.Stack` widgets (one nesting level per control), and each control's ``index`` is
  linked client-side (:func:`ipywidgets.jslink`) to the ``selected_index`` of every stack at its level.
  Moving a slider in the browser then switches frames with no kernel at all; the frames live in the saved
  widget state, so keep the grid moderate (tens of frames, not thousands).
- **Live mode** (JupyterLab): the controls drive a single output widget that ``render`` recomputes on every
  change, on the real model.

:func:`attack_explorer` builds on it: pick an image, move ε (and the step count of an iterative attack), see
the clean image, the adversarial image, the amplified perturbation and the classifier's top-3 predictions
(and, with a purifier, the purified image and its predictions).
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import torch
from torch import Tensor, nn

from . import plots
from .checks import check_images, check_labels
from .runtime import progress

__all__ = ["interactive_kernel", "frame_explorer", "attack_explorer"]

Frame = bytes | str


def interactive_kernel() -> bool:
    """Whether a person is driving this kernel (JupyterLab/Notebook), so live recomputation can answer.

    ``PURIFY_WIDGETS=live`` or ``=static`` forces the answer. Otherwise: an IPython kernel started by a
    Jupyter server (which sets ``JPY_SESSION_NAME``) is interactive; a batch execution (the book build,
    papermill, nbval) or plain Python is not.
    """
    forced = os.environ.get("PURIFY_WIDGETS", "").strip().lower()
    if forced in ("live", "static"):
        return forced == "live"
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel") and bool(os.environ.get("JPY_SESSION_NAME"))


def _options(name: str, values: Sequence[Any]) -> list[tuple[str, Any]]:
    """``(label, value)`` pairs: values may already be pairs, else they are labelled with ``str``."""
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
        raise ValueError(f"controls[{name!r}]: expected a non-empty list of values, got {values!r}")
    pairs = [v if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) else (_label(v), v)
             for v in values]
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"controls[{name!r}]: labels must be distinct, got {labels}")
    return pairs


def _label(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _control(name: str, options: list[tuple[str, Any]], slider: bool | None) -> widgets.Widget:
    """A slider (default for numbers) or a dropdown (default for anything else)."""
    if slider is None:
        slider = all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in options)
    style = {"description_width": "initial"}
    if slider and len(options) > 1:
        return widgets.SelectionSlider(options=options, index=0, description=name, continuous_update=True,
                                       style=style, layout=widgets.Layout(width="420px"))
    return widgets.Dropdown(options=options, index=0, description=name, style=style)


def _frame_widget(frame: Frame) -> widgets.Widget:
    if isinstance(frame, bytes):
        return widgets.Image(value=frame, format="png")
    if isinstance(frame, str):
        return widgets.HTML(value=frame)
    raise ValueError(f"render: expected PNG bytes or an HTML string, got {type(frame).__name__}")


def frame_explorer(
    render: Callable[..., Frame],
    controls: Mapping[str, Sequence[Any]],
    live: bool = True,
    title: str | None = None,
    sliders: Sequence[str] | None = None,
) -> widgets.VBox:
    """Controls over a grid of values, showing ``render(**values)``: PNG bytes or an HTML string.

    Args:
        render: called with one keyword per control (its current value); returns PNG bytes (shown as an
            image, e.g. from :func:`purify_lib.plots.fig_to_png`) or an HTML string (e.g. a table).
        controls: control name → the values it can take, in order (numbers become a slider, anything else a
            dropdown). A value may be a ``(label, value)`` pair to choose its label.
        live: recompute on every change when a person drives the kernel (see :func:`interactive_kernel`);
            ``False`` always precomputes.
        title: an HTML heading shown above the controls.
        sliders: the controls to show as sliders (the others become dropdowns); default: those whose
            values are all numbers.

    Returns:
        A ``VBox`` of the controls and the display. It carries ``controls`` (name → control widget),
        ``live`` (bool), and in static mode ``stacks`` (one list of Stacks per control, outermost first),
        ``links`` (the jslinks) and ``frames`` (values tuple → frame widget).
    """
    if not callable(render):
        raise ValueError(f"render: expected a callable, got {type(render).__name__}")
    if not controls:
        raise ValueError("controls: expected at least one control")
    names = list(controls)
    options = {name: _options(name, controls[name]) for name in names}
    if sliders is not None and set(sliders) - set(names):
        raise ValueError(f"sliders: unknown controls {sorted(set(sliders) - set(names))}; "
                         f"controls are {names}")
    ctrl = {name: _control(name, options[name], None if sliders is None else name in sliders)
            for name in names}
    header = [widgets.HTML(f"<b>{title}</b>")] if title else []
    row = widgets.HBox([ctrl[n] for n in names], layout=widgets.Layout(flex_flow="row wrap"))

    if live and interactive_kernel():
        display = _frame_widget(render(**{n: options[n][0][1] for n in names}))
        holder = widgets.Box([display])

        def update(_change: Any = None) -> None:
            frame = render(**{n: ctrl[n].value for n in names})
            current = holder.children[0]
            if isinstance(frame, bytes) and isinstance(current, widgets.Image):
                current.value = frame
            elif isinstance(frame, str) and isinstance(current, widgets.HTML):
                current.value = frame
            else:
                holder.children = (_frame_widget(frame),)

        for widget in ctrl.values():
            widget.observe(update, names="value")
        box = widgets.VBox([*header, row, holder])
        box.controls, box.live = ctrl, True
        return box

    stacks: list[list[widgets.Stack]] = [[] for _ in names]
    links: list[widgets.Widget] = []
    frames: dict[tuple, widgets.Widget] = {}
    grid = list(itertools.product(*(range(len(options[n])) for n in names)))
    bar = progress(total=len(grid), desc="rendering frames", leave=False)

    def build(level: int, chosen: tuple[int, ...]) -> widgets.Widget:
        if level == len(names):
            values = {n: options[n][i][1] for n, i in zip(names, chosen)}
            frame = _frame_widget(render(**values))
            frames[tuple(values[n] for n in names)] = frame
            bar.update()
            return frame
        stack = widgets.Stack([build(level + 1, chosen + (i,)) for i in range(len(options[names[level]]))],
                              selected_index=0)
        stacks[level].append(stack)
        links.append(widgets.jslink((ctrl[names[level]], "index"), (stack, "selected_index")))
        return stack

    root = build(0, ())
    bar.close()
    box = widgets.VBox([*header, row, root])
    box.controls, box.live, box.stacks, box.links, box.frames = ctrl, False, stacks, links, frames
    return box


@torch.no_grad()
def _probs(model: nn.Module, x: Tensor) -> Tensor:
    return torch.softmax(model(x), dim=1)[0].cpu()


def attack_explorer(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attack: Callable[..., Tensor],
    eps: Sequence[float],
    steps: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    purifier: nn.Module | None = None,
    live: bool = True,
    title: str | None = None,
    **attack_params: Any,
) -> widgets.VBox:
    """An image picker and an ε slider (and a steps slider for iterative attacks) over one attack.

    Each frame shows the clean image, the adversarial image (and, with ``purifier``, the purified one), the
    perturbation amplified to full contrast, and the top-3 predictions of ``model`` on each input.

    Args:
        model: the attacked classifier (logits).
        images, labels: the images to pick from (N×C×H×W in [0, 1]) and their labels.
        attack: ``attack(model, x, y, eps=..., [steps=...], **attack_params) -> x_adv``.
        eps: the ε values of the slider ([0, 1] scale).
        steps: the step counts of the second slider, or ``None`` for a one-step attack.
        class_names: labels of the classes (default: the class indices).
        purifier: an optional defense applied to the adversarial image before classification (oblivious
            setting: the attack itself does not see it unless ``model`` already includes it).
        live, title: as in :func:`frame_explorer`.
        attack_params: further keyword arguments of ``attack`` (e.g. ``alpha``).
    """
    check_images(images, "images")
    check_labels(labels, images.shape[0], "labels")
    device = next(model.parameters()).device
    names = list(class_names) if class_names is not None else [str(i) for i in range(10_000)]
    picks = [(f"#{i} ({names[int(labels[i])]})", i) for i in range(images.shape[0])]
    controls: dict[str, Sequence[Any]] = {"image": picks, "ε": [(f"{e:.3g} ({e * 255:.3g}/255)", float(e))
                                                                for e in eps]}
    if steps is not None:
        controls["steps"] = [int(s) for s in steps]

    def render(image: int, **values: Any) -> bytes:
        x = images[image:image + 1].to(device)
        y = labels[image:image + 1].to(device)
        params = dict(attack_params, eps=values["ε"])
        if steps is not None:
            params["steps"] = values["steps"]
        x_adv = attack(model, x, y, **params).detach() if values["ε"] > 0 else x.clone()
        delta = (x_adv - x)[0].cpu()
        columns = [("clean", x[0].cpu()), ("adversarial", x_adv[0].cpu())]
        probs = [("on clean", _probs(model, x)), ("on adversarial", _probs(model, x_adv))]
        if purifier is not None:
            with torch.no_grad():
                x_pur = purifier(x_adv).clamp(0, 1)
            columns.append(("purified", x_pur[0].cpu()))
            probs.append(("on purified", _probs(model, x_pur)))
        linf = float(delta.abs().max())
        columns.append((f"δ ×{0.5 / linf:.3g}" if linf > 0 else "δ = 0", plots.amplify(delta)))
        caption = f"ε = {values['ε']:.3g}" + (f", {values['steps']} steps" if steps is not None else "") + \
            f": ‖δ‖∞ = {linf:.3g}, ‖δ‖₂ = {float(delta.norm()):.3g}"
        fig = plots.prediction_panel(columns, probs, names, true_label=int(labels[image]), title=caption)
        return plots.fig_to_png(fig)

    was_training = model.training
    model.eval()
    try:
        return frame_explorer(render, controls, live=live, title=title,
                              sliders=[n for n in controls if n != "image"])
    finally:
        model.train(was_training)
