"""Where and how reproducibly code runs: the device, the seeds, a model's device."""
from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


def get_device() -> torch.device:
    """The fastest device here: CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return a CPU generator with that seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode and restore afterwards the mode each submodule had (not the top module's
    mode on all of them: a wrapper built in train mode around eval-mode parts leaves them in eval mode)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm.auto``'s progress bar, switched off when ``TQDM_DISABLE`` is set (tqdm's notebook bar ignores
    that variable, so batch-executed chapters would otherwise keep one "0%" line per bar)."""
    if os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false"):
        kwargs["disable"] = True
    return tqdm(*args, **kwargs)
