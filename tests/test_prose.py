"""Prose that cannot drift: a chapter's Markdown may not type a result.

A result-like number (a percentage, or a decimal between 0 and 1 with two or more digits) in a Markdown cell
must be a published figure, marked as such in its sentence (the paper, a table or figure of it, a citation,
the authors' code), or a setting: inside math, or right after the name of what it sets (ε, a step, a rate, a
weight, a threshold, a share of steps, ...). Every number a run measures reaches the page through code
(computed Markdown or tables), so it cannot disagree with the results file.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
NUMBER = re.compile(r"(?<![\w.$/^])(\d{1,3}(?:\.\d+)?\s?%|0\.\d{2,})(?![\w/])")
MATH = re.compile(r"\$[^$]*\$")
SENTENCE = re.compile(r"(?<!Fig\.)(?<!e\.g\.)(?<!i\.e\.)(?<!al\.)(?<=[.!?])\s+|\n\n|\n-|\n\|")
PUBLISHED = re.compile(r"paper|published|\btables? [IVX\d]|\bfig\.|\{cite\}|the text|authors'|their code|"
                       r"\bport\b|tensorflow code|\bART\b", re.IGNORECASE)
# a setting: the number follows the name of what it sets (a list of values counts as one), or a unit
# conversion, or it names an operating point or an interval's level
SETTING = re.compile(r"(ε|λ|γ|θ|β|σ|α|ξ|\bsteps?|\brate|momentum|overshoot|confidence|multiplier|weight|"
                     r"\bGAN|decay|threshold|flags|rejects|\bfirst|\blast|at most|≥|≤|\bat|\bbar is|"
                     r"\buse|SGD|Adam|\d+/\d+\s*≈|\d+\s*×|\{)"
                     r"[\s=:≈({-]*((\d[\d.]*|\d+/\d+)\s*[,/]\s*)*$")
LEVEL = re.compile(r"^\s*(-?FPR|interval|bootstrap|of the (steps|inputs|pixels|clean|first))")


def unmarked(markdown: str) -> list[str]:
    """The result-like numbers of ``markdown`` that are neither a marked published figure nor a setting."""
    found = []
    for sentence in SENTENCE.split(MATH.sub("$math$", markdown)):
        if PUBLISHED.search(sentence):
            continue
        for m in NUMBER.finditer(sentence):
            if not (SETTING.search(sentence[:m.start()]) or LEVEL.match(sentence[m.end():])):
                found.append(f"{m.group(0)!r} in: {sentence.strip()[:120]}")
    return found


def markdown_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("notebook", [*CHAPTERS, ROOT / "book" / "intro.md"], ids=lambda p: p.stem)
def test_no_chapter_types_a_result(notebook):
    cells = [notebook.read_text()] if notebook.suffix == ".md" else markdown_cells(notebook)
    found = [hit for cell in cells for hit in unmarked(cell)]
    assert not found, "result-like numbers typed in Markdown (read them from the run):\n" + "\n".join(found)


def test_the_scan_catches_a_planted_result_and_passes_settings_and_citations():
    assert unmarked("On the leaderboard AE-GAN+rs keeps 0.57 of the images.")
    assert unmarked("Adversarial training holds 88% of its accuracy.")
    assert not unmarked("The paper reports 0.882 against 0.144 undefended.")
    assert not unmarked("PGD with step 0.01 and ε = 0.3, Adam at $2\\cdot10^{-4}$, β = (0.5, 0.999).")
    assert not unmarked("The threshold flags 5% of clean validation images, with a 95% interval.")
    assert not unmarked("15/255 ≈ 0.059 on our scale; ε ramps up over the first 40% of the steps.")
