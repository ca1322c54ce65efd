"""Vectorised scoring of pandas batches (the bodies of Spark ``mapInPandas`` calls).

Everything here runs on executors, one whole Arrow batch at a time, with the numpy
scoring of :mod:`iot_fed.fl.scoring` (no JAX, no per-row Python calls).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
from pyspark.broadcast import Broadcast
from pyspark.sql import types as T

from iot_fed.analytics.models import bundle_from_blob
from iot_fed.fl.features import features_from_columns
from iot_fed.fl.scoring import flag, forward_numpy, score_batch
from iot_fed.fl.serialization import ModelBundle


def features_of(pdf: pd.DataFrame) -> np.ndarray:
    """The ``(n, 6)`` feature matrix of a readings batch."""
    return features_from_columns(
        pdf["temperature"], pdf["humidity"], pdf["light"], pdf["voltage"], pdf["ts"]
    )


def mean_abs_error(bundle: ModelBundle, features: np.ndarray) -> np.ndarray:
    """Per-reading mean absolute reconstruction error (standardised units), as ``score_batch``
    but with ``|.|`` instead of ``(.)**2``."""
    x = bundle.norm.apply(features) if bundle.norm is not None else features
    recon = forward_numpy(bundle.params, x, bundle.spec.activation)
    return np.mean(np.abs(recon - x[:, : bundle.spec.n_outputs]), axis=-1)


# --- global-model scores (predictions, streaming, benchmark) ------------------------

SCORES_SCHEMA = T.StructType(
    [
        T.StructField("ts", T.TimestampType(), False),
        T.StructField("epoch", T.LongType(), False),
        T.StructField("moteid", T.IntegerType(), False),
        T.StructField("label", T.StringType(), True),
        T.StructField("score", T.DoubleType(), False),
        T.StructField("is_anomaly", T.BooleanType(), False),
    ]
)


def score_with(bundle: ModelBundle, threshold: float, pdf: pd.DataFrame) -> pd.DataFrame:
    """``pdf``'s key columns plus ``score`` and ``is_anomaly`` for one model."""
    scores = score_batch(bundle, features_of(pdf)).astype(np.float64)
    return pd.DataFrame(
        {
            "ts": pdf["ts"],
            "epoch": pdf["epoch"],
            "moteid": pdf["moteid"],
            "label": pdf["label"],
            "score": scores,
            "is_anomaly": flag(scores, threshold),
        }
    )


def score_devices(bundle: ModelBundle, threshold: float, pdf: pd.DataFrame) -> pd.DataFrame:
    """As :func:`score_with`, but through :func:`iot_fed.fl.stream_scoring.score_device`
    per device over its readings in epoch order (empty history first), so batch scores
    equal the stream's. ``threshold`` (the model document's) overrides the bundle's."""
    from iot_fed.fl.stream_scoring import CHANNELS, DeviceHistory, score_device

    if bundle.threshold != threshold:
        bundle = copy.copy(bundle)
        bundle.threshold = threshold
    pdf = pdf.sort_values(["moteid", "epoch"]).drop_duplicates(["moteid", "epoch"])
    ts_ms = (pd.to_datetime(pdf["ts"], utc=True).astype("int64") // 1_000_000).to_numpy()
    score = np.empty(len(pdf))
    flags = np.empty(len(pdf), bool)
    motes = pdf["moteid"].to_numpy()
    bounds = np.flatnonzero(np.diff(motes)) + 1
    for rows in np.split(np.arange(len(pdf)), bounds):
        if not len(rows):
            continue
        part = pdf.iloc[rows]
        got, _ = score_device(
            bundle,
            DeviceHistory.empty(),
            moteid=int(motes[rows[0]]),
            epochs=part["epoch"].to_numpy(np.int64),
            ts_ms=ts_ms[rows],
            values=part[list(CHANNELS)].to_numpy(np.float64),
        )
        score[rows], flags[rows] = got.score, got.flag
    return pd.DataFrame(
        {
            "ts": pdf["ts"].to_numpy(),
            "epoch": pdf["epoch"].to_numpy(),
            "moteid": pdf["moteid"].to_numpy(),
            "label": pdf["label"].to_numpy(),
            "score": score,
            "is_anomaly": flags,
        }
    )


def global_scorer(blob: Broadcast, threshold: float):
    """mapInPandas body: readings -> :data:`SCORES_SCHEMA` with the broadcast global model."""

    def score(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle = bundle_from_blob(blob.value)
        for pdf in batches:
            yield score_with(bundle, threshold, pdf)

    return score


# --- global vs local (evaluation) ---------------------------------------------------

EVAL_SCHEMA = T.StructType(
    [
        T.StructField("moteid", T.IntegerType(), False),
        T.StructField("is_fault", T.BooleanType(), False),
        T.StructField("g_mse", T.DoubleType(), False),
        T.StructField("g_mae", T.DoubleType(), False),
        T.StructField("g_flag", T.BooleanType(), False),
        T.StructField("has_local", T.BooleanType(), False),
        T.StructField("l_mse", T.DoubleType(), False),
        T.StructField("l_mae", T.DoubleType(), False),
        T.StructField("l_flag", T.BooleanType(), False),
    ]
)


def evaluate_batch(
    global_bundle: ModelBundle,
    global_threshold: float,
    local: dict[int, tuple[ModelBundle, float]],
    pdf: pd.DataFrame,
) -> pd.DataFrame:
    """Per-reading errors and flags of the global model and the reading's device model.

    ``has_local`` is False (and the local columns 0 / False) for readings of devices
    without a local model.
    """
    feats = features_of(pdf)
    n = len(pdf)
    g_mse = score_batch(global_bundle, feats).astype(np.float64)
    out = pd.DataFrame(
        {
            "moteid": pdf["moteid"].to_numpy(np.int32),
            "is_fault": pdf["label"].notna().to_numpy(),
            "g_mse": g_mse,
            "g_mae": mean_abs_error(global_bundle, feats).astype(np.float64),
            "g_flag": flag(g_mse, global_threshold),
        }
    )
    has_local = np.zeros(n, bool)
    l_mse, l_mae, l_flag = np.zeros(n), np.zeros(n), np.zeros(n, bool)
    motes = out["moteid"].to_numpy()
    for mote in np.unique(motes):
        model = local.get(int(mote))
        if model is None:
            continue
        bundle, threshold = model
        rows = np.flatnonzero(motes == mote)
        has_local[rows] = True
        s = score_batch(bundle, feats[rows])
        l_mse[rows] = s
        l_mae[rows] = mean_abs_error(bundle, feats[rows])
        l_flag[rows] = flag(s, threshold)
    out["has_local"], out["l_mse"], out["l_mae"], out["l_flag"] = has_local, l_mse, l_mae, l_flag
    return out


def evaluation_scorer(global_blob: Broadcast, global_threshold: float, local_blobs: Broadcast):
    """mapInPandas body: readings -> :data:`EVAL_SCHEMA`; ``local_blobs`` broadcasts
    ``{moteid: (blob, threshold)}``."""

    def score(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        g = bundle_from_blob(global_blob.value)
        local = {m: (bundle_from_blob(b), t) for m, (b, t) in local_blobs.value.items()}
        for pdf in batches:
            yield evaluate_batch(g, global_threshold, local, pdf)

    return score
