"""``reporting.incidents``: every incident upserted on its ``_id`` as it changes state.

Incidents change in place (open -> resolved/stale, ``last_seen`` and ``peak_ratio`` grow),
so they are read by their last write, not by insertion: the watermark is the
(``updated_at``, ``_id``) of the last one copied. A caught-up refresh re-reads
:data:`~iot_fed.reporting.increment.OVERLAP` before it (writers' clocks and commits lag);
a refresh that stopped at ``batch`` resumes after the exact key, so a batch written with one
``updated_at`` never stalls it. The upsert keeps a stored row whose ``rev`` is newer, as the
MongoDB writes do, so re-runs and replays never take an incident back.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import psycopg
from pymongo.database import Database

from iot_fed.reporting import increment as inc
from iot_fed.reporting.increment import RefreshResult
from iot_fed.store import reporting_reads as reads

SOURCE = "incidents"
COLUMNS = (
    "id",
    "moteid",
    "start_ts",
    "last_seen",
    "end_ts",
    "state",
    "channels",
    "peak_ratio",
    "fault_type",
    "model_version",
    "n_flagged",
    "rev",
    "updated_at",
)


def incident_row(d: Mapping[str, Any]) -> tuple[Any, ...]:
    """One ``reporting.incidents`` row (in :data:`COLUMNS` order) from a stored incident."""
    end = d.get("end")
    return (
        str(d["_id"]),
        int(d["moteid"]),
        inc.utc(d["start"]),
        inc.utc(d["last_seen"]),
        inc.utc(end) if end else None,
        str(d["state"]),
        [str(c) for c in d.get("channels") or []],
        inc.finite(d.get("peak_ratio")),
        d.get("fault_type"),
        d.get("model_version"),
        d.get("n_flagged"),
        int(d["rev"]),
        inc.utc(d["updated_at"]),
    )


_UPSERT = (
    f"INSERT INTO reporting.incidents ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
    f"ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
    # a newer revision already copied is kept (rev only grows along an incident's life)
    + " WHERE reporting.incidents.rev <= EXCLUDED.rev"
)


def refresh_incidents(
    db: Database, conn: psycopg.Connection, batch: int, res: RefreshResult
) -> None:
    """Copy the incidents written since the watermark (at most ``batch``), advance it."""
    wm = inc.watermark(conn, SOURCE)
    mark = json.loads(wm[0]) if wm else None
    after = dt.datetime.fromisoformat(mark["t"]) if mark else inc.EPOCH_START
    if wm and wm[1]:  # caught up: everything written since shortly before the mark
        docs = reads.incidents_written_after(db, after - inc.OVERLAP, None, batch)
    else:  # resuming a partial copy, or the first one: strictly after the key
        docs = reads.incidents_written_after(db, after, mark["id"] if mark else None, batch)
    res.incidents_seen = len(docs)
    if not docs:
        return
    rows = [incident_row(d) for d in docs]
    with conn.cursor() as cur:
        cur.executemany(_UPSERT, rows)
    last = max(rows, key=lambda r: (r[-1], r[0]))
    if mark is None or (last[-1], last[0]) > (after, mark["id"]):
        mark = {"t": last[-1].isoformat(), "id": last[0]}
    inc.set_watermark(conn, SOURCE, json.dumps(mark), len(docs) < batch)
