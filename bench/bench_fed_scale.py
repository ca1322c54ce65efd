"""A full federated round at 1,000 / 10,000 / 100,000 devices under the real Dagster daemon
(issue #26, item 5).

Per device count, on a fresh MongoDB database of the project's server:

- **seed**: ``--per-device`` readings per device (``bench_round.burst``) stored with the
  store's own bulk insert (``insert_readings``, batches of ``--batch`` readings) and landed
  as the ingesters land them (``record_landed``: per-device counts, partition offsets), so
  the real ``iot_stream_sensor`` sees every device ready; readings/s is reported;
- **round**: ``dagster-daemon`` on a throwaway instance (``scripts/dagster.yaml``: the warm
  run launcher; ``--storage postgres`` a throwaway database of the project's PostgreSQL)
  until the round's runs are finished: the sensor's deciding tick, every run it launched
  (training, or training shards, aggregation, the blocking check, promotion); stage wall
  times from the tick and the runs' step events, whatever the number of runs;
- **peak RSS** (``VmHWM``) of every process of the daemon's tree (code server, forkserver,
  run workers) and of the MongoDB server, sampled every ``--sample-s``;
- **database calls**: every command of the daemon's processes (``bench/command_log``, a
  ``pymongo`` listener loaded through ``PYTHONPATH``): the run workers' plus the code
  server's during the deciding tick, per command and per 1,000 devices;
- **sizes**: the promoted version's own document (BSON) and its per-device params;
- **FLOP/s**: the training computation's FLOPs at the round's shapes (XLA cost analysis
  of one optimiser step and one evaluation, times steps and devices), its achieved FLOP/s
  timed here on the same shapes (up to ``--flops-devices`` devices) and over the round's
  training step, next to a large float32 matmul's FLOP/s measured in the same run.

Prints a table, writes bench/results/fed_scale.json, one section ``devices_<N>`` per
device count (``--quick``: a tiny configuration,
to assets_data/bench-quick/). Starts MongoDB (and PostgreSQL for ``--storage postgres``).

    .venv/bin/python bench/bench_fed_scale.py [--devices 1000,10000,100000]
        [--per-device 300] [--storage postgres|sqlite] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from bench_round import burst, clean_up, start_daemon, stop_daemon
from bench_store_calls import HANDSHAKE
from bench_train import make_data
from common import (
    create_pg_database,
    descendants,
    print_table,
    processes,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
COMMAND_LOG = ROOT / "bench" / "command_log"  # its sitecustomize counts the commands
sys.path.insert(0, str(ROOT))

from bson.codec_options import CodecOptions  # noqa: E402
from bson.raw_bson import RawBSONDocument  # noqa: E402
from dagster._core.scheduler.instigation import InstigatorType  # noqa: E402

from iot_fed.config import Settings, load_settings  # noqa: E402
from iot_fed.defs.assets.models import PROMOTION_CHECK  # noqa: E402
from iot_fed.defs.launcher import WORKER_TAG  # noqa: E402
from iot_fed.services import manager  # noqa: E402
from iot_fed.services.dagster_instance import configure  # noqa: E402
from iot_fed.store import init_database, insert_readings, readings_to_docs  # noqa: E402
from iot_fed.store import repository as repo  # noqa: E402
from iot_fed.store.client import connect  # noqa: E402
from iot_fed.store.collections import (  # noqa: E402
    GLOBAL_DEVICE_PARAMS,
    GLOBAL_MODELS,
    LOCAL_MODELS,
)
from iot_fed.store.device_params import devices_aggregated  # noqa: E402
from iot_fed.store.ingest_progress import record_landed  # noqa: E402

STEP_EVENTS = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
}
STAGES = ("training", "aggregation", "check", "promotion", "other_checks")
ROUND_ASSETS = {dg.AssetKey(k) for k in ("local_model", "global_model", "promoted_model")}
OTHER_SENSORS = ("reporting_sensor", "evaluation_report_sensor", "streaming_evaluation_sensor")
"""Stopped before the daemon starts: their runs (PostgreSQL refreshes, Spark reports) and
ticks are not the round's, and would compete with it for the two cores."""
RAW = CodecOptions(document_class=RawBSONDocument)
ROUND_GOAL_S = {10_000: 20.0, 100_000: 120.0}
"""Issue #26: a full round's wall time on the 2-core machine."""
RSS_GOAL_MB = 8 * 1024  # every process
VERSION_DOC_GOAL_BYTES = 1024**2


