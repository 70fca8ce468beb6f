"""The results contract: every number a chapter reports comes from one tidy table.

A run writes ``results/<profile>/<chapter>.csv`` with the columns of :data:`COLUMNS` and, beside it,
``<chapter>.provenance.json`` (profile, device, torch version, git commit, date, seconds, the settings the
chapter really used, recorded with :meth:`Results.record_settings`, and what :mod:`purify_lib.provenance`
gathered: each dataset's source and each trained model's weights hash, origin and training commit).
Published numbers, typed from the papers, live in ``book/published/<chapter>.csv`` (the key columns,
``value``, ``source`` and a ``note`` wherever a setting of the key is not the paper's own, such as an ε
taken from the authors' code) and are always labelled "published". A proportion's row carries its Wilson
95% interval in ``low`` and ``high`` (:data:`PROPORTIONS`).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import provenance, stats
from .profiles import Profile
from .runtime import get_device

COLUMNS = ("chapter", "table", "dataset", "classifier", "defense", "attack", "threat", "eps", "metric",
           "value", "n", "low", "high")
PROPORTIONS = ("accuracy", "success_rate", "comb_accuracy", "correct_or_rejected", "rejection_rate",
               "accuracy_r", "accuracy_rs", "undetected", "undetected_and_wrong", "detection_mse",
               "detection_l1", "train_adv_accuracy", "correct_or_rejected_at_5fpr")
"""The metrics that are fractions of the row's ``n`` images: their rows carry Wilson's 95% interval in
``low`` and ``high`` (:func:`purify_lib.stats.wilson`); every other metric leaves both empty."""
THREATS = ("none", "oblivious", "whitebox", "bpda", "eot", "bpda_eot", "blackbox", "adaptive")
"""Every threat model a row can carry (:mod:`purify_lib.evaluate` runs the first six):

- ``none``: clean inputs; ``oblivious``: the papers' setting, the attack sees the classifier alone;
- ``whitebox``: the attack differentiates through the whole defended system;
- ``bpda``: white-box with the non-differentiable parts replaced by a surrogate on the backward pass;
- ``eot``: white-box on the expectation over the defense's randomness; ``bpda_eot``: both;
- ``blackbox``: transferred from a substitute; ``adaptive``: any other attack built for the defense
  (latent-space, detector-aware)."""
KEY = ("table", "dataset", "classifier", "defense", "attack", "threat", "eps", "metric")


def repo_root() -> Path:
    """The repository root: the nearest folder upwards holding ``_toc.yml`` (else the working folder)."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "pyproject.toml").is_file():
            return folder
    return here


def results_root() -> Path:
    """``PURIFY_RESULTS`` if set, else ``<repo root>/results``."""
    return Path(os.environ.get("PURIFY_RESULTS") or repo_root() / "results")


def git_commit() -> str:
    """The current commit, with ``-dirty`` when tracked files other than ``results/`` and ``weights/`` have
    changes (the tables and weights a run writes there do not make the code that produced them dirty); where
    there is no git repository (a copy on a GPU machine) ``PURIFY_COMMIT`` if set, else ``unknown``."""
    if os.environ.get("PURIFY_COMMIT"):
        return os.environ["PURIFY_COMMIT"]
    try:
        root = repo_root()
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results", ":(exclude)weights"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name() -> str:
    """A human name for the compute device (GPU model, or the CPU and its core count)."""
    dev = get_device()
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"{torch.get_num_threads()} threads)"


