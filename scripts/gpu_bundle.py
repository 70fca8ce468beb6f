"""Build ``.gpu/``: the one folder to carry to the offline GPU machine for a ``paper`` regeneration.

    python scripts/gpu_bundle.py CHAPTER [CHAPTER ...] [--data DIR] [--dest .gpu]

The GPU machine has Python 3.12 with torch, pandas, matplotlib … preinstalled, no package index, and takes at
most 64 MiB of working tree per trip. The bundle holds what it lacks and nothing more:

- ``wheels/``: papermill, ipykernel, nbclient, nbformat, jupyter-client, ipywidgets, pyautoattack (without
  its example weights) and their dependencies as Python 3.12 manylinux x86_64 wheels at the versions of
  ``constraints.txt``, minus every package the GPU machine already has (:data:`GPU_PREINSTALLED`);
- ``datasets/``: the offline datasets the chapters load at ``paper``, copied from ``--data`` (default
  ``PURIFY_DATA``) in the npz layout :func:`purify_lib.data.load` reads.

purify_lib itself travels with the working tree (``src/``). The bundle must stay within :data:`BUDGET_MIB`;
when the chapters' needs exceed it, nothing is written and the message says which chapters to leave for
another trip.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MIB = 60.0  # the device takes 64 MiB of working tree per trip; the tracked files need about 0.5
MIB = 2**20

# chapter -> the datasets its notebook loads at the paper profile (read from each chapter's SETTINGS and its
# data.load calls)
CHAPTER_DATASETS: dict[str, tuple[str, ...]] = {
    "01_attacks": ("mnist", "cifar10_jpeg", "cifar10_exact"),
    "02_apegan": ("mnist", "cifar10_jpeg", "gtsrb"),
    "03_apeganpp": ("mnist", "cifar10_jpeg"),
    "04_aegan": ("mnist", "fashion_mnist"),
    "05_gandef": ("mnist", "cifar10_jpeg", "cifar10_exact"),
    "06_isogan": ("mnist", "fashion_mnist", "cifar10_jpeg", "cifar10_exact"),
    "07_leaderboard": ("mnist",),
    "08_checklist": (),
}

# dataset -> its files under PURIFY_DATA, as purify_lib.data._bundle reads them
DATASET_FILES: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist/train.npz", "mnist/test.npz"),
    "fashion_mnist": ("fashion_mnist/train.npz", "fashion_mnist/test.npz"),
    "cifar10_jpeg": ("cifar10/train_jpeg.npz", "cifar10/test_jpeg.npz"),
    "cifar10_exact": ("cifar10/exact_subset.npz",),
    "gtsrb": ("gtsrb/train_subset.npz", "gtsrb/test.npz"),
}

NEEDED = ("papermill", "ipykernel", "nbclient", "nbformat", "jupyter-client", "ipywidgets", "pyautoattack")

# wheel -> folders inside it that no chapter imports: pyautoattack's 45 MB wheel is 44 MB of example model
# weights, dropped so that chapters 5–7 (AutoAttack) fit a bundle
SLIM = {"pyautoattack": ("pyautoattack/examples/",)}

# the GPU machine image's Python packages (its package list, read on 2026-11-17): wheels of these are dropped
GPU_PREINSTALLED = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning
pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers
toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp
""".split())

# dependencies a batch run never imports, left out to keep the bundle small (11 MB): ipykernel runs without
# its debugger (debugpy), IPython without completion (jedi, parso), ipywidgets without front-end extensions
UNUSED = frozenset({"debugpy", "jedi", "parso", "widgetsnbextension", "jupyterlab-widgets"})

# manylinux tags pip may pick for the GPU machine (glibc 2.39); pip matches each N exactly
PLATFORMS = ("manylinux1_x86_64", "manylinux2014_x86_64",
             *(f"manylinux_2_{n}_x86_64" for n in range(5, 40)))


