"""Batch evaluation report and predictions against a direct numpy computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from iot_fed.analytics.evaluation import evaluation_report
from iot_fed.analytics.models import ModelNotAvailableError
from iot_fed.analytics.predictions import write_predictions
from iot_fed.store import EVALUATION_REPORTS
from iot_fed_tests.analytics.helpers import (
    expected,
    expected_scores,
    make_bundle,
    make_readings,
    store_global,
    store_local,
    store_readings,
    stored_readings,
)


def _expected(bundle, df: pd.DataFrame) -> dict[str, float]:
    """The report's figures: ``mse``/``mae`` over the per-channel errors of ``score_device``."""
    e = expected(bundle, df)
    err = e.filter(like="err_").to_numpy()
    f = e["flag"].to_numpy(bool)
    y = df["label"].notna().to_numpy()
    kw = {"zero_division": np.nan}
    return {
        "mse": np.mean(np.mean(err**2, axis=1)),
        "mae": np.mean(np.mean(np.abs(err), axis=1)),
        "anomaly_rate": f.mean(),
        "precision": precision_score(y, f, **kw),
        "recall": recall_score(y, f, **kw),
        "f1": f1_score(y, f, **kw),
    }


def _close(got, want) -> bool:
    if want is None or (isinstance(want, float) and np.isnan(want)):
        return got is None or (isinstance(got, float) and np.isnan(got))
    return got is not None and np.isclose(got, want, rtol=1e-5, atol=1e-9)


@pytest.fixture
def stored(analytics_settings, mongo_db):
    """Readings of 4 motes, a promoted global model and local models for motes 1-3."""
    df = make_readings()
    store_readings(mongo_db, df)
    g = make_bundle(df, seed=1)
    store_global(mongo_db, g)
    local = {m: make_bundle(df[df.moteid == m], seed=10 + m) for m in (1, 2, 3)}
    versions = {m: store_local(mongo_db, m, b) for m, b in local.items()}
    return g, local, versions


def test_evaluation_report_matches_numpy(spark, analytics_settings, mongo_db, stored):
    g, local, versions = stored
    report = evaluation_report(spark, analytics_settings)
    df = stored_readings(mongo_db)
    table = report.per_device.set_index("moteid")
    assert sorted(table.index) == [1, 2, 3, 4]
    for mote, part in df.groupby("moteid"):
        row = table.loc[mote]
        for k, want in _expected(g, part).items():
            assert _close(row[f"global_{k}"], want), (mote, k, row[f"global_{k}"], want)
        if mote in local:
            assert row["local_version"] == versions[mote]
            for k, want in _expected(local[mote], part).items():
                assert _close(row[f"local_{k}"], want), (mote, k, row[f"local_{k}"], want)
        else:
            assert pd.isna(row["local_version"]) and pd.isna(row["local_mse"])
    fleet = _expected(g, df)
    s = report.summary
    assert s["n_readings"] == len(df) and s["n_devices"] == 4
    assert s["n_devices_with_local_model"] == 3 and s["has_labels"] is True
    for k, want in fleet.items():
        assert _close(s[f"global_{k}"], want), (k, s[f"global_{k}"], want)
    covered = df[df.moteid.isin(list(local))]
    assert _close(s["global_on_local_devices_mse"], _expected(g, covered)["mse"])
    local_rate = np.mean(
        np.concatenate(
            [expected_scores(local[m], covered[covered.moteid == m])[1] for m in sorted(local)]
        )
    )
    assert _close(s["local_anomaly_rate"], local_rate)
    # stored and written artefacts
    doc = mongo_db[EVALUATION_REPORTS].find_one({"report_id": report.report_id})
    assert doc["global_version"] == 1 and len(doc["devices"]) == 4
    assert doc["summary"]["n_readings"] == len(df)
    assert report.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(pd.read_parquet(report.parquet_path)) == 4


def test_predictions_are_idempotent(spark, analytics_settings, mongo_db, stored):
    g, _, _ = stored
    first = write_predictions(spark, analytics_settings)
    df = stored_readings(mongo_db)
    assert (first.n, first.inserted, first.model_version) == (len(df), len(df), 1)
    incidents = {d.pop("_id"): d for d in mongo_db["incidents"].find({}, {"updated_at": 0})}
    assert 0 < first.incidents == len(incidents) <= first.anomalies
    assert {d["state"] for d in incidents.values()} <= {"open", "resolved", "stale"}
    again = write_predictions(spark, analytics_settings)
    assert (again.inserted, again.updated, again.kept) == (0, 0, len(df))
    # the same incidents again: the same ids and documents, none twice
    assert {d.pop("_id"): d for d in mongo_db["incidents"].find({}, {"updated_at": 0})} == (
        incidents
    )
    assert mongo_db["predictions"].count_documents({}) == len(df)
    preds = pd.DataFrame(list(mongo_db["predictions"].find({}, {"_id": 0})))
    preds = preds.sort_values(["moteid", "epoch"]).reset_index(drop=True)
    scores, flags = expected_scores(g, df)
    np.testing.assert_allclose(preds["score"], scores, rtol=1e-6)
    np.testing.assert_array_equal(preds["is_anomaly"], flags)
    assert first.anomalies == int(flags.sum())
    assert set(preds["model_version"]) == {1} and set(preds["source"]) == {"batch"}
    # a newer promoted model replaces every verdict; an older explicit one changes nothing
    store_global(mongo_db, make_bundle(df, seed=2))
    newer = write_predictions(spark, analytics_settings)
    assert (newer.model_version, newer.inserted, newer.updated) == (2, 0, len(df))
    older = write_predictions(spark, analytics_settings, model_version=1)
    assert older.updated == 0 and older.kept == len(df)
    assert mongo_db["predictions"].count_documents({"model_version": 2}) == len(df)


def test_missing_model_names_the_version(spark, analytics_settings, mongo_db, stored):
    with pytest.raises(ModelNotAvailableError, match="global model version 9 not found"):
        evaluation_report(spark, analytics_settings, global_version=9)
    mongo_db["global_models"].update_one({"version": 1}, {"$set": {"params": b"garbage"}})
    with pytest.raises(ModelNotAvailableError, match="global model version 1 is unreadable"):
        write_predictions(spark, analytics_settings)
