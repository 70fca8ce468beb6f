"""The results contract, profiles and input checks."""
from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
import torch

from purify_lib import checks, data, profiles, results, runtime


ROW = dict(table="T1", dataset="mnist", classifier="lenet", defense="none", attack="fgsm", eps=0.3,
           metric="accuracy", n=64)


@pytest.fixture
def tree(monkeypatch, tmp_path):
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "book" / "published").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "book")
    monkeypatch.delenv("PURIFY_RESULTS", raising=False)
    return tmp_path


def test_save_writes_tidy_csv_and_provenance(tree):
    res = results.Results("99_demo", profiles.get_profile("smoke"))
    data.load("mnist", "test", n=8)
    res.add(table="T1", dataset="mnist", classifier="lenet", defense="none", attack="fgsm",
            threat="oblivious", eps=0.3, metric="accuracy", value=0.125, n=64)
    csv = res.save()
    assert csv == tree / "results" / "smoke" / "99_demo.csv"
    frame = pd.read_csv(csv)
    assert tuple(frame.columns) == results.COLUMNS and frame["value"].iloc[0] == 0.125
    prov = json.loads((csv.parent / "99_demo.provenance.json").read_text())
    assert {"profile", "device", "torch", "commit", "date", "seconds"} <= set(prov)
    assert prov["profile"] == "smoke" and prov["rows"] == 1
    assert prov["data"].get("mnist/test") == data.portable(data.source("mnist", "test"))  # read by fixtures


def test_add_rejects_unknown_threat_and_nan(tree):
    res = results.Results("99_demo", profiles.get_profile("smoke"))
    with pytest.raises(ValueError, match="threat"):
        res.add(**ROW, threat="grey", value=0.5)
    with pytest.raises(ValueError, match="value"):
        res.add(**ROW, threat="none", value=float("nan"))
    with pytest.raises(TypeError):
        res.add("T1", "mnist", "lenet", "none", "fgsm", "none", 0.3, "accuracy", 0.5, 10)  # keywords only


def test_side_by_side_joins_published_ours_and_committed(tree):
    pub = pd.DataFrame([dict(chapter="99_demo", table="T1", dataset="mnist", classifier="lenet",
                             defense="none", attack=a, threat="oblivious", eps=0.3, metric="accuracy",
                             value=v, source="Table 1")
                        for a, v in (("fgsm", 0.10), ("pgd", 0.01))])
    pub.to_csv(tree / "book" / "published" / "99_demo.csv", index=False)
    committed = results.Results("99_demo", profiles.get_profile("quick"))
    committed.add(**ROW, threat="oblivious", value=0.2)
    committed.save()
    live = results.Results("99_demo", profiles.get_profile("smoke"))
    live.add(**ROW, threat="oblivious", value=0.25)
    table = results.side_by_side(live.frame, "99_demo", "T1", committed="quick")
    assert list(table["attack"]) == ["fgsm", "pgd"]
    fgsm = table.iloc[0]
    assert fgsm["published"] == 0.10 and fgsm["ours"] == 0.25 and fgsm["ours (quick)"] == 0.2
    assert fgsm["ours − published"] == pytest.approx(0.15)
    assert pd.isna(table.iloc[1]["ours"]), "a number we did not measure stays empty"


def test_compare_puts_the_committed_full_run_beside_this_one_only_where_there_is_one(tree):
    live = results.Results("99_demo", profiles.get_profile("quick"))
    live.add(**ROW, threat="oblivious", value=0.25)
    frame, note = results.compare(live, "T1")
    assert "ours (full)" not in frame and note == ""  # no full-scale run committed: nothing said, no column
    full = results.Results("99_demo", profiles.get_profile("full"))
    full.add(**{**ROW, "n": 1_000}, threat="oblivious", value=0.875)
    full.save()
    frame, note = results.compare(live, "T1")
    assert frame["ours (full)"].tolist() == [0.875] and frame["n (full)"].tolist() == [1_000]
    assert note.startswith("`ours (full)`: the committed run of")
    frame, _ = results.compare(full, "T1")
    assert "ours (full)" not in frame  # a full run is not put beside itself


def test_profiles(monkeypatch):
    monkeypatch.setenv("PURIFY_PROFILE", "smoke")
    assert profiles.get_profile().name == "smoke"
    assert profiles.get_profile("paper").pick(1, 2, 3) == 3
    assert profiles.get_profile("smoke").steps(40) == 4 and profiles.get_profile("quick").steps(40) == 40
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.get_profile("fast")
    g1, g2 = runtime.seed_everything(3), runtime.seed_everything(3)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(2, 28, 28), "4-D"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "floating-point"),
    (torch.full((2, 1, 4, 4), float("nan")), "NaN"),
    (torch.full((2, 1, 4, 4), 1.5), r"\[0, 1\]"),
    ([[0.0]], "torch.Tensor"),
])
def test_check_images_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        checks.check_images(bad)


def test_check_images_channels_size_and_labels():
    x = torch.rand(3, 1, 28, 28)
    assert checks.check_images(x, channels=(1, 3), size=(28, 28)) is x
    with pytest.raises(ValueError, match="3 channels"):
        checks.check_images(x, channels=3)
    with pytest.raises(ValueError, match="32×32"):
        checks.check_images(x, size=(32, 32))
    with pytest.raises(ValueError, match="3 labels"):
        checks.check_labels(torch.zeros(2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="integer"):
        checks.check_labels(torch.zeros(3), 3)
    with pytest.raises(ValueError, match="0..9"):
        checks.check_labels(torch.tensor([0, 10, 1]), 3, num_classes=10)
    with pytest.raises(ValueError, match="> 0"):
        checks.check_positive(-0.1, "eps")


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "4", None])
def test_check_int_refuses_what_is_not_a_count(bad):
    with pytest.raises(ValueError, match="epochs: expected an integer ≥ 1"):
        checks.check_int(bad, "epochs")


def test_check_int_returns_the_count_and_honours_the_minimum():
    assert checks.check_int(3, "steps") == 3 and checks.check_int(0, "steps", 0) == 0
    with pytest.raises(ValueError, match="kernel: expected an integer ≥ 2, got 1"):
        checks.check_int(1, "kernel", 2)


def test_commit_is_dirty_for_code_changes_not_for_written_results(tree, monkeypatch):
    monkeypatch.delenv("PURIFY_COMMIT", raising=False)
    (tree / "results").mkdir()
    (tree / "results" / "t.csv").write_text("a\n")
    (tree / "lib.py").write_text("x = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=tree, check=True)
    subprocess.run(git + ["add", "-A"], cwd=tree, check=True)
    subprocess.run(git + ["commit", "-qm", "init"], cwd=tree, check=True)
    clean = results.git_commit()
    assert len(clean) == 12 and not clean.endswith("-dirty")
    (tree / "results" / "t.csv").write_text("b\n")
    assert results.git_commit() == clean
    (tree / "lib.py").write_text("x = 2\n")
    assert results.git_commit() == clean + "-dirty"
