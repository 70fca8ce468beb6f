"""Small Sphinx fixes for the offline book.

Jupyter Book 1 registers some extensions' inline scripts twice (sphinx-thebe's ``const THEBE_JS_URL``,
sphinx-togglebutton's settings); the second ``const`` is a JavaScript error on every page. Drop exact
duplicates from each page's script list.
"""
from __future__ import annotations


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


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
