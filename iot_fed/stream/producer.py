"""Replay clean readings into Kafka: keyed by mote, rate-limited, optionally looping.

Timing is driven by scheduled send times (record ``i`` is due at ``t0 + i / rate``, or
at the data's own timing divided by ``speedup``), so the long-run rate is exact; when
the sender falls more than :data:`MAX_LAG_S` behind, the schedule is re-anchored
instead of bursting. ``rate <= 0`` (or ``inf``) sends at full speed.

Nothing is dropped silently. While Kafka is unreachable the idempotent producer keeps its
queue and retries; when the queue is full, reading the dataset stops (back-pressure) until
it drains. The outage budget (``outage_budget_s``; default forever with ``loop``, else
:data:`DEFAULT_OUTAGE_BUDGET_S`) bounds how long the producer waits without any delivery;
then it gives up, and every record still queued counts as failed
(:attr:`ProduceStats.undelivered`). ``iot-fed stream`` exits non-zero with that count.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from iot_fed.config import Settings
from iot_fed.readings import CHANNELS
from iot_fed.stream.admin import ensure_topics
from iot_fed.stream.kafka_config import producer_config
from iot_fed.stream.messages import encode_reading, ts_from_ns

log = logging.getLogger(__name__)

LOOP_GAP_NS = 31 * 1_000_000_000  # contract: ts += k * (span + 31 s)
MAX_LAG_S = 1.0
DEFAULT_OUTAGE_BUDGET_S = 300.0
STOP_FLUSH_S = 30.0  # after SIGINT/SIGTERM, wait at most this long for deliveries


class GiveUp(RuntimeError):
    """Kafka accepted nothing for longer than the outage budget."""


def default_data_path(settings: Settings) -> Path:
    """Where the ``intel_lab_clean`` asset writes the clean readings."""
    return settings.data_dir / "intel_lab" / "clean.parquet"


def load_readings(path: Path | None, settings: Settings) -> pd.DataFrame:
    """Clean readings from ``path`` (default :func:`default_data_path`); synthetic when absent."""
    path = path or default_data_path(settings)
    if path.exists():
        log.info("replaying %s", path)
        return pd.read_parquet(path)
    log.warning("%s not found: replaying synthetic readings from the generator", path)
    return synthetic_readings(settings)


def synthetic_readings(settings: Settings) -> pd.DataFrame:
    """Clean readings from the :mod:`iot_fed.data` generator (generate + parse, in memory)."""
    import tempfile

    from iot_fed.data.generator import generate
    from iot_fed.data.parse import parse_readings

    with tempfile.TemporaryDirectory(prefix="iot_fed_synth_") as tmp:
        gen = generate(
            Path(tmp) / "data.txt",
            motes=settings.generator_motes,
            days=settings.generator_days,
            seed=settings.generator_seed,
            spike_rate=settings.generator_fault_rate,
        )
        return parse_readings(gen.path, gen.labels_path).readings


@dataclass
class ReplayData:
    """Columnar readings sorted by time, ready to be replayed in loops."""

    ts_ns: list[int]
    epoch: list[int]
    moteid: list[int]
    channels: dict[str, list[float]]
    label: list[str | None]
    max_epoch: int
    span_ns: int

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> ReplayData:
        if df.empty:
            raise ValueError("no readings to replay")
        finite = np.isfinite(df[list(CHANNELS)].to_numpy(dtype=float)).all(axis=1)
        if not finite.all():
            log.warning("dropping %d readings with non-finite values", int((~finite).sum()))
            df = df[finite]
        ts = pd.to_datetime(df["ts"], utc=True)
        order = np.lexsort((df["moteid"].to_numpy(), ts.to_numpy()))
        df = df.iloc[order]
        ts_ns = pd.to_datetime(df["ts"], utc=True).astype("int64").to_numpy()
        labels = df["label"] if "label" in df else pd.Series([None] * len(df))
        return cls(
            ts_ns=ts_ns.tolist(),
            epoch=df["epoch"].astype("int64").tolist(),
            moteid=df["moteid"].astype("int64").tolist(),
            channels={c: df[c].astype(float).tolist() for c in CHANNELS},
            label=[x if isinstance(x, str) else None for x in labels.tolist()],
            max_epoch=int(df["epoch"].max()),
            span_ns=int(ts_ns.max() - ts_ns.min()),
        )

    def __len__(self) -> int:
        return len(self.ts_ns)

    def records(self, loop: bool) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """Yield ``(ts_ns, moteid, reading)``; on loop k shift epoch and ts per the contract."""
        k = 0
        ch = [self.channels[c] for c in CHANNELS]
        while True:
            d_epoch = k * (self.max_epoch + 1)
            d_ts = k * (self.span_ns + LOOP_GAP_NS)
            for i in range(len(self.ts_ns)):
                t = self.ts_ns[i] + d_ts
                m = self.moteid[i]
                yield (
                    t,
                    m,
                    {
                        "ts": ts_from_ns(t),
                        "epoch": self.epoch[i] + d_epoch,
                        "moteid": m,
                        "temperature": ch[0][i],
                        "humidity": ch[1][i],
                        "light": ch[2][i],
                        "voltage": ch[3][i],
                        "label": self.label[i],
                    },
                )
            if not loop:
                return
            k += 1


@dataclass
class ProduceStats:
    """``sent`` = records queued; at the end ``delivered + failed == sent``."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    """Delivery errors plus :attr:`undelivered`."""
    undelivered: int = 0
    """Still queued when the producer stopped (not in Kafka; included in ``failed``)."""
    elapsed_s: float = 0.0
    stopped_by_signal: bool = False
    gave_up: bool = False
    outage_budget_s: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.gave_up

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rate"] = round(self.rate, 1)
        d["errors"] = self.errors[:5]
        return d


class StopFlag:
    """Set by SIGINT/SIGTERM (or by a caller) to end a replay cleanly."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self, *_: Any) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def install(self) -> Callable[[], None]:
        """Route SIGINT/SIGTERM here; returns a function restoring the old handlers."""
        old = {s: signal.signal(s, self.set) for s in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore


def replay(
    settings: Settings,
    data: ReplayData,
    *,
    topic: str | None = None,
    rate: float | None = None,
    speedup: float | None = None,
    loop: bool = False,
    limit: int | None = None,
    stop: StopFlag | None = None,
    progress_interval_s: float = 10.0,
    producer: Producer | None = None,
    outage_budget_s: float | None = None,
) -> ProduceStats:
    """Send readings to ``topic`` (default ``settings.kafka_topic``) and flush.

    ``rate`` records/s (default ``settings.producer_rate``; ``<= 0`` or ``inf`` = max speed);
    ``speedup`` K replays at the data's own timing times K (overrides ``rate``);
    ``limit`` stops after that many records; ``stop`` ends the replay early (flushes first);
    ``outage_budget_s`` how long to keep retrying without any delivery (``0`` = forever;
    default ``settings.producer_outage_budget_s``, else forever with ``loop`` and
    :data:`DEFAULT_OUTAGE_BUDGET_S` otherwise). Never raises for an outage: the stats say
    what was not delivered.
    """
    topic = topic or settings.kafka_topic
    rate = settings.producer_rate if rate is None else rate
    stop = stop if stop is not None else StopFlag()
    if outage_budget_s is None:
        outage_budget_s = settings.producer_outage_budget_s
    if outage_budget_s is None:
        outage_budget_s = 0.0 if loop else DEFAULT_OUTAGE_BUDGET_S
    budget = outage_budget_s if outage_budget_s > 0 else math.inf
    stats = ProduceStats(outage_budget_s=outage_budget_s)
    if not _ensure_topic(settings, topic, budget, stop, stats):
        return stats
    if producer is None:
        # librdkafka retries a queued message until this timeout (0 = never times out)
        timeout_ms = 0 if math.isinf(budget) else int(budget * 1000)
        producer = Producer(producer_config(settings, **{"message.timeout.ms": timeout_ms}))
    last_progress = [time.monotonic()]  # the last delivery (or the start)

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            stats.delivered += 1
            last_progress[0] = time.monotonic()
        else:
            stats.failed += 1
            if len(stats.errors) < 100:
                stats.errors.append(str(err))

    def stalled() -> bool:
        return time.monotonic() - last_progress[0] > budget

    def produce(value: bytes, key: bytes) -> bool:
        """Queue one record; while the queue is full, wait (back-pressure). False: not sent."""
        warned = False
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                return True
            except BufferError:
                if not warned:
                    log.warning("producer queue full (%d queued): waiting for Kafka", len(producer))
                    warned = True
                producer.poll(0.1)
                if stop:
                    return False
                if stalled():
                    raise GiveUp(f"no delivery for {budget:.0f} s (outage budget)") from None

    interval = 0.0 if (rate <= 0 or math.isinf(rate)) else 1.0 / rate
    paced = speedup is not None and speedup > 0
    t0 = time.monotonic()
    anchor, first_ts = t0, None
    next_log = t0 + progress_interval_s
    last_log_t, last_log_n = t0, 0
    n = 0
    try:
        for ts_ns, moteid, reading in data.records(loop):
            if stop or (limit is not None and n >= limit):
                break
            if paced:
                first_ts = ts_ns if first_ts is None else first_ts
                due = anchor + (ts_ns - first_ts) / 1e9 / speedup
            else:
                due = anchor + n * interval
            now = time.monotonic()
            if now - due > MAX_LAG_S:  # fell far behind: re-anchor instead of bursting
                anchor += now - due
            else:
                while due - now > 0.0005 and not stop:
                    time.sleep(min(due - now, 0.1))
                    now = time.monotonic()
                if stop:
                    break
            if stats.failed:  # a record timed out: stop rather than leave a gap behind
                raise GiveUp(f"delivery failed: {stats.errors[:1]}")
            if not produce(encode_reading(reading), str(moteid).encode()):
                break
            n += 1
            stats.sent = n
            if n % 1000 == 0 or interval >= 0.001 or paced:
                producer.poll(0)
            if now >= next_log:
                log.info(
                    "sent %d (delivered %d, failed %d), %.1f rec/s",
                    n,
                    stats.delivered,
                    stats.failed,
                    (n - last_log_n) / (now - last_log_t),
                )
                last_log_t, last_log_n = now, n
                next_log = now + progress_interval_s
    except GiveUp as exc:
        stats.gave_up = True
        log.error("giving up: %s", exc)
    finally:
        _final_flush(producer, stop, stalled)
        stats.undelivered = len(producer)
        stats.failed += stats.undelivered
        stats.elapsed_s = time.monotonic() - t0
        stats.stopped_by_signal = bool(stop)
    level = logging.INFO if stats.ok else logging.ERROR
    log.log(
        level,
        "done: sent %d, delivered %d, failed %d (%d undelivered) in %.1f s (%.1f rec/s)",
        stats.sent,
        stats.delivered,
        stats.failed,
        stats.undelivered,
        stats.elapsed_s,
        stats.rate,
    )
    return stats


def _ensure_topic(
    settings: Settings, topic: str, budget: float, stop: StopFlag, stats: ProduceStats
) -> bool:
    """Create/check the topic, retrying while Kafka is unreachable (within the budget)."""
    t0 = time.monotonic()
    while True:
        try:
            ensure_topics(settings, [topic])
            return True
        except KafkaException as exc:
            if stop or time.monotonic() - t0 > budget:
                stats.gave_up = True
                stats.errors.append(f"Kafka at {settings.kafka_bootstrap} unreachable: {exc}")
                log.error("giving up: %s", stats.errors[-1])
                return False
            log.warning("Kafka at %s unreachable (%s); retrying", settings.kafka_bootstrap, exc)
            time.sleep(2.0)


def _final_flush(producer: Producer, stop: StopFlag, stalled: Callable[[], bool]) -> None:
    """Wait for every queued record while Kafka makes progress (within the outage budget);
    after a stop signal, at most :data:`STOP_FLUSH_S` more."""
    stop_deadline = None
    while len(producer):
        producer.flush(1.0)
        if stop and stop_deadline is None:
            stop_deadline = time.monotonic() + STOP_FLUSH_S
        if stalled() or (stop_deadline is not None and time.monotonic() > stop_deadline):
            break
    producer.poll(0)
