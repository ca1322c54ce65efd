"""What one training shard run costs, and where: this checkout against a baseline.

Seeds ``--devices`` devices x ``--per-device`` readings into a fresh database of the
project's MongoDB server (``bench_fed_scale.seed``: as the ingesters land them), assigns
shards, then times ``train_shard`` on the first shard in a child process per checkout
(this one, and ``--baseline DIR``, e.g. ``git worktree add /tmp/base <commit>``, run with
this venv), alternating ``--repeat`` times; each run starts from untrained devices. The
child splits the time by stage by wrapping the round's module-level calls: the readings
read, the newest-epoch bound of new devices, window features, training, calibration, the
save. Prints a table, writes ``bench/results/shard_run.json`` (section ``shard_run``).

    .venv/bin/python bench/bench_shard_run.py [--devices 1000] [--per-device 300]
        [--baseline DIR] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

DB = "bench_shard_run"
STAGES = {
    # stage: (module, attributes) wrapped in the child: the first one the checkout has
    "read": ("iot_fed.federation.windows", ("readings_for_devices",)),
    "newest_epoch": ("iot_fed.federation.windows", ("reading_counts",)),
    "newest_epoch_landed": ("iot_fed.federation.windows", ("landed_last_epochs",)),
    "features": ("iot_fed.federation.windows", ("to_windows", "to_window")),
    "train": ("iot_fed.federation.local_round", ("client_update",)),
    "calibrate": ("iot_fed.federation.local_round", ("calibrate_bundle",)),
    "save": ("iot_fed.store.repository", ("save_local_models",)),
}


def child(devices: int) -> dict[str, Any]:
    """One timed shard run on the checkout on ``sys.path`` (the database is seeded)."""
    import importlib

    from iot_fed.config import get_settings
    from iot_fed.federation.shard_round import train_shard
    from iot_fed.store.client import connect
    from iot_fed.store.shards import device_progress

    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)

    def timed(stage: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            calls[stage] += 1
            try:
                return fn(*a, **k)
            finally:
                spent[stage] += time.perf_counter() - t

        return wrapper

    for stage, (mod, attrs) in STAGES.items():
        m = importlib.import_module(mod)
        attr = next((a for a in attrs if hasattr(m, a)), None)
        if attr is not None:
            setattr(m, attr, timed(stage, getattr(m, attr)))
    s = get_settings().model_copy(update={"mongodb_database": DB})
    db = connect(s.mongodb_uri, DB, timeout=30)
    db["ingest_devices"].update_many({}, {"$set": {"trained": 0}})
    for name in ("local_models", "device_state"):
        db[name].delete_many({})
    shard = min(p.shard for p in device_progress(db).values() if p.shard)
    t0 = time.perf_counter()
    out = train_shard(db, shard, s)
    total = time.perf_counter() - t0
    trained = sum(1 for o in out if o.version)
    db.client.close()
    return {
        "devices": trained,
        "total_s": total,
        **{k: spent.get(k, 0.0) for k in STAGES},
        "calls": {k: calls.get(k, 0) for k in STAGES},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--per-device", type=int, default=300)
    ap.add_argument("--baseline", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="60 devices x 120 readings, once")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return 0
    from bench_fed_scale import seed
    from common import ROOT, print_table, write_results

    from iot_fed.config import get_settings
    from iot_fed.services import manager
    from iot_fed.store import init_database
    from iot_fed.store.client import connect
    from iot_fed.store.shards import assign_shards, device_progress

    if args.quick:
        args.devices, args.per_device, args.repeat = 60, 120, 1
    s = get_settings().model_copy(update={"mongodb_database": DB})
    with manager.session(s, only=["mongodb"]):  # stops the server at the end if it started it
        db = connect(s.mongodb_uri, DB, timeout=30)
        db.client.drop_database(DB)
        init_database(db)
        seeded = seed(db, s, args.devices, args.per_device, 20_000)
        assign_shards(db, device_progress(db), s.devices_per_shard)
        checkouts = {"this": ROOT}
        if args.baseline:
            checkouts["baseline"] = args.baseline.resolve()
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in checkouts}
        for _ in range(args.repeat):
            for name, root in checkouts.items():
                got = subprocess.run(
                    [sys.executable, __file__, "--child", str(args.devices)],
                    env={**os.environ, "PYTHONPATH": str(root)},
                    cwd=root,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs[name].append(json.loads(got.stdout.strip().splitlines()[-1]))
        db.client.drop_database(DB)
        db.client.close()
    cols = ["total_s", *STAGES]
    rows = {
        name: {c: statistics.median(r[c] for r in rs) for c in cols}
        | {"devices": rs[0]["devices"], "runs": len(rs), "calls": rs[0]["calls"]}
        for name, rs in runs.items()
    }
    table = [[name, r["devices"], *[round(r[c], 2) for c in cols]] for name, r in rows.items()]
    if "baseline" in rows:
        ratio = rows["baseline"]["total_s"] / max(rows["this"]["total_s"], 1e-9)
        table.append(["baseline / this", "", round(ratio, 2), *[""] * len(STAGES)])
    print_table(
        f"one shard run, {args.devices} devices x {args.per_device} readings "
        f"(median of {args.repeat}, seconds)",
        ["code", "devices", *cols],
        table,
    )
    write_results(
        "shard_run",
        {"shard_run": {**seeded, "per_device": args.per_device, "rows": rows, "runs": runs}},
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
