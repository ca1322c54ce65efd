"""Pandera schemas for the clean Intel Lab tables (validated in the clean step)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from iot_fed.readings import CHANNELS

UtcTimestamp = Annotated[pd.DatetimeTZDtype, "ns", "UTC"]


class CleanReadings(pa.DataFrameModel):
    """One typed, de-duplicated reading per (moteid, epoch), sorted by (ts, moteid).

    Impossible values are allowed but must be flagged: ``fault`` is True exactly when
    ``fault_reason`` is set.
    """

    ts: Series[UtcTimestamp] = pa.Field(nullable=False)
    epoch: Series[np.int64] = pa.Field(ge=0)
    moteid: Series[np.int64] = pa.Field(ge=1)
    temperature: Series[np.float64] = pa.Field(nullable=False)
    humidity: Series[np.float64] = pa.Field(nullable=False)
    light: Series[np.float64] = pa.Field(nullable=False)
    voltage: Series[np.float64] = pa.Field(nullable=False)
    label: Series[object] = pa.Field(nullable=True)
    fault: Series[bool]
    fault_reason: Series[object] = pa.Field(nullable=True)

    class Config:
        strict = True
        ordered = True
        unique = ["moteid", "epoch"]

    @pa.dataframe_check(error="channels must be finite")
    @classmethod
    def finite_channels(cls, df: pd.DataFrame) -> pd.Series:
        return pd.Series(
            np.isfinite(df[list(CHANNELS)]).all(axis=1),
            index=df.index,
        )

    @pa.dataframe_check(error="fault must be True exactly when fault_reason is set")
    @classmethod
    def fault_has_reason(cls, df: pd.DataFrame) -> pd.Series:
        return df["fault"] == df["fault_reason"].notna()

    @pa.dataframe_check(error="rows must be sorted by (ts, moteid)")
    @classmethod
    def sorted_by_ts(cls, df: pd.DataFrame) -> bool:
        if len(df) < 2:
            return True
        key = pd.MultiIndex.from_arrays([df["ts"], df["moteid"]])
        return bool(key.is_monotonic_increasing)

    @pa.check("label", "fault_reason", name="str_or_null", element_wise=True)
    @classmethod
    def str_or_null(cls, v: object) -> bool:
        return v is None or isinstance(v, str)


class MoteLocations(pa.DataFrameModel):
    """``mote_locs.txt``: one row per mote, coordinates in metres."""

    moteid: Series[np.int64] = pa.Field(ge=1, unique=True)
    x: Series[np.float64] = pa.Field(ge=0)
    y: Series[np.float64] = pa.Field(ge=0)

    class Config:
        strict = True
