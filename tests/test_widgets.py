"""The frame explorer: nested Stacks linked client-side to the controls, one frame per grid point."""
from __future__ import annotations

import io
import ipywidgets as widgets
import pytest
import torch
from ipywidgets.widgets.widget_link import Link
from torch import nn

from purify_lib import plots
from purify_lib import widgets as W


@pytest.fixture(autouse=True)
def static_mode(monkeypatch):
    monkeypatch.setenv("PURIFY_WIDGETS", "static")


def render(image: int, eps: float, steps: int) -> str:
    return f"<p>{image}|{eps}|{steps}</p>"


CONTROLS = {"image": [0, 1], "eps": [0.0, 0.1, 0.2], "steps": [1, 5]}


def test_frame_count_and_nesting():
    box = W.frame_explorer(render, CONTROLS)
    assert not box.live
    assert len(box.frames) == 2 * 3 * 2
    assert [len(level) for level in box.stacks] == [1, 2, 6]
    root = box.children[-1]
    assert root is box.stacks[0][0] and isinstance(root, widgets.Stack)
    # walking the stacks by index reaches the frame rendered for exactly those values
    for i, image in enumerate(CONTROLS["image"]):
        for j, eps in enumerate(CONTROLS["eps"]):
            for k, steps in enumerate(CONTROLS["steps"]):
                frame = root.children[i].children[j].children[k]
                assert frame.value == render(image, eps, steps)
                assert box.frames[(image, eps, steps)] is frame


def test_controls_link_to_their_level():
    box = W.frame_explorer(render, CONTROLS)
    assert len(box.links) == sum(len(level) for level in box.stacks)
    assert all(isinstance(link, Link) for link in box.links)
    for level, name in enumerate(CONTROLS):
        linked = {id(link.target[0]) for link in box.links if link.source[0] is box.controls[name]}
        assert linked == {id(stack) for stack in box.stacks[level]}
        assert all(link.source[1] == "index" and link.target[1] == "selected_index"
                   for link in box.links if link.source[0] is box.controls[name])
        assert len(box.controls[name].options) == len(box.stacks[level][0].children)


def test_control_kinds_and_png_frames():
    png = plots.fig_to_png(plots.image_grid([[torch.zeros(1, 4, 4)]]))
    box = W.frame_explorer(lambda kind, eps: png, {"kind": ["a", "b"], "eps": [0.1, 0.2]})
    assert isinstance(box.controls["kind"], widgets.Dropdown)
    assert isinstance(box.controls["eps"], widgets.SelectionSlider)
    assert all(isinstance(f, widgets.Image) and f.value == png for f in box.frames.values())
    chosen = W.frame_explorer(render, CONTROLS, sliders=["eps"])
    assert isinstance(chosen.controls["image"], widgets.Dropdown)
    assert isinstance(chosen.controls["steps"], widgets.Dropdown)
    assert isinstance(chosen.controls["eps"], widgets.SelectionSlider)


def test_live_mode_recomputes(monkeypatch):
    monkeypatch.setenv("PURIFY_WIDGETS", "live")
    calls = []
    box = W.frame_explorer(lambda a, b: calls.append((a, b)) or f"{a}{b}", {"a": [1, 2], "b": ["x", "y"]})
    assert box.live and not hasattr(box, "stacks") and calls == [(1, "x")]
    box.controls["b"].value = "y"
    box.controls["a"].value = 2
    assert calls[-1] == (2, "y") and box.children[-1].children[0].value == "2y"


def test_bad_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        W.frame_explorer(render, {"image": []})
    with pytest.raises(ValueError, match="distinct"):
        W.frame_explorer(render, {"image": [("a", 1), ("a", 2)]})
    with pytest.raises(ValueError, match="PNG bytes or an HTML string"):
        W.frame_explorer(lambda a: 3, {"a": [1]})


def test_attack_explorer_frames():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    def shift(m, x, y, eps, steps):
        return (x + eps * steps / 10).clamp(0, 1)

    box = W.attack_explorer(model, torch.full((2, 1, 4, 4), 0.5), torch.tensor([0, 2]), shift,
                            eps=[0.0, 0.1], steps=[1, 5], class_names=["a", "b", "c"])
    assert len(box.frames) == 2 * 2 * 2
    assert all(f.value[:8] == b"\x89PNG\r\n\x1a\n" for f in box.frames.values())
    assert box.frames[(0, 0.0, 1)].value != box.frames[(0, 0.1, 5)].value
    assert isinstance(box.controls["image"], widgets.Dropdown)
    assert isinstance(box.controls["ε"], widgets.SelectionSlider)


def test_progress_bars_obey_tqdm_disable_even_in_notebooks(monkeypatch):
    # tqdm's notebook bar ignores TQDM_DISABLE: the library's bars must not
    from purify_lib.runtime import progress
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress(range(3)).disable
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not progress(range(3), file=io.StringIO()).disable
