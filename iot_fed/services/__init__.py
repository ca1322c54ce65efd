"""Start, stop and inspect the local Kafka broker and MongoDB-compatible server.

Nothing here imports Dagster. Entry points: :func:`iot_fed.services.manager.up`,
``down``, ``status``, ``install`` and the ``iot-fed services`` command.
"""

from iot_fed.services.process import ServiceError

__all__ = ["ServiceError"]
