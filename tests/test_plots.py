"""Plot helpers: shapes, labels and validation."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from purify_lib import plots


def test_amplify_maps_zero_to_grey_and_peak_to_extremes():
    delta = torch.tensor([[-0.1, 0.0, 0.05]])
    out = plots.amplify(delta)
    assert torch.allclose(out, torch.tensor([[0.0, 0.5, 0.75]]))
    assert torch.equal(plots.amplify(torch.zeros(2, 2)), torch.full((2, 2), 0.5))


def test_image_grid_labels_and_checks():
    fig = plots.image_grid([[torch.rand(3, 8, 8)] * 3] * 2, row_labels=["a", "b"], col_labels=["x", "y", "z"])
    axes = fig.axes
    assert len(axes) == 6 and axes[0].get_title() == "x" and axes[3].get_ylabel() == "b"
    with pytest.raises(ValueError, match="values in"):
        plots.image_grid([[torch.full((1, 4, 4), 2.0)]])
    with pytest.raises(ValueError, match="row_labels"):
        plots.image_grid([[torch.rand(1, 4, 4)]], row_labels=["a", "b"])


def test_accuracy_curves_one_line_per_attack_and_panel():
    frame = pd.DataFrame({"dataset": ["m"] * 4 + ["c"] * 2, "attack": ["A", "A", "B", "B", "A", "A"],
                          "eps": [0, .1, 0, .1, 0, .1], "value": [1, .5, 1, .2, .9, .1]})
    fig = plots.accuracy_curves(frame, panel="dataset")
    assert [len(ax.lines) for ax in fig.axes] == [2, 1]
    with pytest.raises(ValueError, match="missing columns"):
        plots.accuracy_curves(frame.drop(columns="attack"))
