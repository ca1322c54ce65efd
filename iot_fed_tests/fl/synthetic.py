"""A tiny sensor-like data generator for the fl tests (independent of iot_fed.data)."""

from __future__ import annotations

import numpy as np

from iot_fed.fl.features import features_from_columns

T0 = np.datetime64("2004-03-01T00:00:00", "s")


def device_columns(n: int, device: int, seed: int = 0, step_s: int = 300) -> tuple[np.ndarray, ...]:
    """Raw ``temperature, humidity, light, voltage, ts`` of one mote (diurnal, slow voltage)."""
    rng = np.random.default_rng([seed, device])
    t = np.arange(n) * step_s + int(rng.integers(0, 86_400))
    phase = 2 * np.pi * (t % 86_400) / 86_400
    offset = rng.normal(0, 1.5)
    temperature = 21 + offset + 4 * np.sin(phase - 2.0) + rng.normal(0, 0.3, n)
    humidity = 38 - 1.5 * (temperature - 21 - offset) + rng.normal(0, 0.8, n)
    light = np.clip(400 * np.sin(phase - 1.5), 0, None) + 20 + rng.normal(0, 15, n)
    voltage = 2.7 - 1e-6 * t + rng.normal(0, 0.005, n)
    return temperature, humidity, light, voltage, T0 + t


def device_readings(n: int, device: int, seed: int = 0, step_s: int = 300) -> np.ndarray:
    """``(n, 6)`` raw features of one mote (see :func:`device_columns`)."""
    return features_from_columns(*device_columns(n, device, seed, step_s))
