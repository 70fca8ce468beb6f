"""The evaluation checklist reads every tick from results files and says why a box is open."""
from __future__ import annotations

import json

import pytest

from purify_lib import checklist
from purify_lib.profiles import get_profile
from purify_lib.results import Results

PROPS = dict(purifier=True, masked=False, random=False, generator=False, detector=False, costly=False)


def write_board(folder, monkeypatch, *, attacks, calibration=1.0, convergence=None, chapter_calibration=True,
                reference=None):
    monkeypatch.setenv("PURIFY_RESULTS", str(folder))
    board = Results("07_leaderboard", get_profile("smoke"))
    row = dict(dataset="mnist", classifier="lenet", eps=0.3, n=100)
    for attack, value in attacks.items():
        board.add(table="leaderboard", defense="p", attack=attack, threat="adaptive", metric="accuracy",
                  value=value, **row)
    board.add(table="calibration", defense="none", attack="pgd L∞ 0.3", threat="whitebox",
              metric="success_rate", value=calibration, **row)
    if reference is not None:  # APGD-CE at the same budget
        board.add(table="calibration", defense="none", attack="apgd_ce L∞ 0.3", threat="whitebox",
                  metric="success_rate", value=reference, **row)
    if convergence is not None:  # the board's number before the last doubling of the effort, and that effort
        previous = "worst_previous" if "worst" in attacks else "adaptive_previous"
        board.add(table="leaderboard", defense="p", attack=previous, threat="adaptive",
                  metric="accuracy", value=convergence, **row)
        board.add(table="leaderboard", defense="p", attack="effort", threat="adaptive", metric="multiplier",
                  value=4.0, **row)
    board.record_settings(headline_eps=0.3, defenses={"p": dict(PROPS, name="Purifier P", chapter="02_x")})
    board.save()
    if chapter_calibration:
        chapter = Results("02_x", get_profile("smoke"))
        chapter.add(table="calibration", defense="none", attack="fgsm", threat="whitebox",
                    metric="success_rate", value=0.995, **row)
        chapter.save()
    return checklist.checklist("smoke").set_index("defense").loc["Purifier P"]


def test_a_complete_evaluation_ticks_every_item_that_applies(tmp_path, monkeypatch):
    row = write_board(tmp_path, monkeypatch, attacks={"oblivious": 0.6, "pgd": 0.2, "bpda": 0.3,
                                                      "adaptive": 0.2, "autoattack": 0.19, "worst": 0.18},
                      convergence=0.185)
    for item in ("white-box", "BPDA", "AutoAttack", "calibration", "convergence", "n and interval"):
        assert row[item].startswith(checklist.DONE), (item, row[item])
    for item in ("EOT", "latent", "detector-aware"):
        assert row[item].startswith(checklist.NOT_APPLICABLE), (item, row[item])
    assert "n = 100" in row["n and interval"]


def test_missing_checks_show_open_boxes_with_reasons(tmp_path, monkeypatch):
    row = write_board(tmp_path, monkeypatch, attacks={"oblivious": 0.6, "adaptive": 0.5}, calibration=0.9,
                      convergence=0.6, chapter_calibration=False)
    assert row["white-box"] == f"{checklist.MISSING} not run"
    table = checklist.checklist("smoke")
    assert checklist.boxes(table).loc["p", "white-box"] == checklist.MISSING
    assert "Purifier P, white-box: not run" in checklist.open_items(table)
    assert row["AutoAttack"].startswith(checklist.MISSING)
    assert "below 99%" in row["calibration"] and "02_x has no calibration table" in row["calibration"]
    assert row["convergence"].startswith(checklist.MISSING) and "-10.0 points at 4×" in row["convergence"]


def test_a_budget_too_small_for_every_image_is_not_a_weak_attack(tmp_path, monkeypatch):
    common = dict(attacks={"oblivious": 0.6, "pgd": 0.2, "adaptive": 0.2, "worst": 0.2}, calibration=0.7,
                  convergence=0.2)
    row = write_board(tmp_path, monkeypatch, **common, reference=0.72)
    assert row["calibration"].startswith(checklist.DONE) and "budget-limited" in row["calibration"]
    row = write_board(tmp_path, monkeypatch, **common, reference=0.95)
    assert row["calibration"].startswith(checklist.MISSING) and "pgd L∞ 0.3 below 99%" in row["calibration"]


def test_checklist_needs_the_leaderboard_and_its_properties(tmp_path, monkeypatch):
    monkeypatch.setenv("PURIFY_RESULTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="07_leaderboard"):
        checklist.checklist("smoke")
    Results("07_leaderboard", get_profile("smoke")).save()
    with pytest.raises(ValueError, match="defense properties"):
        checklist.checklist("smoke")
    assert json.loads((tmp_path / "smoke" / "07_leaderboard.provenance.json").read_text())["rows"] == 0
