"""Stale-chapter detection: a chapter is re-executed exactly when something it depends on changed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stale():
    spec = importlib.util.spec_from_file_location("stale_chapters", ROOT / "scripts" / "stale_chapters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stale_after(stale, monkeypatch, changed: Path, edit) -> list[str]:
    """The chapters whose fingerprint moves when ``changed`` is edited by ``edit(bytes) -> bytes``."""
    before = {nb.stem: stale.fingerprint(nb, "quick") for nb in stale.chapters()}
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: edit(real(self)) if self == changed else real(self))
    return [nb.stem for nb in stale.chapters() if stale.fingerprint(nb, "quick") != before[nb.stem]]


def test_a_knob_of_chapter_2s_recipe_marks_chapters_2_and_7_stale(stale, monkeypatch):
    recipe = ROOT / "src" / "purify_lib" / "recipes" / "apegan.py"
    assert b"n_train_gan: int | None = 10_000" in recipe.read_bytes()
    moved = stale_after(stale, monkeypatch, recipe, lambda b: b.replace(b"n_train_gan: int | None = 10_000",
                                                                       b"n_train_gan: int | None = 12_000"))
    assert moved == ["02_apegan", "07_leaderboard", "08_checklist"]  # the checklist reads every chapter


def test_the_training_engine_marks_every_chapter_stale(stale, monkeypatch):
    engine = ROOT / "src" / "purify_lib" / "train.py"
    moved = stale_after(stale, monkeypatch, engine, lambda b: b + b"\n# changed\n")
    assert moved == [nb.stem for nb in stale.chapters()]
