"""Packaging: environment.yml agrees with pyproject.toml; the regeneration CLI finds the book's chapters,
writes where it is told and stops at its deadline; the GPU bundle copies what the chapters load; the smoke
book of ``make test`` is built from what nbval executed."""
from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

import nbformat
import numpy as np
import pytest
import yaml
from PIL import Image

from purify_lib import data, regenerate

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    version = python.split("=")[-1]
    floor = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, version.split("."))) >= tuple(map(int, floor.split(".")))
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-c constraints.txt" in pip and (ROOT / "constraints.txt").is_file()
    editable = next(line for line in pip if line.startswith("-e "))
    extras = set(editable.split("[")[1].rstrip("]").split(","))
    assert extras == {"book", "test"} <= set(_pyproject()["project"]["optional-dependencies"])


def test_console_script_points_at_regenerate_main():
    assert _pyproject()["project"]["scripts"]["purify-regenerate"] == "purify_lib.regenerate:main"
    assert callable(regenerate.main)


def test_toc_chapters_in_order_and_resolve():
    chapters = regenerate.toc_chapters(ROOT)
    assert chapters and chapters[0].name == "01_attacks.ipynb"
    assert all(p.suffix == ".ipynb" and p.is_file() for p in chapters)
    assert regenerate.resolve(ROOT, ["01_attacks"]) == [chapters[0]]
    assert regenerate.resolve(ROOT, []) == chapters
    with pytest.raises(ValueError, match="unknown chapter 'nope'"):
        regenerate.resolve(ROOT, ["nope"])


