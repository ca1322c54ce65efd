"""Which devices the promoted version has calibrated, and which are still *learning*.

A device with a local model but no threshold of its own in the promoted version is
learning: the scorer scores its readings but does not alarm on them (see
:mod:`iot_fed.fl.stream_scoring`). The next global version calibrates every device with
a local model and enough held-out readings, so a learning device that is about to train
(or has a local model no version has seen) makes aggregation due at once
(:func:`awaiting_calibration`), once its held-out sample spans the data time a
threshold needs (``calibration_min_span_h``: a whole day). All of it is a few queries,
never one per device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from iot_fed.federation.bundles import load_promoted
from iot_fed.fl.window_features import WindowConfig
from iot_fed.store import repository as repo
from iot_fed.store.device_state import holdout_spans

STATE_CAP = 100
"""At most this many device ids in a summary (the counts are always complete)."""


def promoted_calibrated(db: Database) -> tuple[int, frozenset[int]] | None:
    """The promoted version and the motes it has a threshold of their own for; None when
    nothing is promoted. A version without ``calibrated_devices`` (stored before the field
    existed, or storing its per-device params apart) is read from its bundle (the loader
    reads those params in batches and caches them per process)."""
    doc = repo.promoted_calibration(db)
    if doc is None:
        return None
    if "calibrated_devices" in doc:
        return int(doc["version"]), frozenset(int(d) for d in doc["calibrated_devices"])
    loaded = load_promoted(db, int(doc["version"]))
    if loaded is None:  # demoted in between: the next call sees the new one
        return None
    return int(doc["version"]), frozenset(loaded[1].device_thresholds)


@dataclass(frozen=True)
class FleetCalibration:
    """The devices with a local model, split by the promoted version's calibration."""

    version: int
    calibrated: tuple[int, ...]
    learning: tuple[int, ...]

    def summary(self, cap: int = STATE_CAP) -> dict[str, Any]:
        """Counts and the first ``cap`` learning devices (bounded for a large fleet)."""
        return {
            "model_version": self.version,
            "calibrated": len(self.calibrated),
            "learning": len(self.learning),
            "learning_devices": list(self.learning[:cap]),
            "learning_devices_truncated": len(self.learning) > cap,
        }


def split_fleet(version: int, calibrated: Iterable[int], fleet: Iterable[int]) -> FleetCalibration:
    """:class:`FleetCalibration` of ``fleet`` under a version calibrating ``calibrated``."""
    own = set(calibrated)
    ids = sorted(int(d) for d in fleet)
    return FleetCalibration(
        version, tuple(d for d in ids if d in own), tuple(d for d in ids if d not in own)
    )


def fleet_calibration(
    db: Database, fleet: Iterable[str | int] | None = None
) -> FleetCalibration | None:
    """The promoted version's calibration of every device with a local model (``fleet``
    when the caller has it); None when nothing is promoted."""
    got = promoted_calibrated(db)
    if got is None:
        return None
    devices = repo.local_model_devices(db) if fleet is None else fleet
    return split_fleet(got[0], got[1], (int(d) for d in devices))


def span_epochs(hours: float) -> float:
    """``hours`` of data time in epochs (a reading every ``WindowConfig.period_s``)."""
    return hours * 3600 / WindowConfig().period_s


def awaiting_calibration(
    db: Database, about_to_train: Sequence[str | int], min_span_h: float = 0.0
) -> list[int]:
    """Learning devices a new version would calibrate now: those ``about_to_train`` and
    those with a local model newer than the latest global version, that the promoted
    version has no threshold for. Empty when nothing is promoted (aggregation is due
    then anyway). A device that a new version could not calibrate either (too few
    held-out readings) is asked again only with its next local model, so this never
    makes every round aggregate."""
    got = promoted_calibrated(db)
    if got is None:
        return []
    fresh = repo.devices_with_models_since(db, repo.latest_global_created_at(db))
    wanted = {int(d) for d in about_to_train} | {int(d) for d in fresh}
    learning = sorted(wanted - got[1])
    if min_span_h <= 0 or not learning:
        return learning
    # a device whose held-out sample spans less than min_span_h stays learning in a new
    # version too: it waits for the regular aggregation (one round late at worst)
    need = span_epochs(min_span_h)
    spans = holdout_spans(db, learning)
    return [m for m in learning if spans.get(m, 0) >= need]
