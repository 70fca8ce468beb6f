"""The numbers typed from the papers (``book/published/*.csv``): well-formed, unique, in range, and with a
note wherever a setting in the key is not the paper's own."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from purify_lib.results import KEY, PROPORTIONS, THREATS

FILES = sorted((Path(__file__).resolve().parents[1] / "book" / "published").glob("*.csv"))
FRACTIONS = {*PROPORTIONS, "misclassification_rate", "crossover_rho", "confidence_true_class"}
COUNTS = {"train_seconds", "epochs", "samples"}
DIFFERENCES = {"accuracy_difference"}


@pytest.fixture(params=FILES, ids=lambda p: p.stem)
def published(request) -> pd.DataFrame:
    return pd.read_csv(request.param, keep_default_na=False, na_values=[""], dtype={"note": str})


def test_every_chapter_has_published_numbers():
    assert [p.stem for p in FILES] == ["02_apegan", "03_apeganpp", "04_aegan", "05_gandef", "06_isogan"]


def test_columns_keys_threats_and_metrics(published):
    assert list(published.columns) == ["chapter", *KEY[:7], "metric", "value", "source", "note"]
    assert published["chapter"].nunique() == 1
    assert not published.duplicated(list(KEY)).any(), published[published.duplicated(list(KEY), keep=False)]
    assert set(published["threat"]) <= set(THREATS)
    assert set(published["metric"]) <= FRACTIONS | COUNTS | DIFFERENCES
    assert published["source"].notna().all() and (published["source"].str.strip() != "").all()


def test_values_lie_in_their_metric_s_range(published):
    value, metric = published["value"], published["metric"]
    assert value[metric.isin(FRACTIONS)].between(0, 1).all()
    assert value[metric.isin(DIFFERENCES)].between(-1, 1).all()
    assert (value[metric.isin(COUNTS)] >= 0).all()
    assert (published["eps"].dropna() >= 0).all()


def test_settings_the_papers_do_not_state_carry_a_note():
    notes = {p.stem: pd.read_csv(p, keep_default_na=False) for p in FILES}
    ape, app = notes["02_apegan"], notes["03_apeganpp"]
    assert (ape.loc[ape["attack"] == "random_noise", "note"] != "").all()  # the noise's ε: our reading
    assert (app.loc[app["attack"].isin(["fgsm", "bim"]), "note"] != "").all()  # ε from the authors' code
