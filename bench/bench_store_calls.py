"""Database calls of one aggregation round, and a global version's own document size.

``round``: D devices each get a local model (and 60 readings, the held-out source of code
that reads them), a first round is aggregated and promoted, every device gets a new local
model, and the second round (``iot_fed.federation.global_round.aggregate_global_model``)
runs through a client whose commands are counted (``pymongo.monitoring``), against the
real server of ``IOT_FED_MONGODB_URI``. ``--baseline DIR`` runs the same on another
checkout (``git worktree add /tmp/base <commit>``; this checkout's venv).

``version``: a global version serving N devices (own normaliser and threshold each) saved
and read back through the loader: the version document's BSON size, the save and load time.

    .venv/bin/python bench/bench_store_calls.py [--devices 54,1000] [--version-devices 100000]
        [--baseline DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

HANDSHAKE = {"hello", "ismaster", "isMaster", "endSessions", "ping", "buildInfo"}


def _counting_client(uri: str):
    from pymongo import MongoClient, monitoring

    class Commands(monitoring.CommandListener):
        def __init__(self) -> None:
            self.seen: Counter[str] = Counter()

        def started(self, event) -> None:
            if event.command_name not in HANDSHAKE:
                self.seen[event.command_name] += 1

        def succeeded(self, event) -> None:
            pass

        def failed(self, event) -> None:
            pass

    commands = Commands()
    return MongoClient(uri, event_listeners=[commands]), commands


def round_calls(devices: int) -> dict:
    """One configuration in this process (the checkout on ``sys.path``)."""
    import numpy as np
    from pymongo import MongoClient

    from iot_fed.config import load_settings
    from iot_fed.federation.global_round import aggregate_global_model
    from iot_fed.fl.model import init_params
    from iot_fed.fl.rounds import calibrate_bundle, feature_stats
    from iot_fed.fl.serialization import ModelBundle
    from iot_fed.fl.spec import ModelSpec
    from iot_fed.fl.window_features import window_features
    from iot_fed.readings import CHANNELS
    from iot_fed.store import init_database, promote, readings_to_docs, upsert_readings
    from iot_fed.store import repository as repo

    settings = load_settings()
    spec = ModelSpec.from_settings(settings)
    rng = np.random.default_rng(0)
    n = 60  # readings per device
    ts = 1_078_000_000_000 + np.arange(n) * 31_000
    vals = np.column_stack(
        [20 + rng.normal(0, 0.1, n), 40 + rng.normal(0, 0.2, n), 100 + rng.normal(0, 1, n)]
        + [2.7 + rng.normal(0, 0.005, n)]
    )
    feats, _ = window_features(ts, vals, n, spec.window_config())
    good = feats[np.isfinite(feats).all(axis=1)]
    params = {
        k: {m: np.asarray(v) for m, v in layer.items()} for k, layer in init_params(spec, 0).items()
    }
    bundle = ModelBundle(spec, params, feature_stats(good).normalizer())
    calibrate_bundle(bundle, {1: good}, 0.99)
    blob, stats = bundle.to_bytes(), feature_stats(good).to_dict()
    batched = hasattr(repo, "save_local_models")

    client: MongoClient = MongoClient(settings.mongodb_uri)
    db = client[f"iot_fed_bench_calls_{uuid.uuid4().hex[:8]}"]
    try:
        init_database(db)
        import pandas as pd

        frame = pd.DataFrame(
            {
                "moteid": np.repeat(np.arange(1, devices + 1), n),
                "epoch": np.tile(np.arange(n), devices),
                "ts": pd.to_datetime(np.tile(ts, devices), unit="ms", utc=True),
                **{c: np.tile(vals[:, j], devices) for j, c in enumerate(CHANNELS)},
            }
        )
        upsert_readings(db, readings_to_docs(frame))

        def seed(version: int) -> None:
            fields = dict(n_samples=100, last_epoch=n - 1, threshold=1.0)
            metrics = {"loss_before": 1.0, "loss_after": 0.5, "stats": stats}
            if batched:  # the local round's own save: models + held-out samples
                ep = np.arange(0, n, 10, dtype="<i8")
                held = feats[ep].astype("<f8")
                sample = {"holdout_epochs": ep.tobytes(), "holdout_features": held.tobytes()}
                docs = [
                    repo.local_model_doc(str(m), blob, version=version, metrics=metrics, **fields)
                    for m in range(1, devices + 1)
                ]
                repo.save_local_models(db, docs, {m: sample for m in range(1, devices + 1)})
            else:
                for m in range(1, devices + 1):
                    repo.save_local_model(db, str(m), blob, metrics=metrics, **fields)

        seed(1)
        first = aggregate_global_model(db, settings)
        promote(db, first.version)
        seed(2)
        cclient, commands = _counting_client(settings.mongodb_uri)
        t0 = time.perf_counter()
        out = aggregate_global_model(cclient[db.name], settings)
        seconds = time.perf_counter() - t0
        cclient.close()
        assert out.n_devices == devices, out
        return {
            "devices": devices,
            "calls": sum(commands.seen.values()),
            "by_command": dict(commands.seen),
            "round_s": round(seconds, 2),
        }
    finally:
        client.drop_database(db.name)
        client.close()


def version_size(devices: int) -> dict:
    import numpy as np
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument
    from pymongo import MongoClient

    from iot_fed.config import load_settings
    from iot_fed.federation.bundles import load_promoted
    from iot_fed.federation.device_params import LINEAGE_CAP, split
    from iot_fed.fl.model import init_params
    from iot_fed.fl.normalization import Normalizer
    from iot_fed.fl.serialization import ModelBundle
    from iot_fed.fl.spec import ModelSpec
    from iot_fed.store import GLOBAL_MODELS, init_database, save_global_model

    settings = load_settings()
    spec = ModelSpec.from_settings(settings)
    params = {
        k: {m: np.asarray(v) for m, v in layer.items()} for k, layer in init_params(spec, 0).items()
    }
    base = Normalizer(np.zeros(spec.n_inputs), np.ones(spec.n_inputs))
    rng = np.random.default_rng(0)
    norms = {m: Normalizer(rng.normal(size=spec.n_inputs), base.std) for m in range(1, devices + 1)}
    bundle = ModelBundle(
        spec,
        params,
        base,
        1.0,
        residual_scale=np.ones(spec.n_residuals),
        device_thresholds={m: 1.0 + m / devices for m in norms},
        device_norms=norms,
    )
    lineage = {m: {"version": 1, "n_samples": 100, "weight": 1 / devices} for m in norms}
    shared, rows = split(bundle, lineage)
    client: MongoClient = MongoClient(settings.mongodb_uri)
    db = client[f"iot_fed_bench_version_{uuid.uuid4().hex[:8]}"]
    try:
        init_database(db)
        t0 = time.perf_counter()
        doc = save_global_model(
            db,
            shared.to_bytes(),
            lineage=[{"device": str(m), **lineage[m]} for m in range(1, LINEAGE_CAP + 1)],
            threshold=1.0,
            device_params=rows,
            devices_aggregated=devices,
            promoted=True,
        )
        saved_s = time.perf_counter() - t0
        raw = db.get_collection(
            GLOBAL_MODELS, codec_options=CodecOptions(document_class=RawBSONDocument)
        ).find_one({"version": doc["version"]})
        t0 = time.perf_counter()
        _, loaded = load_promoted(db)
        loaded_s = time.perf_counter() - t0
        assert len(loaded.known_devices or ()) == devices
        return {
            "devices": devices,
            "version_document_bytes": len(raw.raw),
            "legacy_blob_bytes": len(bundle.to_bytes()),
            "save_s": round(saved_s, 2),
            "load_s": round(loaded_s, 2),
        }
    finally:
        client.drop_database(db.name)
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="54,1000")
    ap.add_argument("--version-devices", type=int, default=100_000)
    ap.add_argument("--baseline", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:  # a child run: one round on the checkout on sys.path
        print(json.dumps(round_calls(args.one)))
        return
    from common import print_table, write_results

    sizes = [int(d) for d in args.devices.split(",")]
    if args.quick:
        sizes, args.version_devices = [54], 2000
    checkouts = {"this": Path(__file__).resolve().parents[1]}
    if args.baseline:
        checkouts["baseline"] = args.baseline.resolve()
    rows = []
    for name, root in checkouts.items():
        env = {**os.environ, "PYTHONPATH": str(root)}
        for d in sizes:
            got = subprocess.run(
                [sys.executable, __file__, "--one", str(d)],
                env=env,
                cwd=root,
                check=True,
                capture_output=True,
                text=True,
            )
            rows.append({"code": name, **json.loads(got.stdout.strip().splitlines()[-1])})
    cols = ["code", "devices", "calls", "round_s", "by_command"]
    print_table(
        "database calls of one aggregation round", cols, [[r[c] for c in cols] for r in rows]
    )
    version = version_size(args.version_devices)
    print_table("a global version", list(version), [list(version.values())])
    write_results("store_calls", {"round": {"rows": rows}, "version": version}, quick=args.quick)


if __name__ == "__main__":
    main()
