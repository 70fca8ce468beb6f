"""Run profiles: the one place that says what ``smoke``, ``quick`` and ``paper`` mean.

- ``smoke``: CI on a CPU. Seconds per chapter; only proves the code runs. Numbers are meaningless.
- ``quick``: a 2-core laptop CPU. Minutes per chapter; meaningful MNIST numbers on subsets.
- ``paper``: a GPU. The papers' data sizes, epochs and hyper-parameters.

Chapters read the profile from their papermill ``parameters`` cell (default: ``PURIFY_PROFILE``,
else ``quick``). Chapter-specific knobs that differ by profile go through :meth:`Profile.pick`, so the
three values sit side by side where a reader can see them.
"""
from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

PROFILE_NAMES = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class Profile:
    """What a run profile means. ``None`` sizes mean "the whole split"."""

    name: str
    n_train: int | None
    n_val: int
    n_test: int | None
    epochs: int
    batch_size: int
    eval_batch_size: int
    attack_steps_scale: float
    restarts: int
    cw_steps: int
    datasets: tuple[str, ...]

    def pick(self, smoke: T, quick: T, paper: T) -> T:
        """Return the value that belongs to this profile."""
        return {"smoke": smoke, "quick": quick, "paper": paper}[self.name]

    def steps(self, paper_steps: int) -> int:
        """Scale a paper's iteration count down for cheaper profiles (never below 1)."""
        return max(1, round(paper_steps * self.attack_steps_scale))

    def as_dict(self) -> dict:
        """The profile as a plain dict (for provenance files)."""
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", n_train=512, n_val=128, n_test=64, epochs=1, batch_size=64,
                     eval_batch_size=64, attack_steps_scale=0.1, restarts=1, cw_steps=10,
                     datasets=("mnist",)),
    "quick": Profile("quick", n_train=20_000, n_val=2_000, n_test=1_000, epochs=3, batch_size=128,
                     eval_batch_size=500, attack_steps_scale=1.0, restarts=1, cw_steps=100,
                     datasets=("mnist",)),
    "paper": Profile("paper", n_train=None, n_val=5_000, n_test=None, epochs=20, batch_size=128,
                     eval_batch_size=1_000, attack_steps_scale=1.0, restarts=5, cw_steps=1_000,
                     datasets=("mnist", "cifar10", "gtsrb")),
}


def get_profile(name: str | None = None) -> Profile:
    """Look a profile up by name; ``None`` reads ``PURIFY_PROFILE`` and defaults to ``quick``."""
    name = name or os.environ.get("PURIFY_PROFILE") or "quick"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: expected one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]


def get_device() -> torch.device:
    """The fastest device here: CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return a CPU generator with that seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
