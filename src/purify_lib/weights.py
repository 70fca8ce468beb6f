"""Shipped weights: models trained once, committed with the repository, verified on every load.

Each file is ``weights/<profile>/<slug>-<sha8>.pt`` (``sha8``: the first 8 hex digits of the file's SHA-256,
as torchvision names its weights) and holds the model's state and training history; ``weights/MANIFEST.json``
has one entry per file: slug, profile, the recipe's knobs and hash, the training-code hash, the commit,
device and seconds that trained it, the file's SHA-256 and size, and the clean accuracy measured on the first
1,000 test images when it was saved. ``PURIFY_WEIGHTS`` points at another folder.

Loading (:func:`lookup`, called by :func:`purify_lib.recipes.build`) uses ``torch.load(weights_only=True)``
after checking the SHA-256: a corrupt file fails loudly, naming the file and the fix. Weights whose recipe or
training-code hash differ from the recipe asking are not used (a warning says why), and the recipe trains the
model instead. Tensors are stored in half precision when that moves the recorded clean accuracy by at most
0.1 point.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .cache import atomic_write

MANIFEST = "MANIFEST.json"
HALF_TOLERANCE = 0.001
"""Half precision is kept when the clean accuracy moves by at most this much (0.1 point)."""


class WeightsError(RuntimeError):
    """A shipped weight file that cannot be trusted (corrupt, truncated, or not what the manifest says)."""


def weights_dir() -> Path:
    """The shipped weights' folder: ``PURIFY_WEIGHTS``, else ``weights/`` at the repository root."""
    env = os.environ.get("PURIFY_WEIGHTS")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "weights"


def manifest() -> list[dict[str, Any]]:
    """The manifest's entries (empty when there is none)."""
    path = weights_dir() / MANIFEST
    if not path.exists():
        return []
    return json.loads(path.read_text())["models"]


def entry(slug: str, profile: str) -> dict[str, Any] | None:
    """The manifest entry of ``slug`` at ``profile``, if any."""
    return next((e for e in manifest() if e["slug"] == slug and e["profile"] == profile), None)


def _write_manifest(entries: list[dict[str, Any]]) -> None:
    entries = sorted(entries, key=lambda e: (e["profile"], e["slug"]))
    text = json.dumps({"models": entries}, indent=1, sort_keys=True) + "\n"
    atomic_write(weights_dir() / MANIFEST, text.encode())


def sha256(payload: bytes) -> str:
    """The hex SHA-256 of ``payload``."""
    return hashlib.sha256(payload).hexdigest()


def _half(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def save(slug: str, profile: str, model: nn.Module, history: Mapping[str, Any], *, recipe: Mapping[str, Any],
         recipe_hash: str, code_hash: str, score: Callable[[nn.Module], float], commit: str, device: str,
         data_source: str) -> dict[str, Any]:
    """Write ``model``'s weights and history as ``<profile>/<slug>-<sha8>.pt`` and its manifest entry.

    ``score(module)`` measures the clean accuracy recorded in the manifest (the system on the first 1,000 test
    images); it is measured again with the half-precision weights, which are kept when it moves by at most
    :data:`HALF_TOLERANCE`. An older file of the same slug and profile is removed.

    Returns:
        The manifest entry.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    accuracy = score(model)
    probe = copy.deepcopy(model)
    probe.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in _half(state).items()})
    accuracy_half = score(probe)
    half = abs(accuracy_half - accuracy) <= HALF_TOLERANCE
    buffer = io.BytesIO()
    torch.save({"state_dict": _half(state) if half else state, "history": _plain(history)}, buffer)
    payload = buffer.getvalue()
    digest = sha256(payload)
    path = weights_dir() / profile / f"{slug}-{digest[:8]}.pt"
    atomic_write(path, payload)
    old = entry(slug, profile)
    if old is not None and old["file"] != path.relative_to(weights_dir()).as_posix():
        (weights_dir() / old["file"]).unlink(missing_ok=True)
    new = {"slug": slug, "profile": profile, "file": path.relative_to(weights_dir()).as_posix(),
           "name": recipe["name"], "recipe": recipe["knobs"], "recipe_hash": recipe_hash,
           "code_hash": code_hash, "commit": commit, "device": device,
           "seconds": round(float(sum(history.get("seconds", []))), 1), "sha256": digest,
           "bytes": len(payload), "precision": "float16" if half else "float32",
           "clean_accuracy": round(accuracy_half if half else accuracy, 4),
           "clean_accuracy_float32": round(accuracy, 4), "data_source": data_source}
    _write_manifest([e for e in manifest() if (e["slug"], e["profile"]) != (slug, profile)] + [new])
    return new


def _plain(value: Any) -> Any:
    """A history reduced to what ``weights_only`` loading accepts (numbers, strings, tensors, containers)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float, str, bool, Tensor)) or value is None:
        return value
    return str(value)


