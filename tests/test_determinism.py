"""A chapter gives the same numbers on a cold run (training its models) and on a cached one (loading them):
every attack cell seeds first, so the training that a cold run does cannot move the attacks' random draws.
Chapter 1 stands for every chapter here: the cheapest one that both trains and attacks (chapter 2 took three
times as long in CI, which has 15 minutes for everything)."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from purify_lib import regenerate

ROOT = Path(__file__).resolve().parents[1]


def test_cold_and_cached_runs_of_a_chapter_agree(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    cache, weights = tmp_path / "cache", tmp_path / "weights"
    weights.mkdir()  # no shipped weights: the cold run trains
    monkeypatch.setenv("PURIFY_CACHE", str(cache))
    monkeypatch.setenv("PURIFY_WEIGHTS", str(weights))
    kernel = regenerate._kernel_name(tmp_path / "kernel")
    frames = []
    for run in ("cold", "cached"):
        monkeypatch.setenv("PURIFY_RESULTS", str(tmp_path / run))
        regenerate.run_chapter(ROOT / "book" / "01_attacks.ipynb", "smoke", tmp_path / run / "nb", kernel)
        frames.append(pd.read_csv(tmp_path / run / "smoke" / "01_attacks.csv"))
    cold, cached = frames
    assert os.listdir(cache)  # the cold run trained and cached its models
    timing = cold["metric"].str.contains("seconds")  # wall-clock rows differ by nature
    pd.testing.assert_frame_equal(cold[~timing].reset_index(drop=True),
                                  cached[~timing].reset_index(drop=True))