def goals(row: dict[str, Any]) -> dict[str, bool | None]:
    """Issue #26's goals met by one device count (None: no goal at that count)."""
    limit = ROUND_GOAL_S.get(row["devices"])
    return {
        "round_s": None if limit is None else row["round_s"] <= limit,
        "every_process_rss": row["max_process_rss_mb"] <= RSS_GOAL_MB,
        "version_document": (
            row["version_document_bytes"] < VERSION_DOC_GOAL_BYTES
            if row.get("version_document_bytes") is not None
            else None
        ),
    }


def stage_of(step_key: str) -> str:
    """The round's stage a step belongs to (shard runs share the step keys); the other
    asset checks' steps are ``other_checks``."""
    stages = {
        "local_model": "training",
        "global_model": "aggregation",
        f"global_model_{PROMOTION_CHECK}": "check",
        "promoted_model": "promotion",
    }
    return stages.get(step_key, "other_checks")


# --- seeding --------------------------------------------------------------------------
def seed(db: Any, settings: Settings, devices: int, per_device: int, batch: int) -> dict:
    """``per_device`` readings of each device stored and landed as the ingesters do it; the
    next chunk's documents are built in a thread while the server stores this one."""
    chunk = max(1, batch // per_device)  # devices per insert

    def build(first: int) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        frame = burst(min(chunk, devices + 1 - first), per_device, first=first)
        return frame, readings_to_docs(frame)

    offset, t0, inserted = 0, time.perf_counter(), 0
    firsts = list(range(1, devices + 1, chunk))
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(build, firsts[0])
        for nxt in [*firsts[1:], None]:
            frame, docs = ahead.result()
            if nxt is not None:
                ahead = pool.submit(build, nxt)
            inserted += len(insert_readings(db, docs, validate=False, owned=True))
            offset += len(docs)
            newest = frame.groupby("moteid").agg(ts=("ts", "max"), epoch=("epoch", "max"))
            last_ts = newest["ts"].to_dict()
            new = {int(m): per_device for m in last_ts}
            last_epoch = {int(m): int(e) for m, e in newest["epoch"].items()}
            record_landed(db, settings.kafka_topic, {0: offset}, new, last_ts, "bench", last_epoch)
    seconds = time.perf_counter() - t0
    return {
        "readings": inserted,
        "seed_s": seconds,
        "seed_readings_per_s": inserted / seconds,
        "seed_batch": chunk * per_device,
    }


# --- processes --------------------------------------------------------------------------
@dataclass
class RssSampler:
    """Peak ``VmHWM`` of every process below ``root`` (and of ``extra``), sampled in a thread
    (a process's high-water mark only grows: a sample misses at most its last interval)."""

    root: int
    extra: dict[int, str]
    every_s: float
    peak_mb: dict[int, float] = field(default_factory=dict)
    cmd: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        for pid in descendants(processes(), self.root) | set(self.extra):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                if pid not in self.cmd:
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                    self.cmd[pid] = raw.replace(b"\0", b" ").decode(errors="replace")[:160]
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    mb = int(line.split()[1]) / 1024
                    self.peak_mb[pid] = max(self.peak_mb.get(pid, 0.0), mb)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def roles(self, workers: set[int]) -> dict[str, float]:
        """Peak MB per process, named by its role (run workers each by pid)."""
        out: dict[str, float] = {}
        for pid, mb in self.peak_mb.items():
            cmd = self.cmd.get(pid, "")
            if pid in self.extra:
                role = self.extra[pid]
            elif pid == self.root:
                role = "daemon"
            elif pid in workers:
                role = f"run worker {pid}"
            elif "forkserver" in cmd:
                role = "forkserver"
            elif "grpc" in cmd or "code-server" in cmd or "api" in cmd:
                role = "code server"
            else:  # compute-log tails, multiprocessing helpers: one row, the largest
                role = "other"
            out[role] = max(out.get(role, 0.0), round(mb, 1))
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def command_counts(folder: Path) -> dict[int, list[tuple[float, str]]]:
    """pid -> [(time, command)] of every logged command but the driver's handshakes."""
    out: dict[int, list[tuple[float, str]]] = defaultdict(list)
    for path in folder.glob("*.tsv"):
        for line in path.read_text().splitlines():
            t, name, _ = line.split("\t")
            if name not in HANDSHAKE:
                out[int(path.stem)].append((float(t), name))
    return out


# --- the round ----------------------------------------------------------------------------
def deciding_tick(instance: dg.DagsterInstance, run_ids: set[str]) -> Any:
    """The first ``iot_stream_sensor`` tick that requested one of ``run_ids`` (a round's
    shard runs; a later tick launches its aggregation run)."""
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name != "iot_stream_sensor":
            continue
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        for tick in reversed(ticks):  # newest first: the oldest match is the round's start
            if set(tick.run_ids) & run_ids:
                return tick
    raise RuntimeError("no iot_stream_sensor tick launched the round's runs")


def step_spans(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """step key -> (start, end) from the run's step events only (not its 100k
    materializations)."""
    start: dict[str, float] = {}
    out: dict[str, tuple[float, float]] = {}
    for e in instance.all_logs(run_id, of_type=STEP_EVENTS):
        ev = e.dagster_event
        if ev.event_type == dg.DagsterEventType.STEP_START:
            start[e.step_key] = e.timestamp
        elif e.step_key in start:
            out[e.step_key] = (start[e.step_key], e.timestamp)
    return out


def stop_other_sensors(instance: dg.DagsterInstance) -> None:
    """Stop :data:`OTHER_SENSORS` on the instance (as ``dagster sensor stop`` does)."""
    from dagster._cli.workspace.cli_target import get_repository_from_cli_opts
    from dagster_shared.cli import WorkspaceOpts

    opts = WorkspaceOpts(module_name=["iot_fed.definitions"], working_directory=str(ROOT))
    with get_repository_from_cli_opts(instance, dg.__version__, opts, None) as repo:
        for name in OTHER_SENSORS:
            sensor = repo.get_sensor(name)
            instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)


def round_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    """The runs of the federated round (training, or its shards, and aggregation)."""
    records = instance.get_run_records()
    return [r for r in records if ROUND_ASSETS & set(r.dagster_run.asset_selection or ())]


def wait_for_round(instance: dg.DagsterInstance, timeout: float) -> list[dg.RunRecord]:
    """Until a run that aggregates has finished, or a run of the round failed (its steps
    are retried inside the run), and no run of the round is in flight."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        records = round_runs(instance)
        over = any(
            r.dagster_run.is_finished
            and (
                dg.AssetKey("global_model") in (r.dagster_run.asset_selection or ())
                or r.dagster_run.status == dg.DagsterRunStatus.FAILURE
            )
            for r in records
        )
        if over and all(r.dagster_run.is_finished for r in records):
            return sorted(records, key=lambda r: r.create_timestamp)
        time.sleep(0.5)
    raise TimeoutError(f"the round did not finish within {timeout:.0f} s")


def in_progress(instance: dg.DagsterInstance, record: dg.RunRecord) -> dict[str, Any]:
    """A run of an unfinished round: its status, finished steps and the steps still open."""
    run_id = record.dagster_run.run_id
    done = step_spans(instance, run_id)
    started = {
        e.step_key: e.timestamp
        for e in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START})
    }
    return {
        "run_id": run_id,
        "status": record.dagster_run.status.value,
        "steps_s": {k: round(e - s, 3) for k, (s, e) in done.items()},
        "open_steps_s": {k: round(time.time() - t, 1) for k, t in started.items() if k not in done},
    }


def round_figures(
    instance: dg.DagsterInstance, records: list[dg.RunRecord], tick: Any
) -> dict[str, Any]:
    """Stage walls: the tick, launch (tick end -> first run start), each stage's span over
    every run (first step start -> last step end) and its summed step time."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    runs = []
    for r in records:
        st = instance.get_run_stats(r.dagster_run.run_id)
        steps = step_spans(instance, r.dagster_run.run_id)
        for key, se in steps.items():
            spans[stage_of(key)].append(se)
        runs.append(
            {
                "run_id": r.dagster_run.run_id,
                "status": r.dagster_run.status.value,
                "partitions": r.dagster_run.tags.get("dagster/asset_partition_range_start", "")
                + ".."
                + r.dagster_run.tags.get("dagster/asset_partition_range_end", ""),
                "created": r.create_timestamp.timestamp(),
                "start": st.start_time,
                "end": st.end_time,
                "steps_s": {k: round(e - s, 3) for k, (s, e) in steps.items()},
            }
        )
    first_start = min((r["start"] for r in runs if r["start"]), default=tick.end_timestamp)
    last_end = max(e for v in spans.values() for _, e in v)
    out: dict[str, Any] = {
        "runs_in_round": len(runs),
        "sensor_tick_s": tick.end_timestamp - tick.timestamp,
        "launch_s": first_start - tick.end_timestamp,
        "round_s": last_end - tick.timestamp,
    }
    for stage in STAGES:
        got = spans.get(stage, [])
        out[f"{stage}_s"] = max(e for _, e in got) - min(s for s, _ in got) if got else None
        out[f"{stage}_step_sum_s"] = sum(e - s for s, e in got) if got else None
    out["runs"] = runs
    return out


def round_calls(
    logged: dict[int, list[tuple[float, str]]], workers: set[int], tick: Any, devices: int
) -> dict[str, Any]:
    """The round's database calls: the run workers', and the sensor's during its tick."""
    worker, sensor = Counter(), Counter()
    for pid, lines in logged.items():
        for t, name in lines:
            if pid in workers:
                worker[name] += 1
            elif tick.timestamp <= t <= tick.end_timestamp:
                sensor[name] += 1
    total = sum(worker.values()) + sum(sensor.values())
    return {
        "calls": total,
        "calls_per_1000_devices": total / devices * 1000,
        "run_calls": dict(worker.most_common()),
        "sensor_tick_calls": dict(sensor.most_common()),
    }


def version_sizes(db: Any) -> dict[str, Any]:
    """The newest global version's own document and its per-device params (BSON bytes)."""
    latest = repo.latest_global_model(db)
    if latest is None:
        return {"version": None}
    v = int(latest["version"])
    raw = db.get_collection(GLOBAL_MODELS, codec_options=RAW).find_one({"version": v})
    params = db.get_collection(GLOBAL_DEVICE_PARAMS, codec_options=RAW).find({"version": v})
    sizes = [len(d.raw) for d in params]
    promoted = repo.promoted_version(db)
    metrics = latest.get("metrics") or {}
    return {
        "version": v,
        "promoted": promoted == v,
        "version_document_bytes": len(raw.raw),
        "device_params_documents": len(sizes),
        "device_params_bytes": sum(sizes),
        # what the round aggregated: healthy local models, rejected ones, calibrated devices
        "devices_aggregated": devices_aggregated(latest),
        "rejected_local_models": len(metrics.get("rejected_local_models") or {}),
        "device_thresholds": metrics.get("device_thresholds"),
        "learning_short_span": metrics.get("learning_short_span"),
        "local_models": db[LOCAL_MODELS].count_documents({}),
    }


# --- FLOP/s ---------------------------------------------------------------------------------
def _flops(compiled: Any) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def matmul_peak(n: int = 4096, repeat: int = 5) -> float:
    """FLOP/s of a float32 (n x n) @ (n x n) matmul, best of ``repeat``."""
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        mm(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def training_flops(settings: Settings, devices: int, rows: int, cap: int) -> dict[str, Any]:
    """FLOPs of the round's training computation (``devices`` x ``rows``, padded as
    :func:`~iot_fed.fl.training.train_devices` pads them) from
    XLA's cost analysis of one optimiser step and one evaluation (a scan's body is counted
    once by XLA, so steps are multiplied here), and its achieved FLOP/s on ``min(devices,
    cap)`` devices timed here (second call: compiled)."""
    import jax

    from iot_fed.fl.model import init_params
    from iot_fed.fl.spec import ModelSpec
    from iot_fed.fl.training import TrainConfig, _trainer_for, padded_shape, train_devices

    spec, cfg = ModelSpec.from_settings(settings), TrainConfig.from_settings(settings)
    _, rows = padded_shape([(range(rows), None)], cfg)  # the compiled rows per device
    tr = _trainer_for(spec, cfg)
    p = jax.tree.map(lambda v: np.asarray(v, np.float32), init_params(spec, 0))
    b = cfg.batch_size
    xb = np.zeros((b, spec.n_inputs), np.float32)
    yb, mb = np.zeros((b, spec.n_outputs), np.float32), np.ones(b, bool)
    step = _flops(tr.step.lower(p, tr.opt_init(p), p, xb, yb, mb).compile())
    x = np.zeros((rows, spec.n_inputs), np.float32)
    y = np.zeros((rows, spec.n_outputs), np.float32)
    evaluate = _flops(tr.evaluate_one.lower(p, x, y, np.int32(rows)).compile())
    steps = cfg.local_epochs * rows // b
    per_device = steps * step + (2 * evaluate if cfg.evaluate else 0)
    d = min(devices, cap)
    data = make_data(d, rows, spec=spec)
    train_devices(p, data, spec, cfg)  # compiles
    t0 = time.perf_counter()
    train_devices(p, data, spec, cfg)
    seconds = time.perf_counter() - t0
    return {
        "rows_per_device": rows,
        "steps_per_device": steps,
        "step_flops": step,
        "flops_per_device": per_device,
        "round_flops": per_device * devices,
        "timed_devices": d,
        "timed_s": seconds,
        "achieved_flops_per_s": per_device * d / seconds,
        "sample_steps_per_s": d * rows * cfg.local_epochs / seconds,
    }


def daemon_round(
    args: argparse.Namespace, env: dict[str, str], home: Path, mongo_pid: int | None
) -> tuple[dict[str, Any], set[int], Any]:
    """The daemon on the seeded database until its round is done: the round's figures and
    peak RSS, the run workers' pids and the deciding tick (``error`` and the runs' progress
    instead of the figures when it times out)."""
    out: dict[str, Any] = {}
    workers: set[int] = set()
    tick = None
    log = open(home / "daemon.log", "w")  # noqa: SIM115 - lives as long as the daemon
    with dg.DagsterInstance.get() as instance:
        stop_other_sensors(instance)
    t_daemon = time.time()
    daemon = start_daemon(env, ROOT, log)
    extra = {mongo_pid: "mongodb server"} if mongo_pid else {}
    sampler = RssSampler(daemon.pid, extra, args.sample_s)
    try:
        with dg.DagsterInstance.get() as instance:
            try:
                records = wait_for_round(instance, args.timeout)
            except TimeoutError as exc:  # how far it got, and the stage it was in
                out["error"] = str(exc)
                out["runs"] = [in_progress(instance, r) for r in round_runs(instance)]
            else:
                tick = deciding_tick(instance, {r.dagster_run.run_id for r in records})
                workers = {
                    int(json.loads(r.dagster_run.tags[WORKER_TAG])["pid"])
                    for r in records
                    if WORKER_TAG in r.dagster_run.tags
                }
                out |= round_figures(instance, records, tick)
                out["daemon_start_to_tick_s"] = tick.timestamp - t_daemon
    finally:
        sampler.stop()
        stop_daemon(daemon)
        log.close()
    out["peak_rss_mb"] = sampler.roles(workers)
    out["max_process_rss_mb"] = max(out["peak_rss_mb"].values(), default=None)
    return out, workers, tick


# --- one device count -------------------------------------------------------------------------
def measure(args: argparse.Namespace, devices: int, mongo_pid: int | None) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    home = Path(tempfile.mkdtemp(prefix="bench_fed_scale_"))
    log_dir = home / "commands"
    log_dir.mkdir()
    name = f"bench_fed_scale_{tag}"
    base = load_settings()
    if args.storage == "postgres":
        create_pg_database(base.postgres_uri, name)
    instance_config = configure(home, base, args.storage, name)
    env = {
        **os.environ,
        **instance_config.env,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(COMMAND_LOG)]),
        "IOT_FED_BENCH_COMMAND_LOG": str(log_dir),
        "DAGSTER_HOME": str(home),
        "IOT_FED_KAFKA_TOPIC": name,
        "IOT_FED_MONGODB_DATABASE": name,
        "IOT_FED_SENSOR_INTERVAL_S": str(args.interval),
        "IOT_FED_AGGREGATION_INTERVAL_S": str(args.interval),
        "IOT_FED_TRAINING_RUN_MAX_RUNTIME_S": str(int(args.timeout)),
    }
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    settings = load_settings()
    db = connect(settings.mongodb_uri, name)
    init_database(db)
    out: dict[str, Any] = {"devices": devices, "per_device": args.per_device}
    try:
        out |= seed(db, settings, devices, args.per_device, args.batch)
        print(f"{devices} devices: seeded {json.dumps(out)}", flush=True)
        found, workers, tick = daemon_round(args, env, home, mongo_pid)
        out |= found
        if "error" in out:
            return out
        out |= round_calls(command_counts(log_dir), workers, tick, devices)
        out |= version_sizes(db)
        out["goals_met"] = goals(out)
        trained = list(db[LOCAL_MODELS].find({}, {"n_samples": 1}))
        if not trained:  # the round failed before any local model was saved
            return out
        rows = max(int(d["n_samples"]) for d in trained)
        flops = training_flops(settings, len(trained), rows, args.flops_devices)
        train_s = out["training_s"]  # every training run's span, with its store reads/writes
        flops["round_training_flops_per_s"] = flops["round_flops"] / train_s if train_s else None
        out["flops"] = flops
    finally:
        pg_database = name if args.storage == "postgres" else None
        out |= clean_up(db, base.postgres_uri, pg_database, home, args.keep_home)
    return out


