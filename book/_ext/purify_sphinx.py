"""Small Sphinx fixes for the offline book.

Jupyter Book 1 registers some extensions' inline scripts twice (sphinx-thebe's ``const THEBE_JS_URL``,
sphinx-togglebutton's settings); the second ``const`` is a JavaScript error on every page. Drop exact
duplicates from each page's script list.

``PURIFY_EXECUTION_CACHE=DIR`` switches execution to myst-nb's ``cache`` mode on the jupyter-cache ``DIR``:
``make test`` fills it with the chapters nbval has just executed (scripts/nbval_keep.py), so the smoke book
shows those executions instead of running every chapter a second time. A chapter missing there is executed.
"""
from __future__ import annotations

import os


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        # the same inline script is registered once with filename None and once with '': one key for both
        key = (getattr(script, "filename", script) or "",
               repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def _execution_cache(app, config) -> None:
    folder = os.environ.get("PURIFY_EXECUTION_CACHE")
    if folder:
        config.nb_execution_mode = "cache"
        config.nb_execution_cache_path = os.path.abspath(folder)


def setup(app):
    app.connect("config-inited", _execution_cache)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