def canonical(name: str) -> str:
    """A distribution name normalised as in PEP 503 (``Jupyter_Client`` -> ``jupyter-client``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: Path) -> str:
    """The canonical distribution name of a wheel file."""
    return canonical(path.name.split("-")[0])


def chapter_datasets(chapters: list[str]) -> list[str]:
    """The datasets ``chapters`` need, each once, in first-needed order; ``ValueError`` for an unknown one."""
    unknown = [c for c in chapters if c not in CHAPTER_DATASETS]
    if unknown:
        raise ValueError(f"unknown chapter {', '.join(unknown)}: "
                         f"expected one of {', '.join(CHAPTER_DATASETS)}")
    return list(dict.fromkeys(ds for c in chapters for ds in CHAPTER_DATASETS[c]))


def dataset_mib(data: Path, name: str) -> float:
    """The size of dataset ``name`` under ``data`` in MiB; ``FileNotFoundError`` naming a missing file."""
    missing = [f for f in DATASET_FILES[name] if not (data / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{name}: {', '.join(str(data / f) for f in missing)} not found")
    return sum((data / f).stat().st_size for f in DATASET_FILES[name]) / MIB


def over_budget(chapters: list[str], sizes: dict[str, float], wheels_mib: float) -> str:
    """The message for chapters whose wheels and datasets exceed :data:`BUDGET_MIB`: what each needs, which
    chapters fit together (kept in the order given) and which to leave for another trip."""
    def need(group: list[str]) -> float:
        return wheels_mib + sum(sizes[ds] for ds in chapter_datasets(group))

    lines = [f"gpu-bundle: {' '.join(chapters)} need {need(chapters):.1f} MiB (wheels {wheels_mib:.1f} MiB + "
             f"datasets) > {BUDGET_MIB:.0f} MiB. Nothing was written."]
    for c in chapters:
        parts = ", ".join(f"{ds} {sizes[ds]:.1f}" for ds in CHAPTER_DATASETS[c])
        lines.append(f"  {c} alone: {need([c]):.1f} MiB (wheels + {parts})")
    kept: list[str] = []
    for c in chapters:
        if need([*kept, c]) <= BUDGET_MIB:
            kept.append(c)
    left = [c for c in chapters if c not in kept]
    if kept:
        lines.append(f"  bundle {' '.join(kept)} ({need(kept):.1f} MiB) and leave out {' '.join(left)} "
                     "for another trip")
    for c in left:
        if need([c]) > BUDGET_MIB:
            biggest = max(CHAPTER_DATASETS[c], key=sizes.__getitem__)
            lines.append(f"  {c} does not fit even alone: it cannot run on the GPU machine at this budget "
                         f"(largest dataset: {biggest}, {sizes[biggest]:.1f} MiB)")
    return "\n".join(lines)


def slim_wheel(wheel: Path, drop: tuple[str, ...]) -> None:
    """Rewrite ``wheel`` in place without the files under the folders ``drop`` (and their RECORD lines, so
    that pip installs it as a consistent wheel)."""
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            if item.filename.startswith(drop):
                continue
            body = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                body = "".join(line for line in body.decode().splitlines(True)
                               if not line.startswith(drop)).encode()
            out.writestr(item, body)
    slim.replace(wheel)


def download_wheels(dest: Path) -> list[Path]:
    """Download :data:`NEEDED` with dependencies for the GPU machine into ``dest`` at the versions of
    ``constraints.txt`` (torch, triton, nvidia and cuda lines left out), then delete the wheels of packages it
    already has and of :data:`UNUSED` ones, and slim those of :data:`SLIM`. Returns the wheels kept."""
    constraints = dest / "constraints.txt"
    skip = re.compile(r"^(torch|torchvision|triton|nvidia-|cuda-)", re.IGNORECASE)
    constraints.write_text("".join(line for line in (ROOT / "constraints.txt").read_text().splitlines(True)
                                   if not skip.match(line)))
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(dest), "-c", str(constraints),
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", *platforms,
                    *NEEDED], check=True)
    constraints.unlink()
    kept = []
    for wheel in sorted(dest.glob("*.whl")):
        if wheel_name(wheel) in GPU_PREINSTALLED | UNUSED:
            wheel.unlink()
            continue
        if wheel_name(wheel) in SLIM:
            slim_wheel(wheel, SLIM[wheel_name(wheel)])
        kept.append(wheel)
    return kept


def main(argv: list[str] | None = None) -> int:
    """The command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="+", help=f"chapter stems: {', '.join(CHAPTER_DATASETS)}")
    parser.add_argument("--data", type=Path, default=os.environ.get("PURIFY_DATA"),
                        help="the offline datasets folder (default: PURIFY_DATA)")
    parser.add_argument("--dest", type=Path, default=ROOT / ".gpu", help="the bundle folder (default: .gpu)")
    args = parser.parse_args(argv)
    if args.data is None:
        parser.error("set PURIFY_DATA (or --data) to the offline datasets folder, e.g. ../shared/datasets")
    try:
        names = chapter_datasets(args.chapters)
        sizes = {ds: dataset_mib(args.data, ds) for ds in names}
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    with tempfile.TemporaryDirectory(prefix="gpu-wheels-") as tmp:
        wheels = download_wheels(Path(tmp))
        wheels_mib = sum(w.stat().st_size for w in wheels) / MIB
        if wheels_mib + sum(sizes.values()) > BUDGET_MIB:
            print(over_budget(args.chapters, sizes, wheels_mib), file=sys.stderr)
            return 1
        shutil.rmtree(args.dest, ignore_errors=True)
        (args.dest / "wheels").mkdir(parents=True)
        for wheel in wheels:
            shutil.move(wheel, args.dest / "wheels" / wheel.name)
    for ds in names:
        for f in DATASET_FILES[ds]:
            (args.dest / "datasets" / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.data / f, args.dest / "datasets" / f)
    print(f"{args.dest}: {len(wheels)} wheels {wheels_mib:.1f} MiB + datasets "
          f"({', '.join(f'{ds} {sizes[ds]:.1f}' for ds in names)}) = "
          f"{wheels_mib + sum(sizes.values()):.1f} MiB of {BUDGET_MIB:.0f} MiB for {' '.join(args.chapters)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
