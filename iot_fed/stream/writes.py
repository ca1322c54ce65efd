"""The MongoDB writes of Kafka ingestion: thin names over :mod:`iot_fed.store`.

One implementation lives in the store (:func:`iot_fed.store.insert_readings`, which
returns the indices of the readings actually inserted, and
:func:`iot_fed.store.insert_dead_letters`); :mod:`iot_fed.stream.ingest` calls them
through this module, which is also the seam tests patch to simulate failing writes.
Indexes come from :func:`iot_fed.store.init_database` only.
"""

from __future__ import annotations

from iot_fed.store import DEAD_LETTERS, SENSOR_READINGS, init_database
from iot_fed.store import insert_dead_letters as write_dead_letters
from iot_fed.store import insert_readings as write_readings

READINGS = SENSOR_READINGS
ensure_indexes = init_database
__all__ = ["DEAD_LETTERS", "READINGS", "ensure_indexes", "write_dead_letters", "write_readings"]