class Results:
    """Collects a chapter's rows and writes them with provenance."""

    def __init__(self, chapter: str, profile: Profile) -> None:
        self.chapter = chapter
        self.profile = profile
        self.rows: list[dict[str, Any]] = []
        self.settings: dict[str, Any] = {}
        self._start = time.perf_counter()

    def record_settings(self, **settings: Any) -> None:
        """Record sizes and hyper-parameters this run really used (written to the provenance file).

        Record measured sizes (``n_train=len(x_train)``), not intended ones, so the file cannot disagree with
        what ran.
        """
        self.settings.update(settings)

    def add(self, *, table: str, dataset: str, classifier: str, defense: str, attack: str, threat: str,
            eps: float, metric: str, value: float, n: int) -> None:
        """Record one number (keyword arguments only). ``threat`` must be one of :data:`THREATS`; a metric of
        :data:`PROPORTIONS` gets its Wilson interval over ``n``."""
        if threat not in THREATS:
            raise ValueError(f"threat: expected one of {', '.join(THREATS)}, got {threat!r}")
        if not isinstance(value, (int, float)) or math.isnan(float(value)):
            raise ValueError(f"value: expected a number, got {value!r}")
        low = high = float("nan")
        if metric in PROPORTIONS:
            low, high = stats.wilson(float(value), int(n))
        self.rows.append(dict(chapter=self.chapter, table=table, dataset=dataset, classifier=classifier,
                              defense=defense, attack=attack, threat=threat, eps=float(eps), metric=metric,
                              value=float(value), n=int(n), low=low, high=high))

    def value(self, **where: Any) -> float:
        """The one number whose row matches ``where`` (column=value; floats such as ``eps`` to 1e-6), NaN if
        none does; ``ValueError`` if several do, since then ``where`` is ambiguous."""
        f = self._match(where)
        return float(f["value"].iloc[0]) if len(f) else float("nan")

    def n(self, **where: Any) -> int:
        """The number of images behind the one row matching ``where`` (as :meth:`value`; 0 if none)."""
        f = self._match(where)
        return int(f["n"].iloc[0]) if len(f) else 0

    def _match(self, where: dict[str, Any]) -> pd.DataFrame:
        f = self.frame
        for k, v in where.items():
            if k not in COLUMNS:
                raise ValueError(f"{k}: expected a column of {', '.join(COLUMNS)}")
            f = f[(f[k] - v).abs() < 1e-6] if isinstance(v, float) else f[f[k] == v]
        if len(f) > 1:
            raise ValueError(f"{len(f)} rows match {where}: name more columns")
        return f

    @property
    def frame(self) -> pd.DataFrame:
        """All rows so far as a DataFrame with :data:`COLUMNS`."""
        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def save(self) -> Path:
        """Write the CSV and its provenance under ``results/<profile>/``; return the CSV path."""
        folder = results_root() / self.profile.name
        folder.mkdir(parents=True, exist_ok=True)
        csv = folder / f"{self.chapter}.csv"
        self.frame.to_csv(csv, index=False, float_format="%.6g")
        record = dict(chapter=self.chapter, profile=self.profile.name, device=device_name(),
                      torch=torch.__version__, commit=git_commit(),
                      date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                      seconds=round(time.perf_counter() - self._start, 1), rows=len(self.rows),
                      settings=json.loads(json.dumps(self.settings, default=str)),
                      **json.loads(json.dumps(provenance.used(), default=str)))
        (folder / f"{self.chapter}.provenance.json").write_text(json.dumps(record, indent=2) + "\n")
        return csv


def load(chapter: str, profile: str) -> tuple[pd.DataFrame, dict] | None:
    """A committed run's table and provenance, or ``None`` if that run is not there."""
    folder = results_root() / profile
    csv, prov = folder / f"{chapter}.csv", folder / f"{chapter}.provenance.json"
    if not csv.is_file():
        return None
    return pd.read_csv(csv), json.loads(prov.read_text()) if prov.is_file() else {}


def published(chapter: str) -> pd.DataFrame:
    """The numbers typed from the paper for ``chapter`` (``book/published/<chapter>.csv``; none: empty)."""
    path = repo_root() / "book" / "published" / f"{chapter}.csv"
    if not path.is_file():
        return pd.DataFrame(columns=[*KEY, "chapter", "value", "source", "note"])
    return pd.read_csv(path)


