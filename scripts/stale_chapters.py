"""Mark the chapters whose inputs changed since the last build of a profile, so that Sphinx re-executes them.

A chapter's inputs are its notebook, the profile, the book configuration, every library module it
imports, followed through the library's own imports (so its recipes' modules), and the shipped weights of the
profile (their manifest entries); a page built from the other chapters' results (the checklist) has all of
theirs. ``check`` touches (updates the modification time of) each
chapter whose inputs hash differently from the stamp of the last successful build in ``--build``; Sphinx then
re-reads, and so re-executes, exactly those chapters. ``record`` writes the stamps after a successful build.

    python scripts/stale_chapters.py check --build _build/quick --profile quick
    python scripts/stale_chapters.py record --build _build/quick --profile quick
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "src" / "purify_lib"
CONFIG = ("_config.yml", "_toc.yml")


def _module_file(name: str) -> Path | None:
    """``purify_lib.defenses.gandef`` → its file (a module or a package's ``__init__``)."""
    parts = name.split(".")[1:]
    for candidate in (LIB.joinpath(*parts).with_suffix(".py"), LIB.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(source: str, package: str) -> set[str]:
    """The ``purify_lib`` modules that ``source`` (a module of ``package``) imports, resolved to full
    names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("purify_lib")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("purify_lib"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}  # `from purify_lib import attacks`
    return {name for name in found if _module_file(name)}


def dependencies(notebook: Path) -> list[Path]:
    """Every library file the notebook's code reaches through imports."""
    cells = json.loads(notebook.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    todo, seen = _imports(code, "book"), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        todo |= _imports(path.read_text(), package) - seen
    return sorted({_module_file(name) for name in seen})


READS_EVERY_CHAPTER = ("08_checklist",)
"""Pages built from the other chapters' results: their inputs are every chapter's."""


def fingerprint(notebook: Path, profile: str) -> str:
    digest = hashlib.sha256(profile.encode())
    if notebook.stem in READS_EVERY_CHAPTER:
        for other in chapters():
            if other.stem not in READS_EVERY_CHAPTER:
                digest.update(fingerprint(other, profile).encode())
    for path in [notebook, *(ROOT / c for c in CONFIG), *dependencies(notebook)]:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    manifest = ROOT / "weights" / "MANIFEST.json"
    if manifest.exists():
        shipped = [e for e in json.loads(manifest.read_text())["models"] if e["profile"] == profile]
        digest.update(json.dumps(shipped, sort_keys=True).encode())
    return digest.hexdigest()


def chapters() -> list[Path]:
    sys.path.insert(0, str(ROOT / "src"))
    from purify_lib.regenerate import toc_chapters

    return toc_chapters(ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("check", "record"))
    parser.add_argument("--build", type=Path, required=True, help="the profile's build folder")
    parser.add_argument("--profile", required=True)
    args = parser.parse_args(argv)
    stamps_file = args.build / "chapter-stamps.json"
    stamps = json.loads(stamps_file.read_text()) if stamps_file.is_file() else {}
    now = {str(nb.relative_to(ROOT)): fingerprint(nb, args.profile) for nb in chapters()}
    if args.action == "record":
        args.build.mkdir(parents=True, exist_ok=True)
        stamps_file.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        return 0
    stale = [name for name, digest in now.items() if stamps.get(name) != digest]
    for name in stale:
        os.utime(ROOT / name)
    print(f"{args.profile}: {len(stale)} of {len(now)} chapters to execute"
          + (f" ({', '.join(stale)})" if stale else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
