"""Shared by the Dagster-layer tests: readings with a short cycle, shard runs that train
given devices, and one evaluation of the stream sensor as the daemon makes it."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
from pymongo.database import Database

from iot_fed.config import get_settings
from iot_fed.definitions import defs
from iot_fed.defs.assets.models import (
    global_model,
    local_model,
    not_worse_than_promoted,
    promoted_model,
)
from iot_fed.defs.partitions import shards
from iot_fed.store.ingest_progress import record_landed
from iot_fed.store.repository import reading_counts
from iot_fed.store.shards import assign_shards, device_progress

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


def land_stored(db: Database) -> None:
    """Count the readings stored straight into ``sensor_readings`` (not by an ingester) as
    landed, and give their devices a shard, as an ingester and the sensor would."""
    stored = {m: c["count"] for m, c in reading_counts(db).items()}
    known = device_progress(db)
    new = {m: n - (known[m].readings if m in known else 0) for m, n in stored.items()}
    now = dt.datetime.now(dt.UTC)
    record_landed(db, "test", {}, new, dict.fromkeys(new, now))
    assign_shards(db, device_progress(db), get_settings().devices_per_shard)


def shard_keys(instance: dg.DagsterInstance, db: Database, devices: list[str]) -> dict[str, list]:
    """The shards of ``devices`` (landed and assigned first), added as partitions."""
    land_stored(db)
    progress = device_progress(db)
    out: dict[str, list[int]] = {}
    for d in devices:
        out.setdefault(progress[int(d)].shard, []).append(int(d))
    instance.add_dynamic_partitions(shards.name, sorted(out))
    return out


def run_devices(instance, resources, keys: list[str], selection=None, run_config=None):
    """One shard run training ``keys`` (a ``devices`` run-config field), as retraining
    given devices is; the devices must share a shard."""
    [(shard, devices)] = shard_keys(instance, resources["mongodb"].db, keys).items()
    config = {"devices": devices, **(run_config or {})}
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        partition_key=shard,
        selection=selection or [local_model],
        run_config={"ops": {"local_model": {"config": config}}},
    )


def tick(instance: dg.DagsterInstance, resources: dict, cursor: str | None):
    definitions = defs()
    sensor = definitions.get_sensor_def("iot_stream_sensor")
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources=resources,
        definitions=definitions,
        instance_ref=instance.get_ref(),  # as the daemon's: run requests' shards are checked
    ) as ctx:
        data = sensor.evaluate_tick(ctx)
    for req in data.dynamic_partitions_requests or []:  # what the daemon does
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    for event in data.asset_events:  # what the daemon does with reported materializations
        instance.report_runless_asset_event(event)
    return data


def launch(instance, resources, req: dg.RunRequest, run_config=None, raise_on_error=True):
    """Run what a sensor's run request asks for, in process (its partition and tags)."""
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        selection=req.asset_selection,
        partition_key=req.partition_key,
        tags=req.tags,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )
