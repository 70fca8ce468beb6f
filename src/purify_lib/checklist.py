"""The evaluation checklist: per defense of the leaderboard, which checks of an honest evaluation were run.

After Carlini et al. ("On evaluating adversarial robustness", 2019): white-box attacks through the whole
system, BPDA where the gradient is masked, EOT where the defense is random, the latent attack where it
projects onto a generator's range, the detector-aware attack where it rejects inputs, AutoAttack, attacks
calibrated on the undefended model, attacks that have converged, and every number with its sample size and
interval. Everything is read from the results files (chapter 7's table and provenance, and each chapter's
calibration table), never typed: a check that did not run shows as an open box with the reason.
"""
from __future__ import annotations

import pandas as pd

from . import evaluate, results
from .leaderboard import converged_rows

__all__ = ["ITEMS", "DONE", "MISSING", "NOT_APPLICABLE", "checklist", "boxes", "open_items"]

ITEMS = ("white-box", "BPDA", "EOT", "latent", "detector-aware", "AutoAttack", "calibration", "convergence",
         "n and interval")
DONE, MISSING, NOT_APPLICABLE = "☑", "☐", "—"


def _mark(applies: bool, done: bool, detail: str = "", why_not: str = "", missing: str = "not run") -> str:
    if not applies:
        return f"{NOT_APPLICABLE} {why_not}".strip()
    return f"{DONE} {detail}".strip() if done else f"{MISSING} {missing}"


def _calibration(chapter: str, profile: str, board: pd.DataFrame) -> tuple[bool, str]:
    """Whether the board's PGD, which sets the headline, passed calibration (or fell short only where
    APGD-CE at the same budget agrees: :func:`purify_lib.evaluate.calibration_status`); and what the chapter's
    own calibration table says (its uncalibrated attacks are marked in the chapter, and listed here)."""
    rows = board[board["table"] == "calibration"].drop_duplicates("attack").set_index("attack")
    if rows.empty:
        return False, "the board has no calibration table"
    failed, limited = [], []
    for attack in (a for a in rows.index if a.startswith("pgd ")):  # beside each, APGD-CE at the same budget
        ref = rows.loc[r] if (r := attack.replace("pgd ", "apgd_ce ", 1)) in rows.index else None
        status = evaluate.calibration_status(rows.loc[attack, "value"], int(rows.loc[attack, "n"]),
                                             *((ref["value"], int(ref["n"])) if ref is not None else ()))
        if status == evaluate.WEAK:
            failed.append(attack)
        elif status == evaluate.BUDGET_LIMITED:
            limited.append(attack)
    found = results.load(chapter, profile)
    own = found[0][found[0]["table"] == "calibration"] if found is not None else pd.DataFrame()
    weak = list(dict.fromkeys(own[own["value"] < evaluate.CALIBRATED]["attack"])) if len(own) else []
    chapter_note = (f"{chapter} has no calibration table" if own.empty
                    else f"{chapter}: {', '.join(weak)} below 99% (marked there)" if weak
                    else f"{chapter}: all pass")
    if failed:
        return False, f"board: {', '.join(failed)} below 99%; {chapter_note}"
    budget = f" ({', '.join(limited)}: budget-limited, APGD-CE agrees)" if limited else ""
    return True, f"board's PGD{budget}; {chapter_note}"


def checklist(profile: str) -> pd.DataFrame:
    """One row per defense of the leaderboard at ``profile``, one column per item of :data:`ITEMS`.

    Each cell is :data:`DONE` with a detail, :data:`MISSING` with the reason, or :data:`NOT_APPLICABLE` with
    why the item does not fit the defense. Needs ``results/<profile>/07_leaderboard.csv`` and its provenance
    (the defenses' properties: purifier, masked gradient, randomness, generator, detector, cost).
    """
    found = results.load("07_leaderboard", profile)
    if found is None:
        raise FileNotFoundError(f"results/{profile}/07_leaderboard.csv: run chapter 7 at profile {profile} "
                                "first (make regenerate CHAPTERS=07_leaderboard PROFILE=...)")
    frame, provenance = found
    settings = provenance.get("settings", {})
    if "defenses" not in settings or "headline_eps" not in settings:
        raise ValueError(f"results/{profile}/07_leaderboard.provenance.json records no defense properties: "
                         "regenerate chapter 7 with this version of the book")
    eps = float(settings["headline_eps"])
    board = frame[frame["table"] == "leaderboard"]
    rows = []
    for slug, p in settings["defenses"].items():
        f = board[(board["defense"] == slug) & ((board["eps"] - eps).abs() < 1e-9)]
        ran = set(f["attack"])
        purifier, masked = p["purifier"], p["masked"]
        head = f[f["attack"] == ("worst" if "worst" in ran else "adaptive")].head(1)
        interval = len(head) == 1 and pd.notna(head["low"].iloc[0])
        sample = (f"n = {int(head['n'].iloc[0])}, [{head['low'].iloc[0]:.2f}, {head['high'].iloc[0]:.2f}]"
                  if interval else "")
        calibrated, calibration_note = _calibration(p["chapter"], profile, frame)
        settled = converged_rows(f, p["costly"])
        if not settled:
            convergence = _mark(True, False, missing="no adaptive number")
        elif settled[0]["change_points"] is not None and not settled[0]["note"]:
            change, effort = settled[0]["change_points"], f"{settled[0]['effort']:g}×"
            convergence = _mark(True, settled[0]["converged"],
                                f"{change:+.1f} points from {effort} the effort",
                                missing=f"still moved {change:+.1f} points at {effort} the effort")
        else:
            convergence = _mark(True, bool(settled[0]["converged"]), settled[0]["note"],
                                missing=settled[0]["note"])
        rows.append({
            "defense": p["name"], "slug": slug,
            "white-box": _mark(not masked, "pgd" in ran or not purifier,
                               "the classifier is the system" if not purifier else "PGD through the system",
                               why_not="gradient masked: BPDA instead"),
            "BPDA": _mark(purifier, "bpda" in ran, why_not="no purifier"),
            "EOT": _mark(p["random"], bool(ran & {"eot", "bpda_eot"}), why_not="deterministic"),
            "latent": _mark(p["generator"], "latent" in ran, why_not="no generator"),
            "detector-aware": _mark(p["detector"], "detector_aware" in ran, why_not="no detector"),
            "AutoAttack": _mark(True, "autoattack" in ran, "APGD through the system", missing=(
                "skipped: every forward pass is a search" if p["costly"] else "not run")),
            "calibration": _mark(True, calibrated, calibration_note, missing=calibration_note),
            "convergence": convergence,
            "n and interval": _mark(True, interval, sample, missing="no interval recorded"),
        })
    return pd.DataFrame(rows, columns=["defense", "slug", *ITEMS])


def boxes(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`checklist`'s table with the marks only (☑, ☐, —), one row per defense by slug: narrow enough
    to read."""
    return table.drop(columns="defense").set_index("slug").apply(lambda column: column.str.split(" ").str[0])


def open_items(table: pd.DataFrame) -> list[str]:
    """Every open box of :func:`checklist`'s table as "defense, item: reason"."""
    return [f"{row['defense']}, {item}: {row[item][len(MISSING):].strip()}"
            for _, row in table.iterrows() for item in ITEMS if row[item].startswith(MISSING)]
