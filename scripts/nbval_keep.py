"""A pytest plugin for nbval: keep what nbval executed, so that the book is not executed a second time.

``make test`` runs every chapter under nbval and then builds the smoke book from the same executions. With
``--nbval-keep DIR``, each notebook whose cells all passed is stored in the jupyter-cache at ``DIR`` with its
outputs and its widget state, the way myst-nb's ``cache`` execution mode stores a notebook it executed
itself; a book build with ``PURIFY_EXECUTION_CACHE=DIR`` (book/_ext/purify_sphinx.py) then takes each
chapter's outputs from there, and executes any chapter it does not find (a cache entry matches a chapter's
exact code cells).

    PYTHONPATH=scripts pytest -p nbval_keep --nbval-lax --nbval-keep _build/smoke/nbval-executed book/
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import IPyNbCell, IPyNbFile

# run in the kernel after a notebook's last cell: the state of every live widget, in the schema nbclient
# writes to a notebook's metadata (application/vnd.jupyter.widget-state+json)
_WIDGET_STATE = """
import json as _json, pathlib as _pathlib
try:
    import ipywidgets as _ipywidgets
    _state = _ipywidgets.Widget.get_manager_state(drop_defaults=False)
except ImportError:
    _state = {{"state": {{}}}}
_pathlib.Path({path!r}).write_text(_json.dumps(_state))
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--nbval-keep", metavar="DIR", default=None,
                     help="store each passing notebook, outputs and widget state, in the jupyter-cache DIR")


class _Run:
    """What nbval did to one notebook: its cells in order and whether any failed."""

    def __init__(self) -> None:
        self.cells: list[IPyNbCell] = []
        self.failed = False
        self.start = time.monotonic()


_runs: dict[IPyNbFile, _Run] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    if isinstance(item, IPyNbCell) and item.config.getoption("nbval_keep"):
        run = _runs.setdefault(item.parent, _Run())
        report = outcome.get_result()
        if call.when == "call":
            run.cells.append(item)
        run.failed |= report.failed or report.skipped


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After a notebook's last cell, while its kernel still runs (the file's own teardown stops it)."""
    folder = item.config.getoption("nbval_keep")
    last = nextitem is None or nextitem.parent is not item.parent
    if not folder or not isinstance(item, IPyNbCell) or not last:
        return
    run = _runs.pop(item.parent, None)
    n_code = sum(cell.cell_type == "code" for cell in item.parent.nb.cells)
    if run is None or run.failed or len(run.cells) != n_code:
        return
    keep(item.parent, run, Path(folder))


def _widget_state(nbfile: IPyNbFile) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "state.json")
        msg_id = nbfile.kernel.execute_cell_input(_WIDGET_STATE.format(path=str(path)), allow_stdin=False)
        nbfile.kernel.await_reply(msg_id, timeout=120)
        return json.loads(path.read_text())


def keep(nbfile: IPyNbFile, run: _Run, folder: Path) -> None:
    """Store the executed notebook in the jupyter-cache at ``folder`` (created if missing)."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    nb = nbformat.read(str(nbfile.fspath), as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for count, (cell, item) in enumerate(zip(code, run.cells), start=1):
        cell.outputs = [nbformat.from_dict(out) for out in item.test_outputs]
        cell.execution_count = count
        for out in cell.outputs:
            if out.output_type == "execute_result":
                out.execution_count = count
    state = _widget_state(nbfile)
    if state.get("state"):
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": state}
    nbformat.validate(nb)
    get_cache(str(folder)).cache_notebook_bundle(
        CacheBundleIn(nb, str(nbfile.fspath), data={"execution_seconds": time.monotonic() - run.start}),
        check_validity=False, overwrite=True)
