"""A tiny sensor-like data generator for the fl tests (independent of iot_fed.data)."""

from __future__ import annotations

import numpy as np

SECONDS_PER_DAY = 86_400


def device_readings(n: int, device: int, seed: int = 0, step_s: int = 300) -> np.ndarray:
    """``(n, 6)`` float32 raw rows of one mote: temperature, humidity, light, voltage (diurnal,
    slow voltage decay) and the time of day as ``sin``/``cos``."""
    rng = np.random.default_rng([seed, device])
    t = np.arange(n) * step_s + int(rng.integers(0, SECONDS_PER_DAY))
    phase = 2 * np.pi * (t % SECONDS_PER_DAY) / SECONDS_PER_DAY
    offset = rng.normal(0, 1.5)
    temperature = 21 + offset + 4 * np.sin(phase - 2.0) + rng.normal(0, 0.3, n)
    humidity = 38 - 1.5 * (temperature - 21 - offset) + rng.normal(0, 0.8, n)
    light = np.clip(400 * np.sin(phase - 1.5), 0, None) + 20 + rng.normal(0, 15, n)
    voltage = 2.7 - 1e-6 * t + rng.normal(0, 0.005, n)
    columns = (temperature, humidity, light, voltage, np.sin(phase), np.cos(phase))
    return np.stack(columns, axis=1).astype(np.float32)
