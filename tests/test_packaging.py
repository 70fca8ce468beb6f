"""Packaging: environment.yml agrees with pyproject.toml; the regeneration CLI finds the book's chapters."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from purify_lib import regenerate

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    version = python.split("=")[-1]
    floor = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, version.split("."))) >= tuple(map(int, floor.split(".")))
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-c constraints.txt" in pip and (ROOT / "constraints.txt").is_file()
    editable = next(line for line in pip if line.startswith("-e "))
    extras = set(editable.split("[")[1].rstrip("]").split(","))
    assert extras == {"book", "test"} <= set(_pyproject()["project"]["optional-dependencies"])


def test_console_script_points_at_regenerate_main():
    assert _pyproject()["project"]["scripts"]["purify-regenerate"] == "purify_lib.regenerate:main"
    assert callable(regenerate.main)


def test_toc_chapters_in_order_and_resolve():
    chapters = regenerate.toc_chapters(ROOT)
    assert chapters and chapters[0].name == "01_attacks.ipynb"
    assert all(p.suffix == ".ipynb" and p.is_file() for p in chapters)
    assert regenerate.resolve(ROOT, ["01_attacks"]) == [chapters[0]]
    assert regenerate.resolve(ROOT, []) == chapters
    with pytest.raises(ValueError, match="unknown chapter 'nope'"):
        regenerate.resolve(ROOT, ["nope"])


def test_cli_rejects_unknown_profile(capsys):
    with pytest.raises(SystemExit) as exit_info:
        regenerate.main(["01_attacks", "--profile", "huge"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
