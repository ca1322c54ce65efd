"""Live quality from a cold start: the share of clean readings flagged, minute by minute.

Not a test. For each ``--rates`` value the whole pipeline (``iot-fed run --rate R``: its
own Kafka and MongoDB-compatible server on free ports, a fresh data dir and Dagster home,
the real sensors, training, promotion and the streaming scorer; the reporting store and
dashboards off) runs for ``--minutes`` from nothing. Then, by the minute of each reading's
Kafka append (from the first one):

- readings scored, the generator's clean ones (no fault label), and how many of those were
  flagged (the goal: at most 0.1 % in every minute);
- the model versions that scored them and the share still in the learning state;
- incidents opened on clean readings.

    .venv/bin/python bench/bench_live_quality.py [--rates 10,200] [--minutes 10] [--quick]
        [--motes M] [--dump PATH]

``--motes`` streams a generated fleet of ``M`` motes instead of the default 54: at the same
rate each mote's data time runs ``54 / M`` times faster, so a fleet reaches its first
calibration (a whole day of a device's data) sooner. ``--dump PATH`` writes every flagged
clean reading's prediction (JSON lines, ``PATH`` with ``_<rate>`` added) for a diagnosis.
Prints a table per rate; writes ``bench/results/live_quality.json`` (section ``rate_<R>``,
or ``rate_<R>_motes_<M>``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from common import ROOT, print_table, write_results
from pymongo import MongoClient

from iot_fed.config import get_settings
from iot_fed.services.process import port_open
from iot_fed.store.collections import GLOBAL_MODELS, INCIDENTS, PREDICTIONS

IOT_FED = str(Path(sys.executable).with_name("iot-fed"))
GOAL_FLAGGED = 0.001  # at most 0.1 % of a minute's clean readings flagged


def _free_port(taken: set[int]) -> int:
    """A free port p whose p+1000 (a KRaft controller's) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + 1000 <= 65535 and not port_open("127.0.0.1", p + 1000) and p not in taken:
            taken |= {p, p + 1000}
            return p


def _env(home: Path, motes: int | None) -> dict[str, str]:
    taken: set[int] = set()
    kafka, mongo, api, dagster = (_free_port(taken) for _ in range(4))
    fleet = {} if motes is None else {"IOT_FED_GENERATOR_MOTES": str(motes)}
    return {
        **os.environ,
        **fleet,
        "IOT_FED_DATA_DIR": str(home / "data"),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "IOT_FED_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "IOT_FED_MONGODB_URI": f"mongodb://127.0.0.1:{mongo}/",
        "IOT_FED_API_PORT": str(api),
        "IOT_FED_DAGSTER_PORT": str(dagster),
        "IOT_FED_REPORTING": "false",
    }


def per_minute(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The predictions grouped by the minute of their Kafka append, from the first one."""
    if not docs:
        return []
    t0 = min(d["kafka_ts"] for d in docs)
    rows: dict[int, dict[str, Any]] = defaultdict(
        lambda: {
            "scored": 0,
            "clean": 0,
            "flagged_clean": 0,
            "learning": 0,
            "versions": Counter(),
            "motes": Counter(),
        }
    )
    for d in docs:
        r = rows[int((d["kafka_ts"] - t0).total_seconds() // 60)]
        r["scored"] += 1
        r["versions"][d.get("model_version")] += 1
        r["learning"] += str(d.get("reason") or "").startswith("learning:")
        if d.get("label") is None:
            r["clean"] += 1
            r["flagged_clean"] += bool(d.get("is_anomaly"))
            if d.get("is_anomaly"):
                r["motes"][d.get("moteid")] += 1
    out = []
    for minute in sorted(rows):
        r = rows[minute]
        out.append(
            {
                "minute": minute + 1,
                "scored": r["scored"],
                "clean": r["clean"],
                "flagged_clean": r["flagged_clean"],
                "flagged_pct": round(100 * r["flagged_clean"] / r["clean"], 3)
                if r["clean"]
                else None,
                "learning_pct": round(100 * r["learning"] / r["scored"], 1),
                "versions": ",".join(str(v) for v in sorted(r["versions"], key=lambda v: v or 0)),
                "flagged_motes": dict(r["motes"].most_common(3)),
            }
        )
    return out


def run_rate(
    rate: float, minutes: float, motes: int | None = None, dump: Path | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_live_quality_") as tmp:
        home = Path(tmp)
        env = _env(home, motes)
        log = home / "run.log"
        proc = subprocess.Popen(
            [IOT_FED, "run", "--rate", f"{rate:g}"],
            env=env,
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = MongoClient(env["IOT_FED_MONGODB_URI"], serverSelectionTimeoutMS=5000)
        db = client[get_settings().mongodb_database]
        try:
            first = None  # the clock starts at the first scored reading
            deadline = time.monotonic() + 900
            while first is None or time.monotonic() < first + 60 * minutes:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline or first, "nothing scored in 15 minutes"
                if first is None:
                    try:
                        if db[PREDICTIONS].estimated_document_count():
                            first = time.monotonic()
                    except Exception:  # the server is not up yet
                        pass
                time.sleep(5)
            fields = {"kafka_ts": 1, "label": 1, "is_anomaly": 1, "reason": 1, "model_version": 1}
            docs = list(db[PREDICTIONS].find({}, {**fields, "moteid": 1}))
            if dump is not None:  # every flagged clean reading, whole, for a diagnosis
                flagged = db[PREDICTIONS].find({"is_anomaly": True, "label": None}, {"_id": 0})
                dump.write_text("\n".join(json.dumps(d, default=str) for d in flagged))
            incidents = list(db[INCIDENTS].find({}, {"state": 1, "fault_type": 1}))
            versions = list(
                db[GLOBAL_MODELS].find({}, {"version": 1, "promoted": 1, "created_at": 1})
            )
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the supervisor stops its children
                try:
                    proc.wait(180)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            client.close()
            subprocess.run(
                [IOT_FED, "services", "down"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL
            )
    rows = per_minute(docs)
    worst = max((r["flagged_pct"] or 0 for r in rows), default=None)
    return {
        "rate": rate,
        "motes": motes or get_settings().generator_motes,
        "minutes": minutes,
        "rows": rows,
        "worst_minute_flagged_pct": worst,
        "goal_met": worst is not None and worst <= 100 * GOAL_FLAGGED,
        "incidents": len(incidents),
        "global_versions": len(versions),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="10,200")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--quick", action="store_true", help="one rate (200 rec/s), 3 minutes")
    ap.add_argument("--motes", type=int, default=None, help="generated motes (default 54)")
    ap.add_argument("--dump", type=Path, default=None, help="flagged clean readings (JSON lines)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the pipeline
    if args.quick:
        args.rates, args.minutes = "200", 3
    sections = {}
    for rate in (float(r) for r in args.rates.split(",")):
        dump = args.dump and args.dump.with_name(f"{args.dump.stem}_{rate:g}{args.dump.suffix}")
        res = run_rate(rate, args.minutes, args.motes, dump)
        print_table(
            f"{rate:g} rec/s, {res['motes']} motes, from a cold start: clean readings "
            f"flagged per minute (goal <= {100 * GOAL_FLAGGED:g} %); "
            f"worst {res['worst_minute_flagged_pct']} %, {res['incidents']} incidents, "
            f"{res['global_versions']} global versions",
            [
                "minute",
                "scored",
                "clean",
                "flagged",
                "% flagged",
                "% learning",
                "versions",
                "motes",
            ],
            [
                [
                    r["minute"],
                    r["scored"],
                    r["clean"],
                    r["flagged_clean"],
                    r["flagged_pct"],
                    r["learning_pct"],
                    r["versions"],
                    " ".join(f"{m}:{n}" for m, n in r["flagged_motes"].items()),
                ]
                for r in res["rows"]
            ],
        )
        fleet = "" if args.motes is None else f"_motes_{args.motes}"
        sections[f"rate_{rate:g}{fleet}"] = res
        write_results("live_quality", sections, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
