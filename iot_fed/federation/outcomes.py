"""What a local training round reports per device."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DeviceOutcome:
    """One device's result: the stored version and its health, or why it was skipped."""

    device: str
    n_samples: int
    version: int | None = None
    loss_before: float | None = None
    loss_after: float | None = None
    threshold: float | None = None
    n_faulty: int = 0
    skipped: str | None = None
    offsets: dict[str, Any] = field(default_factory=dict)
    base_version: int | None = None
    unhealthy: str | None = None
    """Why the stored model fails ``local_model_health`` (None when healthy)."""
