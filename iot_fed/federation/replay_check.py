"""Promotion replay: what a candidate global version would do, before it serves.

The candidate is replayed on each device's newest held-out readings (``epoch % 10 == 0``,
:mod:`iot_fed.fl.holdout`: never trained on; the rest of the newest readings is their
context), read in one bounded query per batch of devices (:func:`read_replay`: the newest
``promotion_replay_readings`` per device).
Scoring is the product's (:func:`iot_fed.fl.stream_scoring.score_many`: learning devices
are not flagged), so the replay sees the verdicts the scorers would give.

* **Alarm rate**: incidents (:func:`iot_fed.analytics.incidents.advance`) on the clean
  held-out readings of the devices the candidate calibrated, per device-day of their data
  time, and flagged readings per device-day (a flood is one long incident per device);
  refused when either is above ``false_alarms_per_device_day x promotion_alarm_factor``.
* **F1**: labelled faults (:func:`iot_fed.evaluation.faults.inject_faults`, fixed seed)
  injected into the same readings; refused when the candidate's F1 on the held-out rows is
  more than ``promotion_max_f1_drop`` below the promoted version's (no promoted version:
  alarm rate only).

Both checks need ``promotion_min_replay_readings`` held-out readings of calibrated devices
before they may refuse; with fewer they are skipped and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pymongo.database import Database

from iot_fed.analytics.incidents import advance
from iot_fed.config import Settings
from iot_fed.evaluation.faults import inject_faults
from iot_fed.evaluation.metrics import f1
from iot_fed.federation.bundles import ModelLoadError, load_global_bundle, load_promoted
from iot_fed.federation.windows import usable_readings
from iot_fed.fl.device_history import DeviceHistory
from iot_fed.fl.holdout import HOLDOUT_MODULUS, held_out
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.stream_scoring import DeviceReadings, ScoredReadings, score_many
from iot_fed.readings import CHANNELS
from iot_fed.store import repository as repo

FAULT_SEED = 0
"""Injection seed: every version of every round is judged on the same faults."""
DAY_MS = 86_400_000


@dataclass(frozen=True)
class ReplayConfig:
    """The replay's settings (see :class:`iot_fed.config.Settings`)."""

    readings_per_device: int = 2000
    budget_per_device_day: float = 1.0
    alarm_factor: float = 3.0
    max_f1_drop: float = 0.2
    min_readings: int = 1000
    quiet_s: float = 1800.0

    @classmethod
    def from_settings(cls, s: Settings) -> ReplayConfig:
        return cls(
            s.promotion_replay_readings,
            s.false_alarms_per_device_day,
            s.promotion_alarm_factor,
            s.promotion_max_f1_drop,
            s.promotion_min_replay_readings,
            s.incident_quiet_s,
        )

    @property
    def alarm_limit(self) -> float:
        return self.budget_per_device_day * self.alarm_factor


@dataclass(frozen=True)
class Replayed:
    """One device's usable newest readings (epoch order) and which are held out."""

    moteid: int
    epochs: np.ndarray
    ts_ms: np.ndarray
    values: np.ndarray
    held: np.ndarray


@dataclass
class ReplayVerdict:
    """The replay's verdict and its figures (stored with the version as ``metrics.replay``)."""

    ok: bool
    reason: str
    version: int
    against_version: int | None = None
    held_out_readings: int = 0
    """Held-out readings of the devices the candidate calibrated (the alarm-rate base)."""
    devices_judged: int = 0
    devices_learning: int = 0
    device_days: float = 0.0
    incidents: int = 0
    alarm_rate: float | None = None
    """Incidents per device-day on clean held-out readings."""
    flagged: int = 0
    flagged_rate: float | None = None
    """Flagged readings per device-day (held-out readings are one epoch in
    ``HOLDOUT_MODULUS``): a version that flags everything makes ONE long incident per
    device, so the incident rate alone would pass a flood."""
    alarm_limit: float = 0.0
    fault_readings: int = 0
    f1: float | None = None
    promoted_f1: float | None = None
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_replay(db: Database, motes: Sequence[int], limit: int) -> list[Replayed]:
    """Per device its newest ``limit`` usable readings: ONE query for all devices, bounded
    below by ``limit`` epochs before the newest epoch the device trained on (a mote sends
    at most one reading per epoch), so the read is at most ``limit`` readings per device
    plus those landed since its last training."""
    through = repo.trained_through(db, motes)
    since = {
        int(m): (max(through[int(m)] - limit, -1) if int(m) in through else None) for m in motes
    }
    found = repo.readings_for_devices(db, since, limit)
    out = []
    for m, docs in sorted(found.items()):
        good, _ = usable_readings(docs)
        if not len(good):
            continue
        out.append(Replayed(m, good.epoch, good.ts_ms, good.values, held_out(good.epoch)))
    return out


def with_faults(
    devices: Sequence[Replayed], seed: int = FAULT_SEED
) -> tuple[list[Replayed], list[np.ndarray]]:
    """The same readings with labelled faults injected (deterministic), and per device the
    fault label of each row."""
    frame = pd.concat(
        [
            pd.DataFrame(
                {
                    "moteid": d.moteid,
                    "epoch": d.epochs,
                    **dict(zip(CHANNELS, d.values.T, strict=True)),
                }
            )
            for d in devices
        ],
        ignore_index=True,
    )
    inj = inject_faults(frame, seed=seed, order_col="epoch", label_col=None)
    values = inj.frame[list(CHANNELS)].to_numpy(np.float64)
    labels = inj.any
    out, labs, i = [], [], 0
    for d in devices:
        j = i + d.epochs.size
        out.append(Replayed(d.moteid, d.epochs, d.ts_ms, values[i:j], d.held))
        labs.append(labels[i:j])
        i = j
    return out, labs


