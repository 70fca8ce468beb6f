"""The weight cache: bit-identical reloads, keys, atomic writes, and recovery from bad files."""
from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from purify_lib import cache


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PURIFY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _trainer(calls: list):
    def train(model: nn.Module) -> dict:
        calls.append(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        return {"loss": [1.0, 0.5]}
    return train


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_reload_is_bit_identical_and_skips_training():
    calls: list = []
    first, extra = cache.load_or_train(_model(0), _trainer(calls), {"seed": 0})
    second, extra2 = cache.load_or_train(_model(1), _trainer(calls), {"seed": 0})
    assert len(calls) == 1 and extra == extra2 == {"loss": [1.0, 0.5]}
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), k
    assert not second.training


def test_key_and_architecture_select_the_entry():
    calls: list = []
    cache.load_or_train(_model(), _trainer(calls), {"seed": 0})
    cache.load_or_train(_model(), _trainer(calls), {"seed": 1})
    cache.load_or_train(nn.Sequential(nn.Linear(4, 3)), _trainer(calls), {"seed": 0})
    assert len(calls) == 3


def test_corrupted_file_warns_and_retrains(private_cache):
    calls: list = []
    cache.load_or_train(_model(), _trainer(calls), {"seed": 0}, name="net")
    (path,) = private_cache.glob("net-*.pt")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="could not be read"):
        cache.load_or_train(_model(), _trainer(calls), {"seed": 0}, name="net")
    assert len(calls) == 2
    cache.load_or_train(_model(), _trainer(calls), {"seed": 0}, name="net")
    assert len(calls) == 2, "the retrained entry must be stored again"


class Payload:
    """An arbitrary class: ``weights_only=True`` must refuse to unpickle it."""


def test_unsafe_pickle_is_refused_not_executed(private_cache):
    path = cache.path_for("thing", {"a": 1})
    path.write_bytes(pickle.dumps({"value": Payload()}))
    with pytest.warns(UserWarning, match="could not be read"):
        value = cache.load_or_compute("thing", {"a": 1}, lambda: torch.arange(3))
    assert torch.equal(value, torch.arange(3))


def test_atomic_write_leaves_no_temporaries(private_cache):
    cache.load_or_compute("x", {"k": 1}, lambda: {"t": torch.ones(2)})
    assert [p.name for p in private_cache.iterdir() if p.name.startswith(".")] == []

    def boom():
        raise RuntimeError("compute failed")
    with pytest.raises(RuntimeError):
        cache.load_or_compute("y", {"k": 1}, boom)
    assert not list(private_cache.glob("y-*"))


def test_bad_name():
    with pytest.raises(ValueError, match="file-name stem"):
        cache.path_for("a/b", {})


def test_fingerprint_tells_content_shape_and_dtype_apart():
    a = torch.arange(6.0)
    assert cache.fingerprint(a) == cache.fingerprint(a.clone())
    assert cache.fingerprint(a) != cache.fingerprint(a.view(2, 3))
    assert cache.fingerprint(a) != cache.fingerprint(a.double())
    # 0-d tensors, such as batch norm's num_batches_tracked
    assert cache.fingerprint(torch.tensor(3)) != cache.fingerprint(torch.tensor(4))
    assert cache.fingerprint(a, None) != cache.fingerprint(a)
