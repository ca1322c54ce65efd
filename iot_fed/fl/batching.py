"""The training engine's shapes and orders: padding buckets (few distinct shapes, so few
compilations) and deterministic per-device shuffles."""

from __future__ import annotations

import numpy as np

__all__ = ["bucket_size", "epoch_orders"]


def bucket_size(n: int, minimum: int = 1) -> int:
    """Smallest ``m * 2**k`` (``m`` in 4..7, or 1..3) that is ``>= max(n, minimum)``.

    I.e. ``n`` rounded up to 3 significant bits: 1..8, 10, 12, 14, 16, 20, 24, 28, 32, ...
    """
    n = max(int(n), int(minimum), 1)
    if n <= 8:
        return n
    shift = n.bit_length() - 3
    return -(-n >> shift) << shift


_M1, _M2, _GOLD = (
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
    np.uint64(0x9E3779B97F4A7C15),
)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 -> uint64, wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def epoch_orders(
    seed: int, device_ids: np.ndarray, n: np.ndarray, rows: int, epochs: int
) -> np.ndarray:
    """Row order per device and epoch, ``(devices, epochs, rows)`` int32.

    The first ``n[i]`` positions are a pseudo-random permutation of rows ``0..n[i]-1``
    (hash of seed, device id, epoch, row), the rest are the padding rows in order.
    """
    ids = np.asarray(device_ids, np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _mix(_mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ _GOLD) ^ ids)  # (D,)
        key = _mix(key[:, None] ^ (np.arange(epochs, dtype=np.uint64) + np.uint64(1)) * _GOLD)
        r = np.arange(rows, dtype=np.uint64)
        h = (_mix(key[:, :, None] ^ (r * _M2)) >> np.uint64(33)).astype(np.uint32)  # < 2**31
    invalid = (
        np.arange(rows, dtype=np.uint32)[None, None, :] >= np.asarray(n, np.uint32)[:, None, None]
    )
    h = np.where(invalid, np.uint32(1 << 31) + np.arange(rows, dtype=np.uint32), h)
    return np.argsort(h, axis=-1).astype(np.int32)