def score(bundle: ModelBundle, devices: Sequence[Replayed]) -> list[ScoredReadings]:
    """Each device's series scored from an empty history, as the scorers would."""
    got = score_many(
        bundle,
        [
            DeviceReadings(d.moteid, DeviceHistory.empty(), d.epochs, d.ts_ms, d.values)
            for d in devices
        ],
    )
    return [s for s, _ in got]


def incidents(moteid: int, d: Replayed, s: ScoredReadings, version: int, quiet_s: float) -> int:
    """Incidents among a device's held-out readings' verdicts."""
    h = d.held
    frame = pd.DataFrame(
        {
            "epoch": d.epochs[h],
            "ts_ms": d.ts_ms[h],
            "score": s.score[h],
            "threshold": s.threshold[h],
            "flag": s.flag[h],
            "reason": np.asarray(s.reason, dtype=object)[h],
            "model_version": version,
            **{f"err_{c}": s.channel_errors[h, j] for j, c in enumerate(CHANNELS)},
            **{c: d.values[h, j] for j, c in enumerate(CHANNELS)},
        }
    )
    _, docs = advance(moteid, None, frame, quiet_s)
    return len({doc["_id"] for doc in docs})


def _held_f1(
    labels: Sequence[np.ndarray], scored: Sequence[ScoredReadings], devices: Sequence[Replayed]
) -> float:
    """F1 over every device's held-out rows (no true positive at all: 0)."""
    y = np.concatenate([lab[d.held] for lab, d in zip(labels, devices, strict=True)])
    p = np.concatenate([s.flag[d.held] for s, d in zip(scored, devices, strict=True)])
    return f1(y, p) or 0.0


def replay_verdict(
    candidate: ModelBundle,
    version: int,
    devices: Sequence[Replayed],
    cfg: ReplayConfig,
    promoted: tuple[int, ModelBundle] | None = None,
) -> ReplayVerdict:
    """Judge ``candidate`` on ``devices``' readings (pure: no store)."""
    v = ReplayVerdict(True, "ok", version, alarm_limit=cfg.alarm_limit)
    own = set(candidate.device_thresholds)
    judged = [d for d in devices if d.moteid in own]
    v.devices_judged, v.devices_learning = len(judged), len(devices) - len(judged)
    v.held_out_readings = int(sum(d.held.sum() for d in judged))
    enough = v.held_out_readings >= cfg.min_readings
    refusals: list[str] = []
    if not enough:
        v.skipped.append(
            f"{v.held_out_readings} held-out readings of calibrated devices, fewer than "
            f"{cfg.min_readings}: alarm rate and F1 not enforced"
        )
    if judged:
        clean = score(candidate, judged)
        v.incidents = sum(
            incidents(d.moteid, d, s, version, cfg.quiet_s)
            for d, s in zip(judged, clean, strict=True)
        )
        spans = [np.ptp(d.ts_ms[d.held]) if d.held.sum() > 1 else 0 for d in judged]
        v.device_days = float(np.sum(spans)) / DAY_MS
        v.flagged = int(sum(s.flag[d.held].sum() for d, s in zip(judged, clean, strict=True)))
        if v.device_days > 0:
            v.alarm_rate = v.incidents / v.device_days
            v.flagged_rate = v.flagged * HOLDOUT_MODULUS / v.device_days
        over = [
            f"{rate:.3g} {what}/device-day"
            for rate, what in ((v.alarm_rate, "incidents"), (v.flagged_rate, "flagged readings"))
            if rate is not None and rate > cfg.alarm_limit
        ]
        if enough and over:
            refusals.append(
                f"alarm rate {' and '.join(over)} on {v.held_out_readings} clean held-out "
                f"readings, over {cfg.alarm_factor:g} x the budget of "
                f"{cfg.budget_per_device_day:g}"
            )
    if promoted is None:
        v.skipped.append("no promoted version: F1 not compared")
    elif devices:
        v.against_version = promoted[0]
        faulty, labels = with_faults(devices)
        v.fault_readings = int(
            sum(lab[d.held].sum() for lab, d in zip(labels, devices, strict=True))
        )
        v.f1 = _held_f1(labels, score(candidate, faulty), devices)
        v.promoted_f1 = _held_f1(labels, score(promoted[1], faulty), devices)
        if enough and v.f1 < v.promoted_f1 - cfg.max_f1_drop:
            refusals.append(
                f"F1 {v.f1:.3f} on injected faults, more than {cfg.max_f1_drop:g} below the "
                f"promoted version {promoted[0]}'s {v.promoted_f1:.3f}"
            )
    if refusals:
        v.ok, v.reason = False, "; ".join(refusals)
    return v


def replay_check(db: Database, version: int, settings: Settings) -> ReplayVerdict:
    """Replay stored ``version`` on the fleet's newest held-out readings against the
    promoted version, store the verdict with it (``metrics.replay``, read by
    :func:`iot_fed.federation.health.promotion_verdict`) and return it."""
    doc = repo.get_global_model(db, version)
    if doc is None:
        raise ModelLoadError(f"global model version {version} does not exist")
    candidate = load_global_bundle(doc, db, "global model")
    cfg = ReplayConfig.from_settings(settings)
    loaded = load_promoted(db)
    promoted = None
    if loaded is not None and int(loaded[0]["version"]) != int(version):
        promoted = (int(loaded[0]["version"]), loaded[1])
    fleet = [int(d) for d in repo.local_model_devices(db)]
    devices = read_replay(db, fleet, cfg.readings_per_device)
    verdict = replay_verdict(candidate, int(version), devices, cfg, promoted)
    repo.set_global_replay(db, int(version), verdict.to_dict())
    return verdict