def side_by_side(ours: pd.DataFrame, chapter: str, table: str, committed: str | None = None) -> pd.DataFrame:
    """One table's published numbers beside ours (this run) and ours (a committed run), joined on the key.

    Args:
        ours: this run's rows (``Results.frame``).
        chapter: the chapter name (selects ``book/published/<chapter>.csv``).
        table: the table label shared by the published and our rows.
        committed: a profile whose committed results (``results/<profile>/``) to add as a column.

    Returns:
        One row per key with columns ``published``, ``ours`` with its 95% interval and ``n`` (the images it
        was measured on) and, if asked, the same for ``ours (<profile>)``, plus ``ours − published`` where
        both exist. Missing entries are NaN: nothing is filled in.
    """
    def keyed(frame: pd.DataFrame, column: str, n: str | None = None) -> pd.DataFrame:
        frame = frame[frame["table"] == table].copy()
        frame["eps"] = frame["eps"].astype(float).round(6)
        if n is None:  # the published numbers, with their note where a setting is not the paper's own
            notes = frame["note"].fillna("") if "note" in frame else ""
            return frame[list(KEY) + ["value"]].rename(columns={"value": column}).assign(note=notes)
        if "low" not in frame:
            frame["low"] = frame["high"] = float("nan")
        frame[f"{column} 95% interval"] = [
            "" if pd.isna(lo) else f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(frame["low"], frame["high"])]
        return frame[list(KEY) + ["value", f"{column} 95% interval", "n"]].rename(
            columns={"value": column, "n": n})

    pub = published(chapter)
    merged = keyed(pub, "published").merge(keyed(ours, "ours", "n"), on=list(KEY), how="outer")
    if committed:
        found = load(chapter, committed)
        label = f"ours ({committed})"
        if found is not None:
            merged = merged.merge(keyed(found[0], label, f"n ({committed})"), on=list(KEY), how="left")
        else:
            merged[label] = float("nan")
    merged["ours − published"] = merged["ours"] - merged["published"]
    varying = [k for k in KEY if k != "table" and merged[k].nunique(dropna=False) > 1]
    return merged[varying + [c for c in merged.columns if c not in KEY]].reset_index(drop=True)


def compare(run: Results, table: str, committed: str | None = "full") -> tuple[pd.DataFrame, str]:
    """The compact comparison a chapter shows for one table: published | ours | Δ, and the committed run.

    Rows this run did not produce (a dataset the profile skips) are dropped and counted in the note; the
    committed run's column (``ours (<profile>)``, by default the full-scale run of the shipped weights)
    appears only when this run is of another profile and that run is committed. Δ is ``ours − published``.

    Returns:
        ``(frame, note)``: the table, and one line saying what was dropped and where the committed run came
        from ("" when there is nothing to say).
    """
    other = committed if committed and committed != run.profile.name else None
    other = other if other and load(run.chapter, other) is not None else None
    frame = side_by_side(run.frame, run.chapter, table, committed=other)
    frame = frame.rename(columns={"ours − published": "Δ"})
    if frame["published"].isna().all():
        frame = frame.drop(columns=["published", "Δ", "note"])
    missing = frame["ours"].isna()
    notes = []
    if missing.any():
        where = ""
        if "dataset" in frame:
            where = f" ({', '.join(sorted(frame.loc[missing, 'dataset'].astype(str).unique()))})"
        notes.append(f"{int(missing.sum())} published rows not run at profile `{run.profile.name}`{where}.")
    if other:
        found = load(run.chapter, other)
        notes.append(f"`ours ({other})`: the committed run of {found[1].get('date', '?')}, commit "
                     f"{found[1].get('commit', '?')}.")
    frame = frame[~missing].reset_index(drop=True)
    weak = uncalibrated(run.frame)
    if weak and "attack" in frame:
        datasets = frame["dataset"] if "dataset" in frame else [None] * len(frame)
        marked = [(d, a) in weak for d, a in zip(datasets, frame["attack"])]
        frame["attack"] = [f"{a} (uncalibrated)" if m else a for a, m in zip(frame["attack"], marked)]
        if any(marked):
            notes.insert(0, "An attack marked *uncalibrated* fooled fewer than 99% of the undefended "
                            "classifier's correct images (table `calibration`): its rows understate it.")
    empty = [c for c in frame.columns if (c.endswith("95% interval") or c == "note")
             and not frame[c].fillna("").any()]
    return frame.drop(columns=empty), " ".join(notes)


def uncalibrated(frame: pd.DataFrame, at_least: float = 0.99) -> set[tuple[str | None, str]]:
    """``(dataset, attack)`` of every calibration row (table ``calibration``) whose success rate is below
    ``at_least``, plus ``(None, attack)`` so that tables without a dataset column can be marked too."""
    rows = frame[(frame["table"] == "calibration") & (frame["value"] < at_least)]
    return {*zip(rows["dataset"], rows["attack"]), *((None, a) for a in rows["attack"])}


def show(run: Results, table: str, committed: str | None = "full") -> None:
    """Display :func:`compare`'s table with its note below it (in a notebook)."""
    from IPython.display import Markdown, display

    frame, note = compare(run, table, committed)
    display(frame.style.format(precision=3, na_rep="—").hide(axis="index"))
    if note:
        display(Markdown(note))