def test_cli_rejects_unknown_profile(capsys):
    with pytest.raises(SystemExit) as exit_info:
        regenerate.main(["01_attacks", "--profile", "huge"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_cli_rejects_nonpositive_timeout(capsys):
    with pytest.raises(SystemExit) as exit_info:
        regenerate.main(["01_attacks", "--profile", "smoke", "--timeout", "0"])
    assert exit_info.value.code == 2 and "--timeout" in capsys.readouterr().err


def _notebook(path: Path, code: str) -> Path:
    """A one-cell notebook (after a ``parameters`` cell) at ``path``."""
    parameters = nbformat.v4.new_code_cell('profile = "quick"', metadata={"tags": ["parameters"]})
    nb = nbformat.v4.new_notebook(cells=[parameters, nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_cli_results_folder_and_timeout(tmp_path, monkeypatch, capsys):
    """--results is where a chapter's table goes; --timeout stops the chapter running at the deadline, keeps
    its executed notebook and starts no later chapter."""
    for name in ("PURIFY_RESULTS", "PURIFY_PROFILE", "PURIFY_WIDGETS", "TQDM_DISABLE", "JUPYTER_PATH"):
        monkeypatch.delenv(name, raising=False)  # main sets them; restored after the test
    monkeypatch.chdir(ROOT)
    fast = _notebook(tmp_path / "fast.ipynb", "import os, pathlib\n"
                     "folder = pathlib.Path(os.environ['PURIFY_RESULTS'], profile)\n"
                     "folder.mkdir(parents=True)\n(folder / 'fast.csv').write_text('ok')")
    slow = _notebook(tmp_path / "slow.ipynb", "import time\ntime.sleep(600)")
    after = _notebook(tmp_path / "after.ipynb", "pass")
    out, results = tmp_path / "out", tmp_path / "results"
    start = time.monotonic()
    code = regenerate.main([str(fast), str(slow), str(after), "--profile", "smoke", "--out", str(out),
                            "--results", str(results), "--timeout", "20"])
    printed = capsys.readouterr().out
    assert code == 1 and time.monotonic() - start < 120
    assert (results / "smoke" / "fast.csv").read_text() == "ok"
    assert (out / "fast.ipynb").is_file() and (out / "slow.ipynb").is_file()
    assert not (out / "after.ipynb").exists() and "not started (--timeout): after" in printed
    assert "slow: STOPPED at the --timeout deadline" in printed
    assert "resumes" in printed


def _module(path: Path) -> ModuleType:
    """A script of the repository (not on the import path) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gpu_bundle() -> ModuleType:
    """scripts/gpu_bundle.py as a module."""
    return _module(ROOT / "scripts" / "gpu_bundle.py")


def test_nbval_keep_stores_passing_notebooks_with_outputs_and_widget_state(tmp_path):
    """What nbval executed is in the jupyter-cache, as myst-nb's cache mode would find it; a notebook with a
    failing cell is not kept (the book then executes it itself)."""
    from jupyter_cache import get_cache

    good = _notebook(tmp_path / "good.ipynb", "import sys\nimport ipywidgets\nprint('hello')\n"
                     "print('careful', file=sys.stderr)\nipywidgets.IntSlider(value=7)")
    bad = _notebook(tmp_path / "bad.ipynb", "raise ValueError('boom')")
    cache = tmp_path / "kept"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "scripts"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "nbval_keep", "-p", "no:cacheprovider",
                           "--nbval-lax", "--nbval-keep", str(cache), "-q", good.name, bad.name],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "1 failed, 3 passed" in done.stdout, done.stdout + done.stderr
    kept = get_cache(str(cache))
    with pytest.raises(KeyError):
        kept.match_cache_notebook(nbformat.read(bad, as_version=4))
    _, nb = kept.merge_match_into_notebook(nbformat.read(good, as_version=4))
    outputs = nb.cells[1].outputs
    assert [(o.output_type, o.get("name")) for o in outputs] == [
        ("stream", "stdout"), ("stream", "stderr"), ("execute_result", None)]
    assert outputs[0].text == "hello\n" and outputs[1].text == "careful\n"
    model_id = outputs[2].data["application/vnd.jupyter.widget-view+json"]["model_id"]
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]
    assert state["version_major"] == 2
    assert state["state"][model_id]["model_name"] == "IntSliderModel"
    assert state["state"][model_id]["state"]["value"] == 7


def test_book_reads_kept_executions_only_when_asked(monkeypatch, tmp_path):
    extension = _module(ROOT / "book" / "_ext" / "purify_sphinx.py")
    config = SimpleNamespace(nb_execution_mode="force", nb_execution_cache_path="")
    monkeypatch.delenv("PURIFY_EXECUTION_CACHE", raising=False)
    extension._execution_cache(None, config)
    assert config.nb_execution_mode == "force"
    monkeypatch.setenv("PURIFY_EXECUTION_CACHE", str(tmp_path / "kept"))
    extension._execution_cache(None, config)
    assert config.nb_execution_mode == "cache" and config.nb_execution_cache_path == str(tmp_path / "kept")


def test_gpu_bundle_knows_every_chapter_and_copies_what_data_load_reads(tmp_path, monkeypatch):
    """Every chapter of the book has its datasets listed, and each dataset's files, alone in a folder, are
    found there by purify_lib.data (tiny stand-ins holding every key any loader reads)."""
    bundle = _gpu_bundle()
    assert {p.stem for p in regenerate.toc_chapters(ROOT)} <= set(bundle.CHAPTER_DATASETS)
    jpegs = []
    for _ in range(2):
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buffer, format="JPEG")
        jpegs.append(np.frombuffer(buffer.getvalue(), np.uint8))
    arrays = dict(x=np.zeros((2, 4, 4, 3), np.uint8), y=np.arange(2), split=np.arange(2),
                  jpeg=np.concatenate(jpegs), offsets=np.cumsum([0, *map(len, jpegs)]))
    for name, files in bundle.DATASET_FILES.items():
        root = tmp_path / name
        for f in files:
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            np.savez(root / f, **arrays)
        monkeypatch.setenv("PURIFY_DATA", str(root))
        assert data.source(name, "train") == data.source(name, "test") == str(root), name


def test_gpu_bundle_over_budget_says_what_to_leave_out():
    bundle = _gpu_bundle()
    sizes = dict(mnist=11.0, cifar10_jpeg=17.8, cifar10_exact=17.4, gtsrb=60.4)
    message = bundle.over_budget(["02_apegan", "05_gandef"], sizes, 4.9)
    assert "bundle 05_gandef (51.1 MiB) and leave out 02_apegan" in message
    assert "02_apegan does not fit even alone" in message and "gtsrb, 60.4 MiB" in message
    with pytest.raises(ValueError, match="unknown chapter 99_nope"):
        bundle.chapter_datasets(["99_nope"])


def test_gpu_bundle_slims_a_wheel_and_its_record(tmp_path):
    bundle = _gpu_bundle()
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    record = "pkg/__init__.py,sha256=x,1\npkg/examples/w.pt,sha256=y,9\npkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/__init__.py", "A = 1\n")
        z.writestr("pkg/examples/w.pt", b"\0" * 9)
        z.writestr("pkg-1.0.dist-info/RECORD", record)
    bundle.slim_wheel(wheel, ("pkg/examples/",))
    with zipfile.ZipFile(wheel) as z:
        assert z.namelist() == ["pkg/__init__.py", "pkg-1.0.dist-info/RECORD"]
        assert z.read("pkg/__init__.py") == b"A = 1\n"
        assert "examples" not in z.read("pkg-1.0.dist-info/RECORD").decode()
    assert "pyautoattack" in bundle.NEEDED and "pyautoattack" in bundle.SLIM
