"""Run profiles: the one place that says what ``smoke``, ``quick``, ``full`` and ``paper`` mean.

- ``smoke``: CI on a CPU. Seconds per chapter; only proves the code runs. Numbers are meaningless.
- ``quick``: a 2-core laptop CPU. Minutes per chapter; meaningful MNIST numbers on subsets.
- ``full``: the complete MNIST and the papers' architectures, each model trained once on the CPU
  (``make weights PROFILE=full``) and its weights shipped (:mod:`purify_lib.weights`). Chapters at ``full``
  load what is shipped; a model not shipped yet is trained through its recipe, for hours.
- ``paper``: a GPU. The papers' data sizes, epochs and hyper-parameters.

``datasets`` names the chapters' dataset keys; each chapter maps them to what exists offline: ``cifar10``
trains on ``cifar10_jpeg`` (the complete CIFAR-10, JPEG q75) and is tested on it or on ``cifar10_exact`` (the
lossless subset, for image-quality metrics); ``gtsrb`` has the full test split and a third of the training
split. Datasets the papers use that are not available offline (CelebA, ImageNet, the full CIFAR-100) are
skipped, and the chapter says so.

Chapters read the profile from their papermill ``parameters`` cell (default: ``PURIFY_PROFILE``,
else ``quick``). How each model is trained at a profile lives in its recipe (:mod:`purify_lib.recipes`);
the evaluation sizes that differ by profile go through :meth:`Profile.pick`, so the values sit side by side
where a reader can see them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

PROFILE_NAMES = ("smoke", "quick", "full", "paper")


@dataclass(frozen=True)
class Profile:
    """What a run profile means: the few knobs every chapter shares. Chapter-specific sizes go through
    :meth:`pick` in the chapter, and the chapter records what it used (``Results.record_settings``)."""

    name: str
    datasets: tuple[str, ...]
    eval_batch_size: int
    restarts: int
    attack_steps_scale: float

    def pick(self, smoke: T, quick: T, paper: T, full: T | None = None) -> T:
        """Return the value that belongs to this profile (``full`` defaults to ``paper``'s: the full-scale
        evaluation is the paper's where the CPU affords it)."""
        return {"smoke": smoke, "quick": quick, "paper": paper,
                "full": paper if full is None else full}[self.name]

    def steps(self, paper_steps: int) -> int:
        """Scale a paper's iteration count down for cheaper profiles (never below 1)."""
        return max(1, round(paper_steps * self.attack_steps_scale))


PROFILES: dict[str, Profile] = {
    # smoke runs every dataset the paper profile runs, at a few dozen images: a paper run on a GPU must never
    # reach code that no test executed
    "smoke": Profile("smoke", datasets=("mnist", "cifar10", "gtsrb"), eval_batch_size=64, restarts=1,
                     attack_steps_scale=0.1),
    "quick": Profile("quick", datasets=("mnist",), eval_batch_size=500, restarts=1, attack_steps_scale=1.0),
    "full": Profile("full", datasets=("mnist",), eval_batch_size=500, restarts=1, attack_steps_scale=1.0),
    "paper": Profile("paper", datasets=("mnist", "cifar10", "gtsrb"), eval_batch_size=1_000, restarts=5,
                     attack_steps_scale=1.0),
}


def get_profile(name: str | None = None) -> Profile:
    """Look a profile up by name; ``None`` reads ``PURIFY_PROFILE`` and defaults to ``quick``."""
    name = name or os.environ.get("PURIFY_PROFILE") or "quick"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: expected one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]
