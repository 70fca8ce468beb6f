"""One cache for trained weights and other expensive results.

Entries live under ``PURIFY_CACHE`` (default ``~/.cache/purify/cache``), named by a hash of everything that
produced them: the caller's key (data, profile, hyper-parameters, seed) plus, for models, the architecture
as printed by PyTorch. Writes are atomic (a temporary file, then ``os.replace``); reads use
``torch.load(..., weights_only=True)``; a truncated or corrupted file gives a warning and a recompute,
never a crash. A rerun therefore never retrains what it already has.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

CACHE_VERSION = 2  # 2: histories come from the training engine (train.run)

_computed: list[str] = []  # entry names this process computed (cache misses), in order


def computed() -> list[str]:
    """The names of the entries this process had to compute (cache misses), in order: after building a
    model, a longer list means it was trained now rather than loaded."""
    return list(_computed)


def cache_dir() -> Path:
    """The cache folder (``PURIFY_CACHE``, else ``~/.cache/purify/cache``), created if missing."""
    path = Path(os.environ.get("PURIFY_CACHE") or Path.home() / ".cache" / "purify" / "cache").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def key_hash(key: Mapping[str, Any]) -> str:
    """A stable hex digest of a JSON-able key (non-JSON values are written with ``str``)."""
    text = json.dumps({"cache_version": CACHE_VERSION, **key}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def fingerprint(*tensors: torch.Tensor | None) -> str:
    """A short content hash of tensors (shape, dtype and values; ``None`` allowed), for cache keys.

    Keys name the data a model was trained on by its content, so two chapters that train the same model on
    the same images share one cache entry, and a change of data can never reuse stale weights.
    """
    digest = hashlib.sha256()
    for t in tensors:
        if t is None:
            digest.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        digest.update(f"{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def weights_fingerprint(model: nn.Module) -> str:
    """A content hash of ``model``'s state (parameters and buffers): names a trained model in the cache key of
    what it produced (buffers flattened, so 0-d ones such as ``num_batches_tracked`` hash like the rest)."""
    return fingerprint(*(t.reshape(-1) for t in model.state_dict().values()))


def describe(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` made key-friendly and stable across runs: tensors and tensor tuples by :func:`fingerprint`,
    functions by their qualified name, ``functools.partial`` by function and arguments, other callables by
    ``repr`` (give adversary classes a ``__repr__`` that names their settings)."""
    def one(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return fingerprint(value)
        if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
            return fingerprint(*value)
        if isinstance(value, functools.partial):
            return {"function": one(value.func), "args": [one(a) for a in value.args],
                    **{k: one(v) for k, v in value.keywords.items()}}
        if inspect.isfunction(value) or inspect.isbuiltin(value):
            return f"{value.__module__}.{value.__qualname__}"
        if callable(value):
            return repr(value)
        return value
    return {k: one(v) for k, v in options.items()}


def training_key(x: torch.Tensor, y: torch.Tensor, *, seed: int, key: Mapping[str, Any] | None = None,
                 **options: Any) -> dict[str, Any]:
    """The cache key of a model trained on ``(x, y)``: their :func:`fingerprint`, the seed, every training
    option (:func:`describe`; the progress-bar label ``desc`` is left out) and ``key`` (anything else worth
    naming). The architecture is added by :func:`load_or_train`."""
    options = {k: v for k, v in options.items() if k != "desc"}
    return {**(key or {}), "seed": seed, "data": fingerprint(x, y), **describe(options)}


def path_for(name: str, key: Mapping[str, Any]) -> Path:
    """Where the entry ``name`` with ``key`` lives."""
    if not name or any(c in name for c in "/\\"):
        raise ValueError(f"name: expected a plain file-name stem, got {name!r}")
    return cache_dir() / f"{name}-{key_hash(key)}.pt"


def atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, synced, then renamed, so
    a reader never sees half a file and a killed writer leaves the old one (the cache, checkpoints and shipped
    weights all write this way)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def load_or_compute(name: str, key: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
    """Return the cached result for ``(name, key)``, or ``compute()`` it and store it.

    The result must be loadable with ``weights_only=True``: tensors, numbers, strings, and lists, tuples
    and dicts of them.
    """
    path = path_for(name, key)
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)["value"]
        except Exception as err:  # truncated, corrupted or foreign file: recompute, never crash
            warnings.warn(f"cache entry {path} could not be read ({type(err).__name__}: {err}); recomputing",
                          stacklevel=2)
    value = compute()
    _computed.append(name)
    atomic_save({"key": json.dumps(dict(key), sort_keys=True, default=str), "value": value}, path)
    return value


def load_or_train(
    model: nn.Module,
    train: Callable[[nn.Module], Any],
    key: Mapping[str, Any],
    name: str | None = None,
) -> tuple[nn.Module, Any]:
    """Load ``model``'s weights from the cache, or train it with ``train(model)`` and store them.

    Args:
        model: a freshly built module (its architecture is part of the key).
        train: trains ``model`` in place; whatever it returns (a history dict, say) is cached beside the
            weights and handed back on later loads.
        key: everything else that produced the weights (dataset, profile, hyper-parameters, seed).
        name: the file-name stem (default: the model's class name).

    Returns:
        ``(model, extra)``: the trained model in eval mode, on the device it was given on, and the value
        ``train`` returned.
    """
    full_key = {**key, "architecture": str(model)}
    device = next(model.parameters()).device

    def compute() -> dict:
        extra = train(model)
        return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "extra": extra}

    entry = load_or_compute(name or type(model).__name__, full_key, compute)
    model.load_state_dict(entry["state_dict"])
    model.to(device).eval()
    return model, entry["extra"]
