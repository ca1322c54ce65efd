"""Shared by the Dagster-layer tests: readings with a short cycle, a training run for a
range of devices, and one evaluation of the stream sensor as the daemon makes it."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from iot_fed.definitions import defs
from iot_fed.defs.assets.models import (
    global_model,
    local_model,
    not_worse_than_promoted,
    promoted_model,
)
from iot_fed.defs.partitions import RANGE_END_TAG, RANGE_START_TAG

ASSETS = [local_model, global_model, promoted_model, not_worse_than_promoted]


def diurnal_readings(
    motes: int, per_mote: int, start_epoch: int = 0, period_h: float = 1.0
) -> pd.DataFrame:
    """Readings with a temperature/humidity cycle of ``period_h`` hours (short, so a few
    hundred readings cover whole cycles and successive rounds see the same distribution)."""
    rows = []
    for m in range(1, motes + 1):
        e = np.arange(start_epoch, start_epoch + per_mote)
        ts = pd.Timestamp("2004-03-01", tz="UTC") + pd.to_timedelta(e * 31, unit="s")
        hours = e * 31 / 3600
        rows.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "epoch": e,
                    "moteid": m,
                    "temperature": 21 + 3 * np.sin(2 * np.pi * hours / period_h) + 0.1 * m,
                    "humidity": 38 - 4 * np.sin(2 * np.pi * hours / period_h),
                    "light": np.where((hours % period_h) < period_h / 2, 400.0, 5.0),
                    "voltage": 2.7 - 1e-5 * e,
                    "label": None,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def run_devices(instance, resources, keys: list[str], selection=None):
    tags = {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        tags=tags,
        selection=selection or [local_model],
    )


def tick(instance: dg.DagsterInstance, resources: dict, cursor: str | None):
    definitions = defs()
    sensor = definitions.get_sensor_def("iot_stream_sensor")
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, definitions=definitions
    ) as ctx:
        data = sensor.evaluate_tick(ctx)
    for req in data.dynamic_partitions_requests or []:  # what the daemon does
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    for event in data.asset_events:  # what the daemon does with reported materializations
        instance.report_runless_asset_event(event)
    return data
