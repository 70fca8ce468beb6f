"""Recipes, the zoo and shipped weights: one name per model, resumable training, verified weight files."""
from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from purify_lib import evaluate, provenance, train, weights, zoo
from purify_lib.profiles import PROFILE_NAMES
from purify_lib.recipes import build, departures
from purify_lib.recipes.aegan import AEGANRS
from purify_lib.recipes.apeganpp import Finetuned, ThirdParty
from purify_lib.recipes.classifiers import LeNet
from purify_lib.recipes.gandef import Method


@pytest.fixture
def private(tmp_path, monkeypatch):
    """An empty cache and an empty weights folder."""
    monkeypatch.setenv("PURIFY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PURIFY_WEIGHTS", str(tmp_path / "weights"))
    return tmp_path


def tiny_lenet() -> LeNet:
    return LeNet.at("smoke", n_train=128, n_val=32, epochs=1)


def test_at_reads_the_profile_and_refuses_unknown_ones_and_knobs():
    assert LeNet.at("quick").epochs == 3 and LeNet.at("full").n_train is None
    assert Method.at("full").train_steps == 7 and Method.at("quick").train_steps == 2
    with pytest.raises(ValueError, match="profile: expected one of"):
        LeNet.at("fast")
    with pytest.raises(TypeError, match="unknown knobs"):
        LeNet.at("quick", epoch=3)
    with pytest.raises(ValueError, match="method: expected one of"):
        Method.at("quick", method="FGSM")


def test_every_knob_is_a_row_and_any_change_is_another_recipe():
    r = Method.at("quick")
    table = r.table()
    assert set(table.index) == {f.name for f in dataclasses.fields(r)}
    assert table.loc["n_train", "value"] == "6000"
    assert dataclasses.replace(r, epochs=4).recipe_hash() != r.recipe_hash()
    assert Method.at("quick").recipe_hash() == r.recipe_hash()  # a recipe names its model, nothing else
    nested = zoo.recipe("apegan", "quick")
    assert "target.epochs" in nested.knobs()
    assert dataclasses.replace(nested, target=dataclasses.replace(nested.target, epochs=1)).recipe_hash() \
        != nested.recipe_hash()


def test_every_departure_of_the_full_recipes_from_the_papers_says_why():
    for slug in zoo.slugs("full", trained=True):
        if "paper" in zoo.entry(slug).profiles:
            table = zoo.recipe(slug, "full").departures(zoo.recipe(slug, "paper"))
            unsaid = table.loc[table["why"] == "", "knob"].tolist()
            assert not unsaid, f"{slug}: departures without a reason: {unsaid}"
    full, paper = zoo.recipe("gandef", "full"), zoo.recipe("gandef", "paper")
    row = full.departures(paper).set_index("knob").loc["train_steps"]
    assert (row["paper"], row["ours"]) == ("40", "7") and "15 ms" in row["why"]
    assert full.departures(full).empty
    nested = zoo.recipe("apegan", "quick")  # a part's knob, with its part's reason
    changed = dataclasses.replace(nested, target=dataclasses.replace(nested.target, epochs=1))
    assert changed.departures(nested)["knob"].tolist() == ["target.epochs"]
    table = departures({m: lambda p, m=m: Method.at(p, method=m) for m in ("Pure PGD", "GanDef")})
    assert set(table["knob"]) == {"epochs", "train_alpha", "train_steps", "warmup_epochs"}
    assert (table["models"] == "Pure PGD, GanDef").all()  # one row per change, naming every model it concerns
    assert departures({"AE-GAN+rs": AEGANRS.at}, "paper").empty


def test_zoo_names_every_model_once_and_holds_no_training_setting():
    assert len({e.slug for e in zoo.ENTRIES}) == len(zoo.ENTRIES)
    assert not re.search(r"\b(epochs|n_train|batch_size|lr|width)=\d", inspect.getsource(zoo))
    for profile in PROFILE_NAMES:
        for slug in zoo.slugs(profile):
            zoo.recipe(slug, profile)  # defined at every profile the slug exists at
    assert "defensegan" not in zoo.slugs("quick")  # the stand-in never carries Defense-GAN's name
    assert "Defense-GAN stand-in" in zoo.entry("defensegan_aegan_decoder").name
    with pytest.raises(KeyError, match="unknown model 'none'"):
        zoo.entry("none")
    with pytest.raises(ValueError, match="does not exist at profile 'quick'"):
        zoo.recipe("defensegan", "quick")


def test_a_killed_training_resumes_and_ends_with_the_same_weights(private, monkeypatch):
    recipe = Method.at("smoke", n_train=192, n_val=32, epochs=3, batch_size=64, warmup_epochs=1.5)
    monkeypatch.setenv("PURIFY_CACHE", str(private / "uninterrupted"))
    reference, _ = build(recipe)

    monkeypatch.setenv("PURIFY_CACHE", str(private / "killed"))
    saves = []
    real_save = train._save_checkpoint

    def kill_after_epoch_one(path, state):
        real_save(path, state)
        saves.append(state["epoch"])
        if state["epoch"] == 1:
            raise KeyboardInterrupt  # the process dies right after epoch 1's checkpoint

    monkeypatch.setattr(train, "_save_checkpoint", kill_after_epoch_one)
    with pytest.raises(KeyboardInterrupt):
        build(recipe)
    assert list((private / "killed" / "checkpoints").glob("*.ckpt"))  # the checkpoint survived the kill
    resumed, history = build(recipe)
    assert saves == [1, 2, 3]  # the second run trained epochs 2 and 3 only
    assert len(history["seconds"]) == 3
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert not list((private / "killed" / "checkpoints").glob("*.ckpt"))  # removed once finished