COLUMNS = [
    ("devices", "devices"),
    ("per_device", "readings/device"),
    ("seed_readings_per_s", "seed readings/s"),
    ("round_s", "round s"),
    ("sensor_tick_s", "tick s"),
    ("launch_s", "launch s"),
    ("training_s", "training s"),
    ("aggregation_s", "aggregation s"),
    ("check_s", "check s"),
    ("promotion_s", "promotion s"),
    ("runs_in_round", "runs"),
    ("calls", "db calls"),
    ("calls_per_1000_devices", "calls/1k devices"),
    ("max_process_rss_mb", "max RSS MB"),
    ("version_document_bytes", "version doc B"),
    ("device_params_bytes", "device params B"),
    ("promoted", "promoted"),
]


FLOP_COLUMNS = ["train GFLOP/s (timed)", "round training GFLOP/s", "matmul GFLOP/s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="1000,10000,100000")
    ap.add_argument("--per-device", type=int, default=300, help="readings seeded per device")
    ap.add_argument("--batch", type=int, default=20_000, help="readings per insert_many")
    ap.add_argument("--storage", default="postgres", help="Dagster instance: postgres, sqlite")
    ap.add_argument("--interval", type=int, default=5, help="sensor + aggregation interval (s)")
    ap.add_argument("--timeout", type=float, default=1800, help="per round (s)")
    ap.add_argument("--sample-s", type=float, default=1.0, help="RSS sampling interval")
    ap.add_argument("--flops-devices", type=int, default=10_000, help="devices timed for FLOP/s")
    ap.add_argument("--keep-home", action="store_true", help="keep each DAGSTER_HOME")
    ap.add_argument("--quick", action="store_true", help="60 devices x 120 readings, sqlite")
    args = ap.parse_args()
    sizes = [int(s) for s in args.devices.split(",")]
    if args.quick:
        sizes, args.per_device, args.storage, args.flops_devices = [60], 120, "sqlite", 60
    base = load_settings()
    only = ("mongodb", "postgres") if args.storage == "postgres" else ("mongodb",)
    peak = matmul_peak()
    print(f"float32 matmul: {peak / 1e9:.1f} GFLOP/s", flush=True)
    rows = []
    with manager.session(base, only=only) as statuses:
        mongo_pid = next((s.pid for s in statuses if s.name == "mongodb"), None)
        for n in sizes:
            try:
                rows.append(measure(args, n, mongo_pid))
            except Exception as exc:  # e.g. the store stopped answering: keep what it says
                rows.append({"devices": n, "error": repr(exc)[:2000], "runs": []})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "runs"}), flush=True)
            section = {"storage": args.storage, "matmul_flops_per_s": peak, **rows[-1]}
            write_results("fed_scale", {f"devices_{n}": section}, quick=args.quick)
            if "error" in rows[-1]:
                break
    done = [r for r in rows if "flops" in r]  # a round that trained
    print_table(
        f"A federated round under the Dagster daemon ({args.storage} instance)",
        [c[1] for c in COLUMNS] + FLOP_COLUMNS,
        [
            [r.get(c[0]) for c in COLUMNS]
            + [
                r["flops"]["achieved_flops_per_s"] / 1e9,
                (r["flops"]["round_training_flops_per_s"] or 0) / 1e9,
                peak / 1e9,
            ]
            for r in done
        ],
    )
    for r in done:
        print(f"{r['devices']} devices, peak RSS MB: {json.dumps(r['peak_rss_mb'])}")
        print(f"{r['devices']} devices, run calls: {json.dumps(r['run_calls'])}")
    for r in rows:
        if "flops" not in r:
            why = r.get("error", "the round's runs failed")
            print(f"{r['devices']} devices: {why}; runs: {json.dumps(r['runs'])}")
    return 0 if len(done) == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