def read(e: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state and history of manifest entry ``e``, SHA-256 checked.

    Raises:
        WeightsError: the file is missing, or its bytes are not the ones the manifest recorded.
    """
    path = weights_dir() / e["file"]
    if not path.exists():
        raise WeightsError(
            f"{path} is listed in {weights_dir() / MANIFEST} but missing: restore it with "
            f"`git checkout -- {path}` or retrain it with `make weights PROFILE={e['profile']} "
            f"MODELS={e['slug']}`"
        )
    payload = path.read_bytes()
    if sha256(payload) != e["sha256"]:
        raise WeightsError(f"{path} is corrupt: its SHA-256 is {sha256(payload)[:16]}…, the manifest says "
                           f"{e['sha256'][:16]}…. Restore it with `git checkout -- {path}`, or delete it and "
                           f"its manifest entry and retrain with `make weights PROFILE={e['profile']} "
                           f"MODELS={e['slug']}`")
    stored = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    return stored["state_dict"], stored["history"]


def lookup(recipe_hash: str, code_hash: str,
           name: str) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]] | None:
    """The shipped state, history and manifest entry of the weights trained by the recipe with
    ``recipe_hash`` and the training code with ``code_hash``, or ``None``. An entry with the same recipe but
    other training code, or whose file is missing, is not used: a warning says why and how long training it
    took (the caller then trains it)."""
    same = [e for e in manifest() if e["recipe_hash"] == recipe_hash and e["name"] == name]
    for e in same:
        if e["code_hash"] != code_hash:
            reason = f"were trained by other training code (code hash {e['code_hash']}, now {code_hash})"
        elif not (weights_dir() / e["file"]).exists():
            reason = "are listed in the manifest but the file is missing"
        else:
            return (*read(e), dict(e))
        warnings.warn(f"shipped weights {e['file']} ({e['slug']}, {e['profile']}) {reason}: not used; the "
                      f"recipe trains the model now (it took {e['seconds'] / 60:.0f} min on {e['device']}; "
                      f"`make weights PROFILE={e['profile']} MODELS={e['slug']}` ships it anew)",
                      stacklevel=3)
    return None


def explain(
    slug: str, profile: str, recipe: Mapping[str, Any], recipe_hash: str, code_hash: str
) -> str | None:
    """Why the shipped weights of ``slug`` at ``profile`` do not serve this recipe (``None`` if they do or
    there are none): the knobs that changed, or the training code."""
    e = entry(slug, profile)
    if e is None:
        return None
    if e["recipe_hash"] != recipe_hash:
        knobs = recipe["knobs"]
        changed = [f"{k}: {e['recipe'].get(k)!r} → {knobs.get(k)!r}"
                   for k in sorted(set(knobs) | set(e["recipe"])) if e["recipe"].get(k) != knobs.get(k)]
        return f"{e['file']} was trained by another recipe ({'; '.join(changed) or 'another model'})"
    if e["code_hash"] != code_hash:
        return f"{e['file']} was trained by other training code (code hash {e['code_hash']}, now {code_hash})"
    return None
