"""One federated round over the MongoDB store (no Dagster): local training, aggregation,
validation and promotion. The Dagster assets in :mod:`iot_fed.defs` are thin wrappers."""