def ship_tiny(slug: str = "vanilla") -> dict:
    recipe = tiny_lenet()
    model, history = build(recipe)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    return weights.save(slug, "smoke", model, history, recipe=recipe.key(), recipe_hash=recipe.recipe_hash(),
                        code_hash=recipe.code_hash(), score=lambda m: evaluate.accuracy(m, x, y),
                        commit="test", device="cpu", data_source="test")


def test_shipped_weights_load_in_half_precision_within_a_tenth_of_a_point(private):
    e = ship_tiny()
    assert e["file"] == f"smoke/vanilla-{e['sha256'][:8]}.pt"
    assert abs(e["clean_accuracy"] - e["clean_accuracy_float32"]) <= weights.HALF_TOLERANCE
    assert (e["precision"] == "float16") == (e["bytes"] < 0.6 * sum(
        v.numel() * 4 for v in tiny_lenet().model().state_dict().values()))
    (private / "cache").rename(private / "old-cache")  # from now on only the shipped file can serve it
    provenance.reset()
    model, history = build(tiny_lenet())
    assert history["seconds"] and next(model.parameters()).dtype == torch.float32
    (used,) = provenance.used()["models"]  # what a chapter's provenance file will name
    assert used["source"] == "shipped weights" and used["sha256"] == e["sha256"] and used["slug"] == "vanilla"
    assert used["weights_hash"] == provenance.weights_hash(model) and used["commit"] == "test"
    assert json.loads((private / "weights" / weights.MANIFEST).read_text())["models"][0]["slug"] == "vanilla"


def test_a_flipped_byte_fails_loudly_naming_the_file(private):
    e = ship_tiny()
    path = private / "weights" / e["file"]
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(weights.WeightsError, match=rf"{e['file']} is corrupt.*git checkout"):
        build(tiny_lenet())


def test_weights_of_another_recipe_or_other_code_are_not_used(private):
    e = ship_tiny()
    changed = dataclasses.replace(tiny_lenet(), lr=2e-3)
    assert "lr: 0.001 → 0.002" in weights.explain("vanilla", "smoke", changed.key(), changed.recipe_hash(),
                                                  changed.code_hash())
    assert weights.lookup(changed.recipe_hash(), changed.code_hash(), changed.NAME) is None
    entries = weights.manifest()
    entries[0]["code_hash"] = "0" * 16
    weights._write_manifest(entries)
    r = tiny_lenet()
    with pytest.warns(UserWarning, match=rf"{e['file']} .* other training code"):
        assert weights.lookup(r.recipe_hash(), r.code_hash(), r.NAME) is None


def test_a_missing_file_is_trained_through_its_recipe_saying_how_long(private):
    e = ship_tiny()
    (private / "weights" / e["file"]).unlink()
    r = tiny_lenet()
    with pytest.warns(UserWarning, match=r"file is missing: not used; the recipe trains the model now \(it"):
        assert weights.lookup(r.recipe_hash(), r.code_hash(), r.NAME) is None


def test_ship_skips_what_is_up_to_date(private, monkeypatch):
    monkeypatch.setattr(zoo, "recipe", lambda slug, profile: tiny_lenet())
    first = zoo.ship("vanilla", "smoke")
    assert first is not None and first["slug"] == "vanilla"
    assert zoo.ship("vanilla", "smoke") is None


def test_build_trains_once_and_a_changed_knob_or_data_is_another_model(private, monkeypatch):
    recipe = tiny_lenet()
    first, h1 = build(recipe)
    calls = []
    real_fit = LeNet.fit
    monkeypatch.setattr(LeNet, "fit", lambda self, model: calls.append(1) or real_fit(self, model))
    again, h2 = build(recipe)
    assert calls == [] and h1 == h2  # loaded from the cache, not trained again
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    build(dataclasses.replace(recipe, seed=1))
    assert calls == [1]
    noise = torch.rand(128, 1, 28, 28), torch.ones(128).long()
    monkeypatch.setattr(LeNet, "training_data", lambda self: noise)
    build(recipe)
    assert calls == [1, 1]  # other training data: another cache entry


def test_recipes_check_their_knobs():
    with pytest.raises(ValueError, match="variant: expected one of"):
        AEGANRS.at("smoke", variant="bigan")


def test_finetuning_starts_from_the_trained_classifier(private):
    start = ThirdParty.at("smoke", n_train=128)
    model, _ = build(start)
    tuned, history = build(Finetuned.at("smoke", start=start, n_train=128))
    assert len(history["adv_acc"]) == 1
    distance = sum((a - b).pow(2).sum() for a, b in zip(tuned.parameters(), model.parameters())).sqrt()
    assert 0 < distance.item() < 0.5 * sum(p.pow(2).sum() for p in model.parameters()).sqrt().item()


def test_every_leaderboard_slug_names_the_same_model_in_its_chapter():
    root = Path(__file__).resolve().parents[1] / "results" / "quick"
    board = pd.read_csv(root / "07_leaderboard.csv")
    board = board[board["table"] == "leaderboard"]
    for slug in board["defense"].unique():
        chapter = pd.read_csv(root / f"{zoo.entry(slug).chapter}.csv")
        assert slug in set(chapter["defense"]), f"{slug} is not in {zoo.entry(slug).chapter}'s results"
