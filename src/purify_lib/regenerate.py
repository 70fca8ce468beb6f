"""``purify-regenerate``: re-execute chapters with papermill and rewrite their results tables.

    purify-regenerate [CHAPTER ...] --profile quick|paper|smoke [--out _build/executed] [--results DIR]
                      [--timeout SECONDS]

Chapters are named by their notebook stem (``01_attacks``) or path; the default is every notebook in
``_toc.yml``, in book order. Each runs in its own folder (``book/``) with ``parameters=dict(profile=...)``
on a kernel of the Python running this command; the notebook itself saves its table to
``results/<profile>/`` through :meth:`purify_lib.results.Results.save` (``--results DIR`` sets
``PURIFY_RESULTS``: ``DIR/<profile>/``). Executed notebooks go to ``--out``.
A progress line with the seconds is printed per chapter; the exit status is nonzero if any chapter failed.

``--timeout SECONDS`` bounds the whole command, for machines that end a command after a fixed time: at that
deadline the cell then running is stopped, the kernel shut down, the executed notebook written as far as it
got, and later chapters are not started. Every trained model is saved in the weight cache
(:mod:`purify_lib.cache`) as soon as it is trained, so the same command run again with the same cache resumes
where the cut one stopped instead of training again.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .cache import cache_dir
from .profiles import PROFILE_NAMES
from .results import repo_root, results_root

__all__ = ["toc_chapters", "resolve", "run_chapter", "main"]


def toc_chapters(root: Path) -> list[Path]:
    """Every notebook listed in ``<root>/_toc.yml``, in book order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    found: list[Path] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                path = root / node["file"]
                path = path if path.suffix else path.with_suffix(".ipynb")
                if path.suffix == ".ipynb" and path.is_file():
                    found.append(path)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def resolve(root: Path, names: list[str]) -> list[Path]:
    """Map chapter names (stems like ``01_attacks`` or paths) to notebooks; ``ValueError`` if unknown."""
    known = toc_chapters(root)
    if not names:
        return known
    chosen = []
    for name in names:
        path = Path(name)
        matches = [p for p in known if p.stem == path.stem] if not path.is_file() else [path.resolve()]
        if not matches:
            raise ValueError(f"unknown chapter {name!r}: expected one of {', '.join(p.stem for p in known)}")
        chosen.extend(matches)
    return chosen


def _kernel_name(prefix: Path) -> str:
    """A kernelspec that runs *this* Python, written under ``prefix`` (nothing global changes)."""
    from ipykernel.kernelspec import install

    install(kernel_name="purify-regenerate", prefix=str(prefix), display_name="purify (regenerate)")
    data = prefix / "share" / "jupyter"
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(data), os.environ.get("JUPYTER_PATH")]))
    return "purify-regenerate"


def run_chapter(notebook: Path, profile: str, out: Path, kernel_name: str,
                deadline: float | None = None) -> None:
    """Execute one chapter with papermill at ``profile``; the executed copy goes to ``out``.

    ``deadline`` (a :func:`time.monotonic` time) stops the cell still running then with nbclient's
    ``CellTimeoutError``, raised after the kernel is shut down and the executed notebook written as far as it
    got.
    """
    import papermill

    out.mkdir(parents=True, exist_ok=True)
    limit: dict[str, Callable[[object], int]] = {}
    if deadline is not None:  # each cell may run until the deadline (nbclient's per-cell timeout)
        limit["timeout_func"] = lambda _cell: max(1, math.ceil(deadline - time.monotonic()))
    papermill.execute_notebook(str(notebook), str(out / notebook.name), parameters=dict(profile=profile),
                               kernel_name=kernel_name, cwd=str(notebook.parent), progress_bar=False,
                               log_output=False, **limit)


def main(argv: list[str] | None = None) -> int:
    """The command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="purify-regenerate", description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="notebook stems or paths (default: all in _toc.yml)")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="quick")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the executed notebooks (default: <repo>/_build/executed)")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder for the results tables and provenance: sets PURIFY_RESULTS "
                             "(default: PURIFY_RESULTS, else <repo>/results)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="stop cleanly this many seconds after the start (a rerun resumes from the "
                             "weight cache)")
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout: expected a positive number of seconds")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout

    root = repo_root()
    if not (root / "_toc.yml").is_file():
        parser.error(f"no _toc.yml found in {Path.cwd()} or above: run inside the purify repository")
    try:
        chapters = resolve(root, args.chapters)
    except ValueError as err:
        parser.error(str(err))
    out = (args.out or root / "_build" / "executed").resolve()
    if args.results is not None:
        os.environ["PURIFY_RESULTS"] = str(args.results.resolve())  # absolute: kernels run in book/
    os.environ["PURIFY_PROFILE"] = args.profile
    os.environ.setdefault("PURIFY_WIDGETS", "static")
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress-bar widgets saved into executed notebooks
    with tempfile.TemporaryDirectory(prefix="purify-kernel-") as prefix:
        failed = _run_all(chapters, args.profile, out, _kernel_name(Path(prefix)), deadline)
    print(f"results in {results_root() / args.profile}", flush=True)
    if failed:
        print(f"not done: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _run_all(chapters: list[Path], profile: str, out: Path, kernel: str,
             deadline: float | None) -> list[str]:
    """Run ``chapters`` in order until ``deadline``; print each outcome; return the chapters not done."""
    from nbclient.exceptions import CellTimeoutError

    failed, stopped = [], False
    total = time.perf_counter()
    for i, notebook in enumerate(chapters, 1):
        if deadline is not None and time.monotonic() >= deadline:
            rest = [p.stem for p in chapters[i - 1:]]
            failed.extend(rest)
            print(f"not started (--timeout): {', '.join(rest)}", flush=True)
            break
        start = time.perf_counter()
        print(f"[{i}/{len(chapters)}] {notebook.stem} ({profile}) ...", flush=True)
        try:
            run_chapter(notebook, profile, out, kernel, deadline)
            status = "ok"
        except CellTimeoutError:
            failed.append(notebook.stem)
            status = "STOPPED at the --timeout deadline"
            stopped = True
        except Exception as err:  # report every chapter's outcome, then fail at the end
            failed.append(notebook.stem)
            last = str(err).strip().splitlines()[-1:] or [""]
            status = f"FAILED: {type(err).__name__}: {last[0]}"
            traceback.print_exc(limit=1, file=sys.stderr)
        print(f"[{i}/{len(chapters)}] {notebook.stem}: {status} in {time.perf_counter() - start:.1f} s "
              f"-> {out / notebook.name}", flush=True)
    print(f"{len(chapters) - len(failed)}/{len(chapters)} chapters ok in "
          f"{time.perf_counter() - total:.1f} s", flush=True)
    if stopped:
        print(f"The same command run again with this weight cache ({cache_dir()}) resumes: the models "
              "trained so far are loaded, not trained again.", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
